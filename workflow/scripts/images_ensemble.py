"""Snakemake wrapper: rule images_ensemble (eae.core.ensemble.ensemble_stage of the image EAE)."""

from eae.core.ensemble import ensemble_stage
from eae.experiments.images.eae import IMAGES
from eae.support.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
ensemble_stage(
    IMAGES,
    dict(snakemake.params.cfg),  # noqa: F821
    snakemake.input.data,  # noqa: F821
    snakemake.input.model,  # noqa: F821
    snakemake.output[0],  # noqa: F821
)

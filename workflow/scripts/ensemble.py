"""Snakemake wrapper: rule ensemble (see eae.ensemble.ensemble_images_stage)."""

from eae.ensemble import ensemble_images_stage
from eae.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
ensemble_images_stage(
    dict(snakemake.params.cfg),  # noqa: F821
    snakemake.input.data,  # noqa: F821
    snakemake.input.model,  # noqa: F821
    snakemake.output[0],  # noqa: F821
)

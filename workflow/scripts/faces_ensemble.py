"""Snakemake wrapper: rule faces_ensemble (see eae.faces.ensemble_faces_stage)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.experiments.faces.eae import ensemble_faces_stage
from eae.support.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
ensemble_faces_stage(
    dict(snakemake.params.cfg),  # noqa: F821
    snakemake.input.data,  # noqa: F821
    snakemake.input.model,  # noqa: F821
    snakemake.output[0],  # noqa: F821
)

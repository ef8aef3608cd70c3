"""Snakemake wrapper: rule faces_train_eae (see eae.faces.train_faces_stage)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.experiments.faces.eae import train_faces_stage
from eae.support.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
train_faces_stage(
    dict(snakemake.params.cfg),  # noqa: F821
    snakemake.input.data,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
)

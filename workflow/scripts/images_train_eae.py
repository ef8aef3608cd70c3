"""Snakemake wrapper: rule images_train_eae (see eae.train.train_images_stage)."""

from eae.support.progress import setup_logging
from eae.experiments.images.eae import train_images_stage

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
train_images_stage(
    dict(snakemake.params.cfg),  # noqa: F821
    snakemake.input.data,  # noqa: F821
    snakemake.output[0],  # noqa: F821
    checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
)

"""Snakemake script: rule images_train_baseline -> results/{dataset}/{model}/ (see eae.baselines)."""

from eae.experiments.images.baselines import train_baseline_stage
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    train_baseline_stage(
        snakemake.wildcards.model,  # noqa: F821
        snakemake.input.data,  # noqa: F821
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
    )
except Exception:
    logger.exception(
        "train_baseline %s failed", snakemake.wildcards.model
    )  # noqa: F821
    raise

"""Snakemake script: rule rd_train_eae -> results/rd/eae/model/ (see eae.sindy)."""

from eae.support.progress import setup_logging
from eae.experiments.rd.eae import train_sindy_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    train_sindy_stage(
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.input.data,  # noqa: F821
        snakemake.output[0],  # noqa: F821
        checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
    )
except Exception:
    logger.exception("train_rd_eae failed")
    raise

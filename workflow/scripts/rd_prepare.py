"""Snakemake script: rule rd_prepare -> results/rd/dataset.zarr."""

from eae.support.progress import setup_logging
from eae.experiments.rd.data import prepare_rd_dataset

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    prepare_rd_dataset(
        snakemake.input.sim,  # noqa: F821
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
except Exception:
    logger.exception("prepare_rd failed")
    raise

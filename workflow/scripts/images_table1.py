"""Snakemake wrapper: rule images_table1 -> results/tables/table1.{csv,md} (see eae.metrics)."""

from eae.experiments.images.metrics import table1_stage
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    table1_stage(list(snakemake.input.csvs), snakemake.output.csv, snakemake.output.md)  # noqa: F821
except Exception:
    logger.exception("table1 failed")
    raise

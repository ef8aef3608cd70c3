"""Snakemake wrapper: rule sweep_table (see eae.sweep.sweep_table_stage)."""

from eae.support.progress import setup_logging
from eae.experiments.sweep.table import sweep_table_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    sweep_table_stage(
        list(snakemake.input.rows),  # noqa: F821
        dict(snakemake.params.cfg),  # noqa: F821
        {key: snakemake.output[key] for key in ("csv", "md", "figure", "json")},  # noqa: F821
    )
except Exception:
    logger.exception("sweep table failed")
    raise

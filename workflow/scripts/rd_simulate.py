"""Snakemake script: rule rd_simulate -> results/rd/simulation.zarr."""

from eae.support.progress import setup_logging
from eae.experiments.rd.simulate import simulate_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    simulate_stage(dict(snakemake.params.cfg), snakemake.output[0])  # noqa: F821
except Exception:
    logger.exception("rd_simulate failed")
    raise

"""Snakemake script: rule rd_coefficients -> results/rd/eae/coefficients.zarr (see eae.sindy)."""

from eae.support.progress import setup_logging
from eae.experiments.rd.eae import coefficients_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    coefficients_stage(
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.input.data,  # noqa: F821
        snakemake.input.model,  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
except Exception:
    logger.exception("rd_coefficients failed")
    raise

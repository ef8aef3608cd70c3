"""Snakemake script: rule datasets_prepare -> results/data/{dataset}.zarr."""

from eae.experiments.datasets.prepare import prepare_dataset
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    prepare_dataset(
        snakemake.wildcards.dataset,  # noqa: F821
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.output[0],  # noqa: F821
    )
except Exception:
    logger.exception("preparing dataset %s failed", snakemake.wildcards.dataset)  # noqa: F821
    raise

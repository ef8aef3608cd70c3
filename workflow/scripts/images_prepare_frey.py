"""Snakemake script: rule images_prepare_frey -> results/data/frey.zarr."""

from eae.experiments.images.data import prepare_frey
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    prepare_frey(
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        resources_dir=snakemake.params.resources,  # noqa: F821
    )
except Exception:
    logger.exception("prepare_frey failed")
    raise

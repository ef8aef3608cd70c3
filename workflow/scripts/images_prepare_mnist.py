"""Snakemake script: rule images_prepare_mnist -> results/data/mnist.zarr."""

from eae.experiments.images.data import prepare_mnist
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    prepare_mnist(
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        resources_dir=snakemake.params.resources,  # noqa: F821
    )
except Exception:
    logger.exception("prepare_mnist failed")
    raise

"""Snakemake script: download one raw data file, checksummed (rules images_download_*)."""

from eae.experiments.images.data import download
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    download(snakemake.params.url, snakemake.output[0], snakemake.params.sha256)  # noqa: F821
except Exception:
    logger.exception("download of %s failed", snakemake.params.url)  # noqa: F821
    raise

"""Snakemake wrapper: rule images_metrics -> results/{dataset}/metrics.csv (see eae.metrics)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.experiments.images.metrics import metrics_stage
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    metrics_stage(
        snakemake.wildcards.dataset,  # noqa: F821
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.output[0],  # noqa: F821
        paths={k: v for k, v in snakemake.input.items() if k != "code"},  # noqa: F821
    )
except Exception:
    logger.exception("metrics %s failed", snakemake.wildcards.dataset)  # noqa: F821
    raise

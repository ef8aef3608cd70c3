"""Snakemake wrapper: rules images_figures and images_interpolation (see eae.figures).

The rule's named outputs (densities, samples, interpolation) say which figures to draw."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.experiments.images.figures import figures_stage
from eae.support.progress import setup_logging

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    figures_stage(
        snakemake.wildcards.dataset,  # noqa: F821
        dict(snakemake.params.cfg),  # noqa: F821
        dict(snakemake.output.items()),  # noqa: F821
        paths={k: v for k, v in snakemake.input.items() if k != "code"},  # noqa: F821
    )
except Exception:
    logger.exception("figures %s failed", snakemake.wildcards.dataset)  # noqa: F821
    raise

"""Snakemake wrapper: rule sweep_point (see eae.sweep.sweep_point_stage)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.support.progress import setup_logging
from eae.experiments.sweep.points import OUTPUT_KEYS, sweep_point_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
params = dict(snakemake.params.cfg)  # noqa: F821
try:
    sweep_point_stage(
        params,
        {k: v for k, v in snakemake.input.items() if k != "code"},  # noqa: F821
        outputs={key: snakemake.output[key] for key in OUTPUT_KEYS},  # noqa: F821
        checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
    )
except Exception:
    logger.exception("sweep point %s failed", params["point"])
    raise

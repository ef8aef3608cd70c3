"""Snakemake wrapper: rule sweep_point (see eae.sweep.sweep_point_stage)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.support.progress import setup_logging
from eae.experiments.sweep.points import experiment_inputs, sweep_point_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
params = dict(snakemake.params.cfg)  # noqa: F821
names = experiment_inputs(params["experiment"])
try:
    sweep_point_stage(
        params,
        {name: snakemake.input[name] for name in names},  # noqa: F821
        outputs={
            key: snakemake.output[key]  # noqa: F821
            for key in ("model", "ensemble", "row", "convergence")
        },
        checkpoint_dir=snakemake.params.checkpoint_dir,  # noqa: F821
    )
except Exception:
    logger.exception("sweep point %s failed", params["point"])
    raise

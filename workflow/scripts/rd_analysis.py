"""Snakemake script: rule rd_analysis -> Table 4, Figs 4 / 1d / 1e–f, frequency.csv
(see eae.rd_analysis)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.support.progress import setup_logging
from eae.experiments.rd.analysis import rd_analysis_stage

logger = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
try:
    rd_analysis_stage(
        dict(snakemake.params.cfg),  # noqa: F821
        snakemake.input.coefficients,  # noqa: F821
        snakemake.input.data,  # noqa: F821
        dict(snakemake.output.items()),  # noqa: F821
    )
except Exception:
    logger.exception("rd_analysis failed")
    raise

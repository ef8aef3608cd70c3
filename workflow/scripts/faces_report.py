"""Snakemake wrapper: rule faces_report (see eae.faces.faces_report_stage)."""

import eae.support.runtime  # noqa: F401 (TensorFlow stage: loaded quietly first, so the log names its device)
from eae.experiments.faces.report import faces_report_stage
from eae.support.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
faces_report_stage(
    dict(snakemake.params.cfg),  # noqa: F821
    snakemake.input.data,  # noqa: F821
    list(zip(snakemake.params.temperatures, snakemake.input.models,  # noqa: F821
             snakemake.input.ensembles)),  # noqa: F821
    snakemake.output.figure,  # noqa: F821
    snakemake.output.table,  # noqa: F821
)

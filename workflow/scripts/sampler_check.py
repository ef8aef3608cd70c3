"""Snakemake wrapper: sampler self-check (see eae.validation)."""

from eae.support.progress import setup_logging
from eae.experiments.sampler_check import validation_stage

setup_logging(snakemake.log[0])
validation_stage(
    dict(snakemake.params.cfg), snakemake.output.csv, snakemake.output.figure
)

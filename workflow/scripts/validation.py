"""Snakemake wrapper: sampler self-check (see eae.validation)."""

from eae.progress import setup_logging
from eae.validation import validation_stage

setup_logging(snakemake.log[0])
validation_stage(
    dict(snakemake.params.cfg), snakemake.output.csv, snakemake.output.figure
)

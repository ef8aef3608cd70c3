"""Snakemake wrapper: rule faces_prepare (see eae.faces.prepare_faces_stage)."""

from eae.experiments.faces.data import prepare_faces_stage
from eae.support.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
prepare_faces_stage(dict(snakemake.params.cfg), snakemake.output[0])  # noqa: F821

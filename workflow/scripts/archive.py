"""Snakemake wrapper: archive results/ with its manifest (see eae.archive)."""

import os
from pathlib import Path

from eae.archive import DEFAULT_EXCLUDE, build_archive
from eae.progress import setup_logging

log = setup_logging(snakemake.log[0])
results = Path(snakemake.output[0]).parents[1]  # results/archive/<name>.tar.gz -> results
# params.exclude holds workflow paths (results/logs/...); build_archive wants them
# relative to the results directory
exclude = tuple(DEFAULT_EXCLUDE) + tuple(
    os.path.relpath(path, results) for path in snakemake.params.exclude
)
manifest = build_archive(results, snakemake.output[0], dict(snakemake.params.cfg), exclude=exclude)
log.info("archived %d files (%d bytes) into %s", manifest["n_files"], manifest["total_bytes"],
         snakemake.output[0])

"""Snakemake wrapper: archive results/ as an RO-Crate with the workflow (see eae.archive)."""

import os
from pathlib import Path

from eae.support.archive import DEFAULT_EXCLUDE, build_archive
from eae.support.progress import setup_logging

log = setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
results = Path(snakemake.output[0]).parents[1]  # noqa: F821 results/archive/<name> -> results
# params.exclude holds workflow paths (results/logs/...); build_archive wants them
# relative to the results directory
exclude = tuple(DEFAULT_EXCLUDE) + tuple(
    os.path.relpath(path, results) for path in snakemake.params.exclude  # noqa: F821
)
summary = build_archive(
    results,
    snakemake.output[0],  # noqa: F821
    dict(snakemake.params.cfg),  # noqa: F821
    exclude=exclude,
    workflow_dir=snakemake.params.workflow_dir,  # noqa: F821
    rule_outputs=snakemake.params.rules,  # noqa: F821
)
log.info("archived %d files (%d bytes, %d jobs) into %s", summary["n_files"],
         summary["total_bytes"], summary["n_jobs"], snakemake.output[0])  # noqa: F821

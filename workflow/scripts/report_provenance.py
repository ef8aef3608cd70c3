"""Snakemake wrapper: collect the provenance record of every result into one JSON file."""

import json

from eae.support.progress import setup_logging
from eae.support.provenance import collect_records

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
records = collect_records(snakemake.input.results)  # noqa: F821
with open(snakemake.output[0], "w") as fh:  # noqa: F821
    json.dump(records, fh, indent=1, sort_keys=True)

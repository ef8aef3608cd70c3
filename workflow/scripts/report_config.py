"""Snakemake wrapper: write the validated config (defaults filled in) as YAML."""

import yaml

from eae.support.progress import setup_logging

setup_logging(snakemake.log[0])  # noqa: F821 (injected by Snakemake)
with open(snakemake.output[0], "w") as fh:  # noqa: F821
    yaml.safe_dump(dict(snakemake.params.cfg), fh, sort_keys=False)  # noqa: F821

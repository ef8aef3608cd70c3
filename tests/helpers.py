"""Helpers shared by the tests (import as ``from helpers import …``)."""

from __future__ import annotations

import copy
from typing import Any


def config_section(path: str, value: Any) -> Any:
    """``value`` as the config section ``path`` (e.g. ``"rd.eae"``), checked against the
    workflow's schema and filled with its defaults — what a stage receives from the
    workflow. The schemas are the only home of defaults, so tests that call stages
    directly build their configs with this."""
    import jsonschema

    from eae.config import fill_defaults, load_schema

    schema = load_schema()
    for key in path.split("."):
        schema = schema["properties"][key]
    filled = fill_defaults(copy.deepcopy(value), schema)
    jsonschema.Draft202012Validator(schema).validate(filled)
    return filled


def run_snakemake(workdir, *args, configfiles=(), snakefile=None, check: bool = True,
                  timeout: float | None = None):
    """Run the workflow (``python -m snakemake``) in ``workdir`` with the repository's
    Snakefile (or ``snakefile``), the ``configfiles`` layered in order and ``args``;
    returns the CompletedProcess. With ``check`` a non-zero exit fails the test with the
    tail of the output."""
    import subprocess
    import sys
    from pathlib import Path

    snakefile = Path(snakefile) if snakefile else Path(__file__).resolve().parents[1] / "Snakefile"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir)]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    cmd += [str(a) for a in args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-4000:] + result.stderr[-6000:])
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """{rule: count} from the 'Job stats' table of a Snakemake (dry) run's output."""
    jobs: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            in_table, jobs = True, {}
            continue
        parts = line.split()
        if in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                in_table = False
            else:
                jobs[parts[0]] = int(parts[1])
    return jobs

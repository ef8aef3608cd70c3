"""One archive of the results as an RO-Crate (Workflow Run Crate / Provenance Run Crate
profiles 0.5), and a check of such an archive against the sha256s in its metadata.

Layout of ``eae-results.tar.gz`` (paths inside the tarball = the crate's root)::

    results/...               every file below the results directory (checkpoints and
                              the archive folder excluded); provenance sidecars under
                              results/provenance/ and Zarr attrs travel with them
    config.resolved.yaml      the validated config with every default filled in
    environment.lock.txt      ``pip freeze`` of the interpreter that built the archive
    Snakefile, workflow/...,  the workflow: Snakefile (the crate's mainEntity, a
    config/*.yaml             ComputationalWorkflow), rules, scripts, schemas, report
                              captions and config files
    ro-crate-metadata.json    the RO-Crate metadata, last member

Every file is a ``File`` entity of the crate with its ``sha256`` and ``contentSize``:
the metadata is the archive's only manifest, and :func:`verify_archive` checks against
it. The provenance records the stages wrote (see :mod:`eae.support.provenance`) become one
``CreateAction`` per job: its ``instrument`` is the rule that ran (a tool the Snakefile
lists under ``hasPart``, with a ``HowToStep`` under ``step``), its ``object`` the inputs
and the config values of the stage (``PropertyValue``), its ``result`` the outputs, with
start and end time. A ``ControlAction`` per job links the step to it, and an
``OrganizeAction`` (the Snakemake run) and a ``CreateAction`` of the workflow tie the
run together, as the Provenance Run Crate profile asks.

The metadata is the last member because files are hashed while they stream into the
tarball: every file is read exactly once and large results never sit in memory.
The pieces live in four modules, all re-exported here: the layout, the selection and
the hashed streaming of files (:mod:`eae.support.archive_contents`), the reading of
provenance records and rules (:mod:`eae.support.archive_records`), the crate's metadata
(:mod:`eae.support.archive_crate`) and the check (:mod:`eae.support.archive_verify`).
This module builds the archive from them.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import platform
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any, Iterable, Mapping

import yaml

from eae.support.archive_contents import (  # noqa: F401  (re-exported)
    _RECORD_MAX_BYTES, CONFIG_NAME, DEFAULT_EXCLUDE, LOCK_NAME, METADATA_NAME, RESULTS_PREFIX,
    WORKFLOW_FILES, ArchiveError, _add_bytes, _add_file, _as_list, _HashingReader, _is_excluded,
    _may_hold_record, _Member, _tarinfo, collect_files, workflow_files)
from eae.support.archive_crate import (  # noqa: F401  (re-exported)
    _MEDIA_TYPES, BUILD_INSTRUCTIONS_TERM, PIP_REQUIREMENTS_FORMAT, PROFILES, WFRUN_CONTEXT,
    _crate_metadata, _CrateBuilder, _git_version, _installed_version)
from eae.support.archive_records import (  # noqa: F401  (re-exported)
    _RULE, _SCRIPT, _data_type, _flatten, _Job, _job_description, _jobs, _parse_time,
    _plain_value, _record_of, _run_times, log, workflow_rules)
from eae.support.archive_verify import (  # noqa: F401  (re-exported)
    _CHUNK, ArchiveReport, _digest, _scan_directory, _scan_tarball, expected_files,
    verify_archive)
from eae.support.provenance import PACKAGE_ROOT


# ------------------------------------------------------------------ environment, config


def environment_lock() -> str:
    """The exact installed environment, one ``name==version`` line per package.

    ``python -m pip freeze`` of this interpreter; where pip is absent, the same list from
    importlib.metadata. A header comment names the Python and the platform."""
    header = (f"# environment of the eae results archive: Python {platform.python_version()} "
              f"({sys.executable}) on {platform.platform()}\n")
    try:
        result = subprocess.run([sys.executable, "-m", "pip", "freeze", "--all"],
                                capture_output=True, text=True, timeout=300)
        if result.returncode == 0 and result.stdout.strip():
            return header + "# source: pip freeze --all\n" + result.stdout
    except (OSError, subprocess.TimeoutExpired):
        pass
    lines = sorted({f"{dist.metadata['Name']}=={dist.version}"
                    for dist in importlib.metadata.distributions()
                    if dist.metadata["Name"]}, key=str.lower)
    return header + "# source: importlib.metadata (pip not available)\n" + "\n".join(lines) + "\n"


def resolved_config_yaml(config: Mapping[str, Any] | None) -> str:
    """The config as YAML, keys in their given order (JSON round trip: plain types only)."""
    plain = json.loads(json.dumps(dict(config or {}), default=str))
    return yaml.safe_dump(plain, sort_keys=False, default_flow_style=False)


# -------------------------------------------------------------------------- building


def _stream_members(tar: tarfile.TarFile, root: Path, files: list[Path], workflow_dir: Path,
                    config: Mapping[str, Any] | None, environment: str | None) -> list[_Member]:
    """Write the results, the resolved config, the environment lock and the workflow
    into the tarball, in this order; their members (bytes kept for records and the
    workflow's text)."""
    members = []
    for path in files:
        arcname = f"{RESULTS_PREFIX}/{path.relative_to(root).as_posix()}"
        members.append(_add_file(tar, path, arcname, keep=_may_hold_record(arcname)))
    members.append(_add_bytes(tar, resolved_config_yaml(config).encode(), CONFIG_NAME))
    lock = environment if environment is not None else environment_lock()
    members.append(_add_bytes(tar, lock.encode(), LOCK_NAME))
    for rel in workflow_files(workflow_dir):
        members.append(_add_file(tar, workflow_dir / rel, rel.as_posix(), keep=True))
    return members


def build_archive(results_dir: str | os.PathLike, out_path: str | os.PathLike,
                  config: Mapping[str, Any] | None = None,
                  exclude: Iterable[str] = DEFAULT_EXCLUDE,
                  environment: str | None = None,
                  workflow_dir: str | os.PathLike | None = None,
                  rule_outputs: Mapping[str, Iterable[str]] | None = None) -> dict[str, Any]:
    """Write ``out_path`` (.tar.gz), an RO-Crate of every file below ``results_dir``
    (under ``results/``), ``config.resolved.yaml``, ``environment.lock.txt``, the
    workflow and, last, ``ro-crate-metadata.json``; return a summary
    (``files``: {path: {"sha256", "size"}}, ``n_files``, ``total_bytes``, ``n_jobs``).

    ``exclude``: paths relative to ``results_dir`` left out (default: checkpoints/ and
    archive/); the tarball itself is always left out. ``environment``: the lock text
    (default: :func:`environment_lock`). ``workflow_dir``: the folder of the Snakefile
    (default: the checkout that holds the ``eae`` package). ``rule_outputs``: {rule:
    regular expressions of its output paths}, Snakemake's own, so each job is tied to
    the rule that ran it (without it: by the stage's name). Atomic: the tarball is
    written to a temporary name beside ``out_path`` and renamed, so a failure leaves no
    partial archive.
    """
    root = Path(results_dir)
    out = Path(out_path)
    wf_dir = Path(workflow_dir) if workflow_dir is not None else PACKAGE_ROOT.parent
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    files = collect_files(root, exclude, skip=(out, tmp))
    workflow_files(wf_dir)  # fail before writing anything when the workflow is missing
    out.parent.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            members = _stream_members(tar, root, files, wf_dir, config, environment)
            metadata, n_jobs = _crate_metadata(members, root, wf_dir, rule_outputs)
            _add_bytes(tar, metadata, METADATA_NAME)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    entries = {m.name: {"sha256": m.sha256, "size": m.size} for m in members}
    return {"files": entries, "n_files": len(entries), "n_jobs": n_jobs,
            "total_bytes": sum(m.size for m in members)}

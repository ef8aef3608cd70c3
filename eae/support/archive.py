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
"""

from __future__ import annotations

import bisect
import datetime as _dt
import functools
import hashlib
import importlib.metadata
import io
import json
import logging
import math
import os
import platform
import posixpath
import re
import subprocess
import sys
import tarfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator, Mapping
from urllib.parse import quote, unquote

import yaml
from rocrate.model import ComputerLanguage, ContextEntity, SoftwareApplication
from rocrate.rocrate import ROCrate

from eae.support.provenance import PACKAGE_ROOT, git_state, now_iso

METADATA_NAME = "ro-crate-metadata.json"
CONFIG_NAME = "config.resolved.yaml"
LOCK_NAME = "environment.lock.txt"
RESULTS_PREFIX = "results"
# The workflow as it is checked in, relative to its root (the folder of the Snakefile);
# the config schemas live in workflow/schemas/ or, installable with eae, in eae/schemas/.
WORKFLOW_FILES = ("Snakefile", "workflow/rules/*.smk", "workflow/scripts/*.py",
                  "workflow/schemas/*", "eae/schemas/*.yaml", "workflow/report/*",
                  "config/*.yaml")
# Relative to the results directory. Checkpoints are scratch state of training jobs
# (large, and not results); archive/ holds the tarball itself.
DEFAULT_EXCLUDE = ("checkpoints", "archive")
PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": ("Process Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/workflow/0.5": ("Workflow Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/provenance/0.5": ("Provenance Run Crate", "0.5"),
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": ("Workflow RO-Crate", "1.0"),
}
# Defines ``sha256`` (and the other workflow-run terms) for the crate's JSON-LD.
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
# Not in the RO-Crate 1.1 context; the Provenance Run Crate profile names this term.
BUILD_INSTRUCTIONS_TERM = "https://codemeta.github.io/terms/buildInstructions"
PIP_REQUIREMENTS_FORMAT = "https://pip.pypa.io/en/stable/reference/requirements-file-format/"
_CHUNK = 1 << 20
# Provenance records are small JSON files; a larger candidate is archived but not parsed.
_RECORD_MAX_BYTES = 64 << 20
_MEDIA_TYPES = {".csv": "text/csv", ".tsv": "text/tab-separated-values", ".md": "text/markdown",
                ".png": "image/png", ".json": "application/json", ".yaml": "application/yaml",
                ".yml": "application/yaml", ".txt": "text/plain", ".log": "text/plain",
                ".py": "text/x-python", ".rst": "text/x-rst"}

log = logging.getLogger("eae.support.archive")


class ArchiveError(RuntimeError):
    """The results cannot be archived (missing directory, unreadable or broken file)."""


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


# -------------------------------------------------------------------- what goes in


def _is_excluded(rel: PurePosixPath, exclude: Iterable[str]) -> bool:
    """True when ``rel`` is one of the excluded paths or lies below one of them."""
    for item in exclude:
        parts = PurePosixPath(item.strip("/")).parts
        if parts and rel.parts[: len(parts)] == parts:
            return True
    return False


def collect_files(results_dir: str | os.PathLike, exclude: Iterable[str] = DEFAULT_EXCLUDE,
                  skip: Iterable[str | os.PathLike] = ()) -> list[Path]:
    """Sorted files below ``results_dir``, without the excluded subpaths and the paths in
    ``skip`` (the tarball being written). Symlinks to files count as files; a broken
    symlink raises :class:`ArchiveError` naming it."""
    root = Path(results_dir)
    if not root.is_dir():
        raise ArchiveError(f"results directory not found: {root}")
    exclude = tuple(exclude)
    skip_set = {Path(p).resolve() for p in skip}
    skip_names = {p.name for p in skip_set}  # resolve() only files that may be skipped
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        # prune excluded folders so their (possibly huge) trees are never walked
        dirnames[:] = sorted(d for d in dirnames if not _is_excluded(rel_dir / d, exclude))
        for name in sorted(filenames):
            path = here / name
            if (_is_excluded(rel_dir / name, exclude)
                    or name in skip_names and path.resolve() in skip_set):
                continue
            if not path.is_file():
                raise ArchiveError(f"cannot archive {path}: not a regular file (broken symlink?)")
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


def workflow_files(workflow_dir: str | os.PathLike) -> list[Path]:
    """The workflow's files below ``workflow_dir`` (see :data:`WORKFLOW_FILES`), relative
    to it and sorted, the Snakefile first. Raises :class:`ArchiveError` without a
    Snakefile: a Workflow Run Crate must hold the workflow that ran."""
    root = Path(workflow_dir)
    if not (root / "Snakefile").is_file():
        raise ArchiveError(f"no Snakefile in {root}: the archive describes the workflow "
                           "run, so it needs the workflow (pass its folder)")
    found: dict[Path, Path] = {}
    for pattern in WORKFLOW_FILES:
        for path in sorted(root.glob(pattern)):
            # one copy of a file seen through a symlink (workflow/schemas -> eae/schemas),
            # under the first pattern's name
            if path.is_file():
                found.setdefault(path.resolve(), path.relative_to(root))
    return sorted(found.values(), key=lambda p: (p.as_posix() != "Snakefile", p.as_posix()))


# ------------------------------------------------------------------ streaming the tar


@dataclass
class _Member:
    """A file written into the archive: its name there, sha256 and size, and its bytes
    when it may hold a provenance record or the workflow's text (small files only)."""

    name: str
    sha256: str
    size: int
    data: bytes | None = None


class _HashingReader(io.RawIOBase):
    """File wrapper that feeds every byte tarfile reads into a sha256 (and, with
    ``keep``, into a buffer, so small files are parsed without a second read)."""

    def __init__(self, fh, keep: bool = False):
        self._fh = fh
        self.digest = hashlib.sha256()
        self.size = 0
        self.kept = bytearray() if keep else None

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.digest.update(data)
        self.size += len(data)
        if self.kept is not None:
            self.kept += data
        return data


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    # Owner and mode are normalised: the archive records content, not who ran the job.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str, keep: bool = False) -> _Member:
    """Stream ``path`` into the tarball as ``arcname``, hashing it on the way."""
    stat = path.stat()
    with open(path, "rb") as fh:
        reader = _HashingReader(fh, keep=keep and stat.st_size <= _RECORD_MAX_BYTES)
        tar.addfile(_tarinfo(arcname, stat.st_size, stat.st_mtime), reader)
    # tarfile stops at the size it was told: a file that grew while it was read would
    # be cut silently, and one that shrank raises inside tarfile; both are bad input.
    if reader.size != stat.st_size or os.stat(path).st_size != stat.st_size:
        raise ArchiveError(f"{path} changed size while it was archived; is a job still writing it?")
    data = bytes(reader.kept) if reader.kept is not None else None
    return _Member(arcname, reader.digest.hexdigest(), stat.st_size, data)


def _add_bytes(tar: tarfile.TarFile, data: bytes, arcname: str) -> _Member:
    tar.addfile(_tarinfo(arcname, len(data), time.time()), io.BytesIO(data))
    return _Member(arcname, hashlib.sha256(data).hexdigest(), len(data), data)


def _may_hold_record(arcname: str) -> bool:
    """Sidecars under results/provenance/, Zarr metadata and model-folder records."""
    name = posixpath.basename(arcname)
    return (arcname.startswith(f"{RESULTS_PREFIX}/provenance/") and name.endswith(".json")
            or name in ("zarr.json", "provenance.json"))


# ---------------------------------------------------------------- provenance records


@dataclass
class _Job:
    """One job of the workflow as its provenance record tells it: the record, the crate
    paths of its outputs and the archived files that hold the record."""

    record: dict[str, Any]
    outputs: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)

    @functools.cached_property
    def key(self) -> str:
        """Same record (``output`` aside) = same job: record_outputs copies one record
        into a sidecar per output, and only ``output`` differs between the copies."""
        rest = {k: v for k, v in self.record.items() if k != "output"}
        return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def _record_of(member: _Member) -> tuple[str, dict[str, Any]] | None:
    """(crate path of the output it describes, record) for a file holding a provenance
    record, else None. Unreadable JSON is logged and skipped: the file is still
    archived with its sha256, it just yields no job."""
    try:
        doc = json.loads(member.data)
    except (ValueError, UnicodeDecodeError) as err:
        log.warning("%s: not a readable provenance record (%s); no job recorded for it",
                    member.name, err)
        return None
    folder, name = posixpath.split(member.name)
    if name == "zarr.json":
        from eae.support.io import PROVENANCE_ATTR  # xarray comes with it: only for Zarr stores

        raw = (doc.get("attributes") or {}).get(PROVENANCE_ATTR) if isinstance(doc, dict) else None
        try:
            record = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            record = None
        output = folder
    elif member.name.startswith(f"{RESULTS_PREFIX}/provenance/"):
        # results/provenance/<rel>.json describes results/<rel> (eae.provenance.sidecar_path)
        rel = member.name[len(f"{RESULTS_PREFIX}/provenance/"):-len(".json")]
        record, output = doc, f"{RESULTS_PREFIX}/{rel}"
    else:  # provenance.json inside an output folder (a trained model)
        record, output = doc, folder
    if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
        return None  # e.g. report/provenance.json, a collection of records, or empty attrs
    return output, record


def _jobs(members: Iterable[_Member]) -> list[_Job]:
    """The jobs behind the archived results, one per distinct provenance record."""
    jobs: dict[str, _Job] = {}
    for member in members:
        if member.data is None or not _may_hold_record(member.name):
            continue
        found = _record_of(member)
        if found is None:
            continue
        output, record = found
        job = _Job(record)
        job = jobs.setdefault(job.key, job)
        job.outputs.append(output)
        job.holders.append(member.name)
    return list(jobs.values())


# ------------------------------------------------------------------------ rules


_RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
_SCRIPT = re.compile(r"^\s+script:\s*\n?\s*[rf]?[\"']([^\"']+)[\"']", re.M)


def workflow_rules(sources: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """{rule: (file that defines it, script it runs or None)} from the text of the
    Snakefile and the rule files (``sources``: {path in the crate: text}). Read from the
    text because the archive may be built outside Snakemake (``eae archive build``)."""
    rules = {}
    for path, text in sources.items():
        if not (path == "Snakefile" or path.endswith(".smk")):
            continue
        heads = list(_RULE.finditer(text))
        for i, head in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            script = _SCRIPT.search(text, head.end(), end)
            rel = (posixpath.normpath(posixpath.join(posixpath.dirname(path), script.group(1)))
                   if script else None)
            rules[head.group(1)] = (path, rel)
    return rules


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested config."""
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _plain_value(value: Any) -> Any:
    """A PropertyValue ``value``: scalars as they are, anything else as JSON text (and
    NaN or infinities as text, which JSON has no number for)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _data_type(value: Any) -> str:
    """schema.org DataType of a config value, the FormalParameter's ``additionalType``."""
    for kind, name in ((bool, "Boolean"), (int, "Integer"), (float, "Float"), (str, "Text")):
        if isinstance(value, kind):
            return name
    return "Text"  # lists and nulls travel as JSON text


def _parse_time(value: Any) -> _dt.datetime | None:
    try:
        parsed = _dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


# ------------------------------------------------------------------------ the crate


class _CrateBuilder:
    """Builds the crate's metadata with the ``rocrate`` package from the archived
    members; nothing is copied (the tarball already holds the files)."""

    def __init__(self, results_root: Path, rule_outputs: Mapping[str, Iterable[str]] | None):
        self.crate = ROCrate(version="1.1")  # the version the 0.5 profiles build on
        self.results_root = results_root
        self.patterns = {rule: [re.compile(p) for p in pats]
                         for rule, pats in (rule_outputs or {}).items()}
        self.files: dict[str, Any] = {}
        self.datasets: dict[str, Any] = {}
        self.in_datasets: set[str] = set()  # files that are part of a Dataset entity
        self._sorted_names: list[str] | None = None  # self.files' keys, for prefix lookups
        self.tools: dict[str, Any] = {}
        self.steps: dict[str, Any] = {}
        self.rules: dict[str, tuple[str, str | None]] = {}
        self.workflow = None
        self.snakemake_version: str | None = None

    # --- data entities

    def add_file(self, member: _Member, properties: Mapping[str, Any] | None = None,
                 workflow: bool = False):
        """A File entity for an archived member, with the sha256 the archive is checked
        against (or the main workflow, with ``workflow``)."""
        props = {"sha256": member.sha256, "contentSize": str(member.size)}
        media = _MEDIA_TYPES.get(PurePosixPath(member.name).suffix)
        if media:
            props["encodingFormat"] = media
        props.update(properties or {})
        if workflow:
            entity = self.crate.add_workflow(dest_path=member.name, main=True, lang="snakemake",
                                             lang_version=self.snakemake_version,
                                             properties=props)
        else:
            entity = self.crate.add_file(dest_path=member.name, properties=props)
        self.files[member.name] = entity
        self._sorted_names = None
        return entity

    def entity_for(self, path: str):
        """The File for an archived path, the Dataset for an archived folder (a Zarr
        store, a model), or None when nothing of it is in the archive."""
        path = path.rstrip("/")
        if path in self.files:
            return self.files[path]
        if path in self.datasets:
            return self.datasets[path]
        if self._sorted_names is None:
            self._sorted_names = sorted(self.files)
        names = self._sorted_names
        # the names below path/ sort between "path/" and "path0" ("0" follows "/" in ASCII)
        inside = names[bisect.bisect_left(names, path + "/"):bisect.bisect_left(names, path + "0")]
        if not inside:
            return None
        dataset = self.crate.add_dataset(dest_path=path, properties={
            "hasPart": [self.files[name] for name in inside]})
        self.datasets[path] = dataset
        self.in_datasets.update(inside)
        return dataset

    def crate_path(self, recorded: str) -> str | None:
        """Where an input path of a record lies in the crate: ``results/...`` as the
        workflow names it (relative to its working directory), or an absolute path
        inside the results directory; None for anything else."""
        path = PurePosixPath(recorded)
        if path.is_absolute():
            try:
                rel = Path(recorded).resolve().relative_to(self.results_root.resolve())
            except ValueError:
                return None
            return f"{RESULTS_PREFIX}/{rel.as_posix()}"
        norm = posixpath.normpath(recorded)
        return norm if norm.split("/")[0] == RESULTS_PREFIX else None

    def external_input(self, recorded: str, digest: Any):
        """A contextual entity for an input outside the archive (raw data, resources)."""
        ident = "#input-" + hashlib.sha256(recorded.encode()).hexdigest()[:16]
        if ident not in self.crate:
            self.crate.add(ContextEntity(self.crate, ident, properties={
                "@type": "CreativeWork", "name": recorded, "alternateName": recorded,
                "sha256": str(digest),
                "description": "input outside the archive; sha256 as the stage recorded it "
                               "(of the file, or for a folder of its sorted files, see "
                               "eae.provenance.sha256_path)"}))
        return self.crate.get(ident)

    # --- the workflow and its rules

    def add_workflow(self, members: list[_Member], jobs: list[_Job], workflow_dir: Path):
        """The Snakefile as main entity (ComputationalWorkflow and HowTo, its version the
        git commit of ``workflow_dir``), the rule files and scripts as source code, and a
        tool and a HowToStep per rule."""
        versions = Counter((j.record.get("packages") or {}).get("snakemake") for j in jobs)
        versions.pop(None, None)
        versions.pop("not installed", None)
        self.snakemake_version = (versions.most_common(1)[0][0] if versions
                                   else _installed_version("snakemake"))
        python = self._python_language()
        for member in members:
            if member.name == "Snakefile":
                self.workflow = self.add_file(member, workflow=True, properties={
                    "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
                    "name": "Entropic Autoencoders workflow", **_git_version(workflow_dir)})
            elif member.name.endswith(".smk"):
                self.add_file(member, {"@type": ["File", "SoftwareSourceCode"],
                                       "programmingLanguage": self.workflow["programmingLanguage"]})
            elif member.name.endswith(".py"):
                self.add_file(member, {"@type": ["File", "SoftwareSourceCode"],
                                       "programmingLanguage": python})
            else:
                self.add_file(member)
        sources = {m.name: m.data.decode("utf-8", "replace") for m in members if m.data}
        self.rules = workflow_rules(sources)
        for rule in self.rules:
            self.tool(rule)

    def _python_language(self):
        return self.crate.add(ComputerLanguage(self.crate, "#python", properties={
            "name": "Python", "url": {"@id": "https://www.python.org/"},
            "version": platform.python_version()}))

    def tool(self, name: str, is_rule: bool = True):
        """The tool (SoftwareApplication) for a rule, or for a stage that no rule claims,
        with its HowToStep in the workflow; made once."""
        if name in self.tools:
            return self.tools[name]
        where, script = self.rules.get(name, (None, None)) if is_rule else (None, None)
        ident = f"{where}#{name}" if where else (f"#rule-{name}" if is_rule else f"#stage-{name}")
        props = {"name": f"rule {name}" if is_rule else f"stage {name}",
                 "description": (f"Snakemake rule {name}" + (f" in {where}" if where else "")
                                 if is_rule else f"eae stage {name} (no rule of the workflow "
                                 "claims its outputs)")}
        if script and script in self.files:
            props["mainEntity"] = self.files[script]  # the wrapped Python script
        tool = self.crate.add(SoftwareApplication(self.crate, quote(ident, safe="#/._-"), props))
        step = self.crate.add(ContextEntity(self.crate, f"#step-{quote(name)}", properties={
            "@type": "HowToStep", "name": name, "workExample": tool}))
        self.workflow.append_to("hasPart", tool)
        self.workflow.append_to("step", step)
        self.tools[name], self.steps[name] = tool, step
        return tool

    def rule_for(self, stage: str, outputs: list[str]) -> str | None:
        """The rule that ran a job: the one whose output patterns match its outputs
        (Snakemake's own, when the archive rule passes them), else the rule named as
        the stage or as its prefix (``metrics`` for ``metrics_mnist``); None if none."""
        matching = sorted({rule for rule, pats in self.patterns.items()
                           for pat in pats for out in outputs if pat.match(out)})
        if len(matching) == 1:
            return matching[0]
        by_name = [r for r in (matching or self.rules)
                   if stage == r or stage.startswith(r + "_")]
        if by_name:
            return max(by_name, key=len)
        return matching[0] if matching else None

    # --- the jobs and the run

    def add_job(self, job: _Job):
        """The CreateAction of one job and the ControlAction of its step; None when
        none of its outputs is in the archive."""
        results = [e for e in (self.entity_for(o) for o in job.outputs) if e is not None]
        if not results:
            return None
        record, stage = job.record, job.record["stage"]
        rule = self.rule_for(stage, job.outputs)
        name = rule or stage
        tool = self.tool(name, is_rule=rule is not None)
        ident = f"#job-{quote(stage)}-{job.key[:12]}"
        objects = self._inputs(record) + self._parameters(ident, tool, record)
        props = {"@type": "CreateAction", "name": f"Run of {tool['name']} (stage {stage})",
                 "description": _job_description(record),
                 "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"}}
        for key, prop in (("started", "startTime"), ("finished", "endTime")):
            if record.get(key):
                props[prop] = str(record[key])
        action = self.crate.add_action(tool, ident, object=objects, result=results,
                                       properties=props)
        for holder in job.holders:  # the files holding the record are traces of the job
            self.files[holder]["about"] = action
        control = self.crate.add(ContextEntity(
            self.crate, f"#control-{job.key[:12]}", properties={
                "@type": "ControlAction", "name": f"orchestrate {tool['name']}",
                "instrument": self.steps[name], "object": action}))
        return action, control

    def _inputs(self, record: Mapping[str, Any]) -> list:
        """Entities for a record's inputs: what the archive holds, else external."""
        inputs = record.get("inputs") or {}
        entities = []
        for recorded, digest in (inputs.items() if isinstance(inputs, Mapping) else ()):
            path = self.crate_path(str(recorded))
            entity = self.entity_for(path) if path else None
            entities.append(entity if entity is not None
                            else self.external_input(str(recorded), digest))
        return entities

    def _parameters(self, action_id: str, tool, record: Mapping[str, Any]) -> list:
        """A PropertyValue per config value of the stage, each the example of a
        FormalParameter of the tool (its ``input``)."""
        config = record.get("config")
        values = []
        for key, value in _flatten(config if isinstance(config, Mapping) else {}):
            param_id = f"{tool.id}/param/{quote(key)}"
            param = self.crate.get(param_id)
            if param is None:
                param = self.crate.add_formal_parameter(key, _data_type(value),
                                                        identifier=param_id)
                tool.append_to("input", param)
            values.append(self.crate.add(ContextEntity(
                self.crate, f"{action_id}/param/{quote(key)}", properties={
                    "@type": "PropertyValue", "name": key, "value": _plain_value(value),
                    "exampleOfWork": param})))
        return values

    def add_run(self, actions: list, controls: list, jobs: list[_Job], config_file):
        """The CreateAction of the workflow run and the OrganizeAction of Snakemake.
        The run's result is everything under results/: the stores and folders the jobs
        made, and every other file."""
        results = list(self.datasets.values()) + [
            e for name, e in self.files.items() if name.startswith(f"{RESULTS_PREFIX}/")
            and name not in self.in_datasets]
        external = [o for a in actions for o in _as_list(a.get("object", []))
                    if getattr(o, "id", "").startswith("#input-")]
        times = _run_times(j.record for j in jobs)
        run = self.crate.add_action(self.workflow, "#workflow-run", object=[config_file] + list(
            {e.id: e for e in external}.values()), result=results, properties={
            "name": "Run of the eae Snakemake workflow", **times})
        engine = self.crate.add(SoftwareApplication(self.crate, "#snakemake", properties={
            "name": "Snakemake", "url": {"@id": "https://snakemake.readthedocs.io"},
            **({"softwareVersion": self.snakemake_version} if self.snakemake_version else {})}))
        organize = self.crate.add(ContextEntity(self.crate, "#snakemake-run", properties={
            "@type": "OrganizeAction", "name": "Run of Snakemake", "instrument": engine,
            "object": controls, "result": run, **times}))
        return run, organize

    def finish(self, mentions: list, lock):
        """Root dataset (profiles, mentions) and the metadata as JSON bytes."""
        root = self.crate.root_dataset
        root["name"] = "eae results"
        root["description"] = ("Results of the Entropic Autoencoders workflow with the "
                               "workflow, its resolved config, the environment and the "
                               "provenance of every job (Provenance Run Crate).")
        root["datePublished"] = now_iso()
        for url, (name, version) in PROFILES.items():
            profile = self.crate.add(ContextEntity(self.crate, url, properties={
                "@type": "CreativeWork", "name": name, "version": version}))
            root.append_to("conformsTo", profile)
        root.append_to("mentions", mentions)
        self.workflow["buildInstructions"] = lock
        metadata = self.crate.metadata
        metadata.extra_contexts.append(WFRUN_CONTEXT)
        metadata.extra_terms["buildInstructions"] = BUILD_INSTRUCTIONS_TERM
        return json.dumps(metadata.generate(), indent=1, sort_keys=True,
                          ensure_ascii=False).encode()


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_version(workflow_dir: Path) -> dict[str, str]:
    """{"version": commit} of the workflow's checkout (``-dirty`` when it has
    uncommitted changes: the archived files are then what ran, not the commit)."""
    git = git_state(workflow_dir)
    if not git.get("commit"):
        return {}
    return {"version": git["commit"] + ("-dirty" if git.get("dirty") else "")}


def _job_description(record: Mapping[str, Any]) -> str:
    """What else the record says about the job: code, device, Python."""
    git = record.get("git") or {}
    commit = str(git.get("commit") or "unknown")[:12]
    dirty = " (dirty tree)" if git.get("dirty") else ""
    return (f"eae stage {record['stage']}: git {commit}{dirty}, eae source sha256 "
            f"{str(record.get('eae_source_sha256') or 'unknown')[:12]}, device "
            f"{record.get('device', 'unknown')}, Python {record.get('python', 'unknown')}, "
            f"seeds {json.dumps(record.get('seeds') or {}, sort_keys=True, default=str)}")


def _run_times(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """startTime and endTime of the whole run: earliest start, latest end of its jobs."""
    records = list(records)
    starts = [(t, r["started"]) for r in records for t in [_parse_time(r.get("started"))] if t]
    ends = [(t, r["finished"]) for r in records for t in [_parse_time(r.get("finished"))] if t]
    times = {}
    if starts:
        times["startTime"] = str(min(starts)[1])
    if ends:
        times["endTime"] = str(max(ends)[1])
    return times


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


def _crate_metadata(members: list[_Member], results_root: Path, workflow_dir: Path,
                    rule_outputs: Mapping[str, Iterable[str]] | None) -> tuple[bytes, int]:
    """The ro-crate-metadata.json for the archived members, and the number of jobs."""
    builder = _CrateBuilder(results_root, rule_outputs)
    by_name = {m.name: m for m in members}
    results = [m for m in members if m.name.startswith(f"{RESULTS_PREFIX}/")]
    jobs = _jobs(results)
    for member in results:
        builder.add_file(member)
    config_file = builder.add_file(by_name[CONFIG_NAME], {
        "name": "resolved configuration",
        "description": "the validated config with every default filled in"})
    lock = builder.add_file(by_name[LOCK_NAME], {
        "name": "environment lock", "description": "pip freeze of the interpreter that "
        "built the archive; pip install -r recreates the environment",
        "conformsTo": {"@id": PIP_REQUIREMENTS_FORMAT}})
    workflow = [m for m in members if not m.name.startswith(f"{RESULTS_PREFIX}/")
                and m.name not in (CONFIG_NAME, LOCK_NAME)]
    builder.add_workflow(workflow, jobs, workflow_dir)
    done = [pair for pair in (builder.add_job(job) for job in jobs) if pair is not None]
    actions, controls = [a for a, _ in done], [c for _, c in done]
    run, organize = builder.add_run(actions, controls, jobs, config_file)
    return builder.finish([run, organize] + actions, lock), len(actions)


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


# -------------------------------------------------------------------------- verifying


@dataclass
class ArchiveReport:
    """What :func:`verify_archive` found. ``ok`` when nothing is missing, altered or
    unexpected and the archive could be read."""

    path: str
    checked: int = 0
    missing: list[str] = field(default_factory=list)
    altered: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def ok(self) -> bool:
        return not (self.missing or self.altered or self.unexpected or self.error)

    def format(self) -> str:
        """Human-readable summary, one line per problem."""
        if self.error:
            return f"{self.path}: ERROR: {self.error}"
        lines = [f"{self.path}: {self.checked} files checked against {METADATA_NAME}"]
        lines += [f"  missing:    {p}" for p in self.missing]
        lines += [f"  altered:    {p}" for p in self.altered]
        lines += [f"  unexpected: {p}" for p in self.unexpected]
        lines.append("  OK" if self.ok else
                     f"  FAILED: {len(self.missing)} missing, {len(self.altered)} altered, "
                     f"{len(self.unexpected)} unexpected")
        return "\n".join(lines)


def _digest(fh) -> dict[str, Any]:
    digest, size = hashlib.sha256(), 0
    for block in iter(lambda: fh.read(_CHUNK), b""):
        digest.update(block)
        size += len(block)
    return {"sha256": digest.hexdigest(), "size": size}


def _scan_tarball(path, report: ArchiveReport) -> tuple[dict, Any]:
    """(hashes of the members, parsed crate metadata) of a tarball, read once as a stream."""
    seen: dict[str, dict[str, Any]] = {}
    metadata = None
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            if member.isdir():
                continue  # a re-packed archive may list folders: they hold no content
            name = posixpath.normpath(member.name)  # `tar czf x .` writes ./results/...
            if name == METADATA_NAME:
                metadata = json.loads(tar.extractfile(member).read())
                continue
            if name in seen:
                report.unexpected.append(f"{name} (duplicate member)")
                continue
            if not member.isfile():
                report.unexpected.append(f"{name} (not a regular file)")
                continue
            seen[name] = _digest(tar.extractfile(member))
    return seen, metadata


def _scan_directory(path: Path) -> tuple[dict, Any]:
    """The same for an extracted archive (a folder holding ro-crate-metadata.json)."""
    seen = {}
    metadata_file = path / METADATA_NAME
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p != metadata_file):
        with open(file, "rb") as fh:
            seen[file.relative_to(path).as_posix()] = _digest(fh)
    metadata = json.loads(metadata_file.read_text()) if metadata_file.is_file() else None
    return seen, metadata


def _as_list(value: Any) -> list:
    return value if isinstance(value, list) else [value]


def expected_files(metadata: Any) -> dict[str, dict[str, Any]]:
    """{path in the crate: {"sha256", "size"}} of every File entity of the crate's
    metadata that names a file inside the crate (not a URL, not a ``#`` local entity).
    Raises ValueError when the metadata is not an RO-Crate JSON-LD graph."""
    graph = metadata.get("@graph") if isinstance(metadata, dict) else None
    if not isinstance(graph, list):
        raise ValueError(f"{METADATA_NAME} has no @graph")
    files: dict[str, dict[str, Any]] = {}
    for entity in graph:
        ident = entity.get("@id") if isinstance(entity, dict) else None
        if (not isinstance(ident, str) or ident.startswith("#") or "://" in ident
                or "File" not in _as_list(entity.get("@type"))):
            continue
        path = unquote(ident)
        if path in files:
            raise ValueError(f"{METADATA_NAME} lists {path} twice")
        try:
            size = int(entity.get("contentSize"))
        except (TypeError, ValueError):
            size = None  # no size recorded: the file cannot match, it is reported altered
        files[path] = {"sha256": entity.get("sha256"), "size": size}
    return files


def verify_archive(path: str | os.PathLike) -> ArchiveReport:
    """Check every file of an archive (the .tar.gz, or a folder it was extracted to)
    against the sha256s and sizes in its ro-crate-metadata.json.

    Reads the tarball once, as a stream, hashing each member. Reports File entities of
    the crate that are not in the archive (missing), files whose sha256 or size differ
    (altered), and files the crate does not list or that occur twice (unexpected). An
    unreadable tarball or metadata is reported as ``error``; this function does not
    raise for a damaged archive."""
    report = ArchiveReport(path=str(path))
    path = Path(path)
    try:
        if path.is_dir():
            seen, metadata = _scan_directory(path)
        else:
            seen, metadata = _scan_tarball(path, report)
    except FileNotFoundError:
        report.error = "archive not found"
        return report
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        report.error = f"cannot read the archive: {type(err).__name__}: {err}"
        return report
    if metadata is None:
        report.error = f"no {METADATA_NAME} in the archive"
        return report
    try:
        expected = expected_files(metadata)
    except ValueError as err:
        report.error = f"invalid {METADATA_NAME}: {err}"
        return report
    for name in sorted(expected):
        if name not in seen:
            report.missing.append(name)
        elif (seen[name]["sha256"] != expected[name]["sha256"]
              or seen[name]["size"] != expected[name]["size"]):
            report.altered.append(name)
    report.unexpected += sorted(name for name in seen if name not in expected)
    report.checked = len(seen)
    return report

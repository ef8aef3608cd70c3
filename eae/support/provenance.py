"""Provenance records: what made a result (config, code, packages, seeds, device, inputs)."""

from __future__ import annotations

import datetime as _dt
import hashlib
import importlib.metadata
import json
import os
import platform
import subprocess
import sys
from pathlib import Path
from typing import Any, Iterable, Mapping

PACKAGE_ROOT = Path(__file__).resolve().parent.parent
TRACKED_PACKAGES = (
    "eae",
    "tensorflow",
    "keras",
    "numpy",
    "scipy",
    "xarray",
    "zarr",
    "pandas",
    "matplotlib",
    "snakemake",
)


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks so large inputs never sit in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            digest.update(block)
    return digest.hexdigest()


def sha256_path(path: str | os.PathLike) -> str:
    """sha256 of a file, or of a directory (e.g. a Zarr store) over its sorted files."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(sha256_file(file).encode())
    return digest.hexdigest()


def package_versions(names: Iterable[str] = TRACKED_PACKAGES) -> dict[str, str]:
    """Installed versions of the packages that decide numerical results."""
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def git_state(repo: str | os.PathLike | None = None) -> dict[str, Any]:
    """Commit and dirtiness of the checkout that holds the code (None outside git)."""
    cwd = Path(repo) if repo else PACKAGE_ROOT
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = bool(
            subprocess.run(
                ["git", "status", "--porcelain", "--untracked-files=no"],
                cwd=cwd,
                capture_output=True,
                text=True,
                check=True,
            ).stdout.strip()
        )
    except (OSError, subprocess.CalledProcessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def source_hash(modules: Iterable[str] | None = None) -> str:
    """sha256 over the eae source files: all of them, or those the named modules run
    (their import closure, see :func:`module_closure`)."""
    if modules is None:
        files = sorted(PACKAGE_ROOT.rglob("*.py"))
    else:
        files = module_closure(*modules)
    digest = hashlib.sha256()
    for file in files:
        digest.update(str(file.relative_to(PACKAGE_ROOT)).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def fingerprint(settings: Any, data: Iterable[Any] = (), modules: Iterable[str] | None = None) -> str:
    """The one fingerprint of a training run, which decides whether a checkpoint may be
    resumed: a short hash of ``settings`` (JSON), each of ``data`` (a path: its sha256;
    a NumPy array: its shape, dtype and bytes; None) and the source of the code it runs
    (the import closure of ``modules``, :func:`source_hash`). A code change makes the
    workflow rerun a job; without the source here that job would resume the old run's
    finished checkpoint and write the old model under new code."""
    import numpy as np

    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode())
    for item in data:
        if item is None:
            digest.update(b"none")
        elif isinstance(item, np.ndarray):
            digest.update(str((item.shape, item.dtype.str)).encode())
            digest.update(memoryview(np.ascontiguousarray(item)).cast("B"))
        else:
            digest.update(sha256_path(item).encode())
    digest.update(source_hash(modules).encode())
    return digest.hexdigest()[:16]


def device_description() -> str:
    """The device a stage runs on: the GPU TensorFlow uses, if the stage loaded TensorFlow
    (see :mod:`eae.support.runtime`) and it sees one; else the CPU. A stage that never loads
    TensorFlow (tables, figures of stored arrays) runs on the CPU and pays no import."""
    if "tensorflow" not in sys.modules:
        return cpu_description()
    try:
        from eae.support.runtime import device_description as describe
    except Exception:  # TensorFlow broken: the CPU is what runs the stage
        return cpu_description()
    return describe()


def cpu_description() -> str:
    """``CPU: <model> (N cores)``, the model from /proc/cpuinfo where there is one."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {model} ({os.cpu_count()} cores)"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def make_record(
    stage: str,
    config: Mapping[str, Any] | None = None,
    seeds: Mapping[str, Any] | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    started: str | None = None,
    extra: Mapping[str, Any] | None = None,
    modules: Iterable[str] | None = None,
) -> dict[str, Any]:
    """A JSON-serialisable provenance record for one stage's output.

    ``modules``: the eae modules the stage runs (their import closure is hashed);
    None hashes the whole package.
    """
    record = {
        "stage": stage,
        "config": json.loads(json.dumps(dict(config or {}), default=str)),
        "seeds": dict(seeds or {}),
        "git": git_state(),
        "eae_source_sha256": source_hash(modules),
        "eae_modules": sorted(modules) if modules else "all",
        "packages": package_versions(),
        "python": platform.python_version(),
        "device": device_description(),
        "started": started or now_iso(),
        "finished": now_iso(),
        "inputs": {str(p): sha256_path(p) for p in inputs},
    }
    if extra:
        record.update(json.loads(json.dumps(dict(extra), default=str)))
    return record


def write_sidecar(record: Mapping[str, Any], path: str | os.PathLike) -> None:
    """Write a provenance record as JSON next to (or for) a table or figure."""
    from eae.support.io import write_text_atomic

    write_text_atomic(path, json.dumps(record, indent=2, sort_keys=True))


def sidecar_path(result: str | os.PathLike, provenance_dir: str = "provenance") -> Path:
    """Where the provenance of a table or figure lives: ``results/provenance/<rel>.json``
    mirroring its path below ``results/`` (next to it when it is outside results/)."""
    result = Path(result)
    parts = result.parts
    if "results" in parts:
        i = len(parts) - 1 - parts[::-1].index("results")
        root = Path(*parts[: i + 1])
        return root / provenance_dir / Path(*parts[i + 1 :]).with_name(result.name + ".json")
    return result.with_name(result.name + ".provenance.json")


def record_outputs(record: Mapping[str, Any], outputs: Iterable[str | os.PathLike]) -> None:
    """Write one sidecar per table/figure, each with the sha256 of the file it describes."""
    for out in outputs:
        rec = dict(record)
        rec["output"] = {"path": str(out), "sha256": sha256_path(out)}
        write_sidecar(rec, sidecar_path(out))


def module_closure(*modules: str) -> list[Path]:
    """Source files of the named ``eae`` modules and every ``eae`` module they import,
    directly or lazily inside functions (found by parsing, without importing).

    The workflow lists these as inputs of a rule, so editing a module reruns exactly
    the stages that run it, and the provenance hashes exactly the code a stage ran.
    """
    import ast

    seen: dict[str, Path] = {}
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen or not (name == "eae" or name.startswith("eae.")):
            continue
        rel = name.split(".")[1:]
        path = PACKAGE_ROOT.joinpath(*rel).with_suffix(".py") if rel else PACKAGE_ROOT / "__init__.py"
        if not path.exists():
            package = PACKAGE_ROOT.joinpath(*rel) / "__init__.py"
            if not package.exists():
                continue
            path = package
        seen[name] = path
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                todo += [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                todo.append(node.module)
                todo += [f"{node.module}.{alias.name}" for alias in node.names]
    return sorted(set(seen.values()))


def find_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The provenance record of a result: a Zarr store's attrs, the sidecar under
    results/provenance/, or a ``provenance.json`` inside an output directory."""
    path = Path(path)
    if (path / "zarr.json").exists():
        from eae.support.io import read_provenance

        return read_provenance(path) or None
    # a file inside an output directory (a saved model) shares the directory's record
    for candidate in (sidecar_path(path), path / "provenance.json",
                      path.with_name(path.name + ".provenance.json"),
                      sidecar_path(path.parent), path.parent / "provenance.json"):
        if candidate.is_file():
            return json.loads(candidate.read_text())
    return None


def provenance_chain(path: str | os.PathLike, depth: int = 0, seen: set | None = None):
    """Yield ``(depth, path, record, changed)`` for a result and, recursively, its
    inputs. ``changed`` is True when an input's file no longer has the sha256 that
    the downstream record saw."""
    seen = set() if seen is None else seen
    key = str(Path(path).resolve())
    if key in seen:
        return
    seen.add(key)
    record = find_record(path)
    yield depth, str(path), record, False
    if not record:
        return
    for inp, digest in (record.get("inputs") or {}).items():
        changed = Path(inp).exists() and sha256_path(inp) != digest
        sub = list(provenance_chain(inp, depth + 1, seen))
        if sub:
            d, p, r, _ = sub[0]
            yield d, p, r, changed
            yield from sub[1:]


def format_chain(path: str | os.PathLike) -> str:
    """Human-readable provenance chain of a result (``eae provenance PATH``)."""
    lines = []
    for depth, p, record, changed in provenance_chain(path):
        pad = "  " * depth
        if record is None:
            lines.append(f"{pad}{p}: no provenance record (a source file or external input)")
            continue
        git = record.get("git") or {}
        dirty = " (dirty tree)" if git.get("dirty") else ""
        lines.append(f"{pad}{p}")
        lines.append(f"{pad}  stage {record.get('stage')}, {record.get('started')} → "
                     f"{record.get('finished')}, {record.get('device')}")
        lines.append(f"{pad}  git {str(git.get('commit'))[:12]}{dirty}, eae source "
                     f"{str(record.get('eae_source_sha256'))[:12]}, seeds {record.get('seeds')}")
        pk = record.get("packages") or {}
        lines.append(f"{pad}  " + ", ".join(f"{k} {v}" for k, v in pk.items()
                                            if k in ("tensorflow", "numpy", "xarray", "zarr")))
        if changed:
            lines.append(f"{pad}  WARNING: this input changed since the downstream result was made")
    return "\n".join(lines)


def collect_records(paths: Iterable[str | os.PathLike]) -> dict[str, Any]:
    """{path: provenance record} for results and, recursively, their inputs."""
    records: dict[str, Any] = {}
    for path in paths:
        for _, p, record, _ in provenance_chain(path):
            if record is not None:
                records.setdefault(p, record)
    return records

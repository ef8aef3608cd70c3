"""One tarball of the results: every file with its sha256, the resolved config and the
exact environment, and a check of such a tarball against its manifest.

Layout of ``eae-results.tar.gz`` (paths inside the tarball)::

    results/...               every file below the results directory (checkpoints and
                              the archive folder excluded); provenance sidecars under
                              results/provenance/ and Zarr attrs travel with them
    config.resolved.yaml      the validated config with every default filled in
    environment.lock.txt      ``pip freeze`` of the interpreter that built the archive
    MANIFEST.json             {"files": {path: {"sha256", "size"}}} for all of the above

The manifest is the last member: files are hashed while they stream into the tarball,
so every file is read exactly once and large results never sit in memory.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import io
import json
import os
import platform
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping

import yaml

from eae.provenance import now_iso

MANIFEST_NAME = "MANIFEST.json"
CONFIG_NAME = "config.resolved.yaml"
LOCK_NAME = "environment.lock.txt"
FORMAT = "eae-archive/1"
# Relative to the results directory. Checkpoints are scratch state of training jobs
# (large, and not results); archive/ holds the tarball itself.
DEFAULT_EXCLUDE = ("checkpoints", "archive")
_CHUNK = 1 << 20


class ArchiveError(RuntimeError):
    """The results cannot be archived (missing directory, unreadable or broken file)."""


# --------------------------------------------------------------------------- building


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
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        rel_dir = PurePosixPath(here.relative_to(root).as_posix())
        # prune excluded folders so their (possibly huge) trees are never walked
        dirnames[:] = sorted(d for d in dirnames if not _is_excluded(rel_dir / d, exclude))
        for name in sorted(filenames):
            path = here / name
            if _is_excluded(rel_dir / name, exclude) or path.resolve() in skip_set:
                continue
            if not path.is_file():
                raise ArchiveError(f"cannot archive {path}: not a regular file (broken symlink?)")
            files.append(path)
    return sorted(files, key=lambda p: p.relative_to(root).as_posix())


class _HashingReader(io.RawIOBase):
    """File wrapper that feeds every byte tarfile reads into a sha256."""

    def __init__(self, fh):
        self._fh = fh
        self.digest = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        data = self._fh.read(n)
        self.digest.update(data)
        self.size += len(data)
        return data


def _tarinfo(name: str, size: int, mtime: float) -> tarfile.TarInfo:
    # Owner and mode are normalised: the archive records content, not who ran the job.
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = size, int(mtime), 0o644
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    return info


def _add_file(tar: tarfile.TarFile, path: Path, arcname: str) -> dict[str, Any]:
    stat = path.stat()
    with open(path, "rb") as fh:
        reader = _HashingReader(fh)
        tar.addfile(_tarinfo(arcname, stat.st_size, stat.st_mtime), reader)
    # tarfile stops at the size it was told: a file that grew while it was read would
    # be cut silently, and one that shrank raises inside tarfile; both are bad input.
    if reader.size != stat.st_size or os.stat(path).st_size != stat.st_size:
        raise ArchiveError(f"{path} changed size while it was archived; is a job still writing it?")
    return {"sha256": reader.digest.hexdigest(), "size": stat.st_size}


def _add_bytes(tar: tarfile.TarFile, data: bytes, arcname: str) -> dict[str, Any]:
    tar.addfile(_tarinfo(arcname, len(data), time.time()), io.BytesIO(data))
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}


def build_archive(results_dir: str | os.PathLike, out_path: str | os.PathLike,
                  config: Mapping[str, Any] | None = None,
                  exclude: Iterable[str] = DEFAULT_EXCLUDE,
                  environment: str | None = None) -> dict[str, Any]:
    """Write ``out_path`` (.tar.gz) with every file below ``results_dir`` (under
    ``results/``), ``config.resolved.yaml``, ``environment.lock.txt`` and, last,
    ``MANIFEST.json``; return the manifest.

    ``exclude``: paths relative to ``results_dir`` left out (default: checkpoints/ and
    archive/); the tarball itself is always left out. ``environment``: the lock text
    (default: :func:`environment_lock`). Atomic: the tarball is written to a temporary
    name beside ``out_path`` and renamed, so a failure leaves no partial archive.
    """
    root = Path(results_dir)
    out = Path(out_path)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    files = collect_files(root, exclude, skip=(out, tmp))
    out.parent.mkdir(parents=True, exist_ok=True)
    manifest: dict[str, Any] = {
        "format": FORMAT,
        "created": now_iso(),
        "results_dir": str(root),
        "excluded": sorted(exclude),
        "files": {},
    }
    entries = manifest["files"]
    try:
        with tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
            for path in files:
                arcname = "results/" + path.relative_to(root).as_posix()
                entries[arcname] = _add_file(tar, path, arcname)
            entries[CONFIG_NAME] = _add_bytes(tar, resolved_config_yaml(config).encode(),
                                              CONFIG_NAME)
            lock = environment if environment is not None else environment_lock()
            entries[LOCK_NAME] = _add_bytes(tar, lock.encode(), LOCK_NAME)
            manifest["n_files"] = len(entries)
            manifest["total_bytes"] = sum(e["size"] for e in entries.values())
            _add_bytes(tar, json.dumps(manifest, indent=2, sort_keys=True).encode(), MANIFEST_NAME)
        os.replace(tmp, out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return manifest


# -------------------------------------------------------------------------- verifying


@dataclass
class ArchiveReport:
    """What :func:`verify_archive` found. ``ok`` when nothing is missing, altered or
    unexpected and the tarball could be read."""

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
        lines = [f"{self.path}: {self.checked} files checked against {MANIFEST_NAME}"]
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
    """(hashes of the members, parsed manifest) of a tarball, read once as a stream."""
    seen: dict[str, dict[str, Any]] = {}
    manifest = None
    with tarfile.open(path, "r|gz") as tar:
        for member in tar:
            if member.isdir():
                continue  # a re-packed archive may list folders: they hold no content
            if member.name == MANIFEST_NAME:
                manifest = json.loads(tar.extractfile(member).read())
                continue
            if member.name in seen:
                report.unexpected.append(f"{member.name} (duplicate member)")
                continue
            if not member.isfile():
                report.unexpected.append(f"{member.name} (not a regular file)")
                continue
            seen[member.name] = _digest(tar.extractfile(member))
    return seen, manifest


def _scan_directory(path: Path) -> tuple[dict, Any]:
    """The same for an extracted archive (a folder holding MANIFEST.json)."""
    seen = {}
    manifest_file = path / MANIFEST_NAME
    for file in sorted(p for p in path.rglob("*") if p.is_file() and p != manifest_file):
        with open(file, "rb") as fh:
            seen[file.relative_to(path).as_posix()] = _digest(fh)
    manifest = json.loads(manifest_file.read_text()) if manifest_file.is_file() else None
    return seen, manifest


def verify_archive(path: str | os.PathLike) -> ArchiveReport:
    """Check every file of an archive (the .tar.gz, or a folder it was extracted to)
    against its manifest.

    Reads the tarball once, as a stream, hashing each member. Reports files in the
    manifest but not in the archive (missing), files whose sha256 or size differ
    (altered), and files the manifest does not list or that occur twice
    (unexpected). An unreadable tarball or manifest is reported as ``error``; this
    function does not raise for a damaged archive."""
    report = ArchiveReport(path=str(path))
    path = Path(path)
    try:
        if path.is_dir():
            seen, manifest = _scan_directory(path)
        else:
            seen, manifest = _scan_tarball(path, report)
    except FileNotFoundError:
        report.error = "archive not found"
        return report
    except (tarfile.TarError, OSError, EOFError, json.JSONDecodeError, UnicodeDecodeError) as err:
        report.error = f"cannot read the archive: {type(err).__name__}: {err}"
        return report
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict):
        report.error = f"no valid {MANIFEST_NAME} in the archive"
        return report
    expected = manifest["files"]
    for name in sorted(expected):
        if name not in seen:
            report.missing.append(name)
        elif (seen[name]["sha256"] != expected[name].get("sha256")
              or seen[name]["size"] != expected[name].get("size")):
            report.altered.append(name)
    report.unexpected += sorted(name for name in seen if name not in expected)
    report.checked = len(seen)
    return report

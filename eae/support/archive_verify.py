"""The check of a results archive: every file of the tarball (or of the folder it was
extracted to) against the sha256s and sizes the crate's metadata lists, naming each
missing, altered or unexpected file.

Split from :mod:`eae.support.archive` (which re-exports every name here) so that
checking an archive needs neither the crate builder nor ``rocrate``.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import tarfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from eae.support.archive_contents import METADATA_NAME, _as_list

_CHUNK = 1 << 20


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

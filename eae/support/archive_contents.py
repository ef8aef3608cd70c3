"""What goes into the results archive and how it gets there: the names of its layout,
the files selected (the results below the results directory, the workflow as checked
in) and their streaming into the tarball, hashed on the way so each is read once.

Split from :mod:`eae.support.archive` (which re-exports every name here, and holds
:func:`eae.support.archive.build_archive` that drives these pieces); the crate's
metadata (:mod:`eae.support.archive_crate`) and the check of an archive
(:mod:`eae.support.archive_verify`) build on the names and members defined here.
"""

from __future__ import annotations

import hashlib
import io
import os
import posixpath
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable

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
# Provenance records are small JSON files; a larger candidate is archived but not parsed.
_RECORD_MAX_BYTES = 64 << 20


class ArchiveError(RuntimeError):
    """The results cannot be archived (missing directory, unreadable or broken file)."""


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


def _as_list(value: Any) -> list:
    """A JSON-LD value that may be one item or a list, as a list (the crate and its
    check both read such values)."""
    return value if isinstance(value, list) else [value]

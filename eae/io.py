"""Atomic, provenance-carrying Zarr I/O for xarray Datasets."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import xarray as xr

PROVENANCE_ATTR = "provenance"


def _tmp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}")


def write_zarr(
    ds: xr.Dataset,
    path: str | os.PathLike,
    provenance: Mapping[str, Any] | None = None,
    chunks: Mapping[str, int] | None = None,
) -> Path:
    """Write ``ds`` to a Zarr store at ``path`` atomically.

    The store is written under a temporary name and renamed at the end, so an
    interrupted job never leaves a store that looks complete. ``provenance`` is kept
    as a JSON string in the store's attrs (Zarr attrs must be JSON; nested dicts are
    kept verbatim that way). ``chunks`` maps dimension names to chunk lengths.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds = ds.copy()
    if provenance is not None:
        ds.attrs[PROVENANCE_ATTR] = json.dumps(provenance, sort_keys=True, default=str)
    if chunks:
        # Chunk through the encoding, not ds.chunk(): no dask needed for in-memory data.
        for name, var in ds.variables.items():
            if var.ndim:
                var.encoding["chunks"] = tuple(
                    min(chunks.get(d, n), n) for d, n in zip(var.dims, var.shape))
    tmp = _tmp_path(path)
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        ds.to_zarr(tmp, mode="w", consolidated=True, zarr_format=3)
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def replace_dir(src: Path, dst: Path) -> None:
    """Move directory ``src`` to ``dst``, replacing any previous ``dst``."""
    if dst.exists():
        old = dst.with_name(f".{dst.name}.old-{os.getpid()}")
        os.replace(dst, old)
        os.replace(src, dst)
        shutil.rmtree(old)
    else:
        os.replace(src, dst)


def open_zarr(path: str | os.PathLike) -> xr.Dataset:
    """Open a store written by :func:`write_zarr` (clear error if it is missing)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"Zarr store not found: {path}")
    return xr.open_zarr(path, consolidated=True)


def read_provenance(ds_or_path: xr.Dataset | str | os.PathLike) -> dict[str, Any]:
    """The provenance record stored in a Dataset's (or store's) attrs."""
    ds = ds_or_path if isinstance(ds_or_path, xr.Dataset) else open_zarr(ds_or_path)
    raw = ds.attrs.get(PROVENANCE_ATTR)
    return json.loads(raw) if raw else {}

"""Atomic, provenance-carrying Zarr I/O for xarray Datasets."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr
from xarray.backends import BackendArray
from xarray.core import indexing

PROVENANCE_ATTR = "provenance"

# Snakemake marks directory() outputs with a timestamp file that zarr does not know.
warnings.filterwarnings("ignore", message="Object at .snakemake_timestamp")


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
        ds.to_zarr(tmp, mode="w", consolidated=False, zarr_format=3)
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
    return xr.open_zarr(path, consolidated=False)


class _MemberArray(BackendArray):
    """A ``(chain, draw, …)`` array read as ``(member, …)``, member = chain · draws + draw,
    without loading it: a selection reads only the (chain, draw) entries it names.

    ``Dataset.stack`` cannot do this for a lazily opened store without dask: it loads the
    whole variable, through a zarr selection whose int64 index arrays take 8 bytes per
    element and dimension (a 2.6 GB ensemble of 1000 members needed 24 GB).
    """

    def __init__(self, variable: xr.Variable):
        self.variable = variable
        chains, self.draws = variable.shape[:2]
        self.shape = (chains * self.draws,) + tuple(variable.shape[2:])
        self.dtype = variable.dtype

    def __getitem__(self, key):
        # OUTER: xarray hands _read ints, positive-step slices and sorted 1-D int arrays
        return indexing.explicit_indexing_adapter(key, self.shape, indexing.IndexingSupport.OUTER,
                                                  self._read)

    def _read(self, key: tuple) -> np.ndarray:
        members, rest = np.arange(self.shape[0])[key[0]], tuple(key[1:])
        chain, draw = np.divmod(np.atleast_1d(members), self.draws)
        if chain.size == 0:
            return np.asarray(self.variable[(0, draw) + rest].values)
        # members are sorted, so each chain's draws are one run, in order
        parts = [np.asarray(self.variable[(int(c), _as_slice(draw[chain == c])) + rest].values)
                 for c in np.unique(chain)]
        out = np.concatenate(parts)
        return out[0] if np.ndim(members) == 0 else out


def _as_slice(index: np.ndarray) -> np.ndarray | slice:
    """Consecutive indices as a slice (a block read; zarr reads it ~1.4x faster than the
    same indices as an array), other indices unchanged."""
    first = int(index[0])
    return slice(first, first + index.size) if np.array_equal(
        index, np.arange(first, first + index.size)) else index


def member_view(ds: xr.Dataset) -> xr.Dataset:
    """An ensemble store's ``(chain, draw, …)`` variables as one leading ``member``
    axis (chain-major: member = chain · draws + draw), with ``chain`` and ``draw``
    kept as coordinates of ``member``. Stores without a chain axis pass through.

    Lazy: variables whose leading dims are ``(chain, draw)`` (all that
    :func:`eae.core.ensemble.sample_ensemble` writes) are read only where selected, so a
    reader can stream over members; any other variable on ``chain`` or ``draw`` is
    stacked (and loaded) by xarray.
    """
    if "chain" not in ds.dims or "draw" not in ds.dims:
        return ds
    lazy = {name: xr.Variable(("member",) + var.dims[2:],
                              indexing.LazilyIndexedArray(_MemberArray(var.variable)), var.attrs)
            for name, var in ds.data_vars.items() if var.dims[:2] == ("chain", "draw")}
    stacked = (ds.drop_vars(list(lazy)).stack(member=("chain", "draw"), create_index=False)
               .transpose("member", ...).assign(lazy))
    return stacked.assign_coords(member=np.arange(stacked.sizes["member"]))


def open_ensemble(path: str | os.PathLike) -> xr.Dataset:
    """Open an ensemble store (lazily) with its members on one ``member`` axis."""
    return member_view(open_zarr(path))


def read_provenance(ds_or_path: xr.Dataset | str | os.PathLike) -> dict[str, Any]:
    """The provenance record stored in a Dataset's (or store's) attrs."""
    ds = ds_or_path if isinstance(ds_or_path, xr.Dataset) else open_zarr(ds_or_path)
    raw = ds.attrs.get(PROVENANCE_ATTR)
    return json.loads(raw) if raw else {}


class ZarrStreamWriter:
    """Write a Zarr store chunk by chunk along one dimension, atomically.

    Data go to a hidden temporary store; :meth:`close` writes the final attrs,
    consolidates the metadata and renames it into place, so a killed job leaves no
    store that looks complete. Peak memory is one chunk, however long the stream.
    """

    def __init__(self, path: str | os.PathLike, append_dim: str,
                 static: xr.Dataset | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.append_dim = append_dim
        self.tmp = _tmp_path(self.path)
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self._started = False
        self._static = static

    def append(self, chunk: xr.Dataset) -> None:
        """Append ``chunk`` (which has ``append_dim``) to the store."""
        if not self._started:
            first = chunk if self._static is None else xr.merge([self._static, chunk])
            for var in first.variables.values():
                if self.append_dim in var.dims:
                    var.encoding["chunks"] = tuple(
                        chunk.sizes[d] if d == self.append_dim else n
                        for d, n in zip(var.dims, var.shape))
            first.to_zarr(self.tmp, mode="w", consolidated=False, zarr_format=3)
            self._started = True
        else:
            chunk.to_zarr(self.tmp, append_dim=self.append_dim, consolidated=False)

    def written(self) -> xr.Dataset:
        """What has been appended so far (lazily, from the temporary store)."""
        return xr.open_zarr(self.tmp, consolidated=False)

    def close(self, extra: xr.Dataset | None = None, attrs: Mapping[str, Any] | None = None,
              provenance: Mapping[str, Any] | None = None) -> Path:
        """Add final variables (e.g. streaming means) and attrs, then publish."""
        import zarr  # noqa: PLC0415 (only needed here)

        if not self._started:
            raise ValueError(f"nothing was written to {self.path}")
        if extra is not None:
            extra.to_zarr(self.tmp, mode="a", consolidated=False)
        group = zarr.open_group(str(self.tmp), mode="r+")
        # the static variables' attrs too: writing ``extra`` in append mode replaced them
        all_attrs = {**(self._static.attrs if self._static is not None else {}), **dict(attrs or {})}
        if provenance is not None:
            all_attrs[PROVENANCE_ATTR] = json.dumps(provenance, sort_keys=True, default=str)
        group.attrs.update(all_attrs)
        replace_dir(self.tmp, self.path)
        return self.path

    def abort(self) -> None:
        if self.tmp.exists():
            shutil.rmtree(self.tmp)


def _temporary_name(path: Path) -> Path:
    """A hidden name beside ``path`` that keeps its suffix (Keras and matplotlib choose
    the format by it)."""
    return path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")


def temperature_tag(temperature: float) -> str:
    """A temperature as it appears in paths and tags: ``1e-05``, ``2.5e-08`` (always with
    an exponent, at most 7 significant digits): the faces' ``eae_T<tag>`` folders and the
    sweep's ``T<tag>`` points."""
    mantissa, exponent = f"{float(temperature):.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary file path beside ``path``; on success it is renamed to
    ``path``, on failure removed, so a reader never sees a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_paths(paths: Mapping[str, str | os.PathLike]):
    """:func:`atomic_path` for a set of outputs: yields ``{key: temporary path}``; on
    success every file is renamed into place, on failure all are removed, so a reader
    never sees a partial set."""
    final = {k: Path(p) for k, p in paths.items()}
    tmp = {k: _temporary_name(p) for k, p in final.items()}
    for p in final.values():
        p.parent.mkdir(parents=True, exist_ok=True)
    try:
        yield tmp
        for key, path in final.items():
            os.replace(tmp[key], path)
    finally:
        for p in tmp.values():
            p.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)


def write_csv_atomic(frame, path: str | os.PathLike, **to_csv) -> Path:
    """Write a pandas DataFrame as CSV atomically (``index=False`` unless given)."""
    to_csv.setdefault("index", False)
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, **to_csv)
    return Path(path)


def save_figure(fig, path: str | os.PathLike, dpi: int) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    try:
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=dpi, format="png")
    finally:
        plt.close(fig)
    return Path(path)

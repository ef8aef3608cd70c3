"""Stage ``datasets_prepare``: a ``datasets:`` entry's source → ``results/data/<name>.zarr``,
the store every stage of the image chain reads (:mod:`eae.experiments.images.data`).

The content is checked before anything is written (:func:`check_raw`): numeric, finite,
enough samples for the splits, labels as long as ``x``; then the samples are split
(seeded; stratified by label when labelled), scaled with statistics of the training
split only, and written atomically with their provenance. The store holds

* ``images`` (sample, row, col[, channel]) for images, ``x`` (sample, feature) for vectors,
  float32 in the scaled units;
* ``split`` (sample,) int8 (0 train, 1 val, 2 test), ``source_index`` (sample,) int64;
* ``labels`` (sample,) int64 when the data have labels (class names in the
  ``label_names`` attribute when they came as strings or folder names);
* attrs: ``data_kind`` (vector, grey, rgb), ``scaling`` and its statistics,
  ``unit_interval`` (every stored value in [0, 1]: the decoder's sigmoid output and
  the VAE's Bernoulli likelihood follow it), ``value_range``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from eae.experiments.datasets.sources import RawData, read_source
from eae.experiments.images.data import (
    SPLIT_CODES,
    SPLITS,
    DataError,
    random_split,
    split_counts,
    split_sizes,
    stratified_split,
    write_store,
)

log = logging.getLogger("eae")

__all__ = ["check_raw", "sample_kind", "scale", "build_store", "prepare_dataset"]

#: The fewest samples a split may have when its fraction is above zero: the test split
#: feeds Table 1's activity measures and probes, training needs a batch.
MIN_TRAIN, MIN_TEST = 2, 2


def sample_kind(shape: tuple[int, ...], where: str) -> tuple[str, tuple[int, ...]]:
    """(``vector`` | ``grey`` | ``rgb``, the stored sample shape) for arrays of ``shape``
    [n, ...]: [n, d] vectors, [n, h, w] or [n, h, w, 1] grey, [n, h, w, 3] RGB."""
    if len(shape) == 2:
        return "vector", shape[1:]
    if len(shape) == 3:
        return "grey", shape[1:]
    if len(shape) == 4 and shape[3] == 1:
        return "grey", shape[1:3]
    if len(shape) == 4 and shape[3] == 3:
        return "rgb", shape[1:]
    raise DataError(f"{where}: samples of shape {list(shape)} are neither vectors [n, features] "
                    f"nor images [n, rows, cols] / [n, rows, cols, 1 or 3]")


def _labels_as_codes(y: np.ndarray, where: str) -> tuple[np.ndarray, tuple[str, ...] | None]:
    """Integer class labels as int64 (names None); string labels as codes into their
    sorted names."""
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{where}: labels must be one value per sample, got shape {list(y.shape)}")
    if y.dtype.kind in "US":
        names = tuple(str(v) for v in np.unique(y))
        return np.searchsorted(np.array(names), y.astype(str)).astype(np.int64), names
    if y.dtype.kind == "b":
        return y.astype(np.int64), None
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise DataError(f"{where}: labels must be integers or strings (class labels); "
                            f"found non-integer values such as {y[np.flatnonzero(y != np.round(y))[:3]]}")
        return y.astype(np.int64), None
    if y.dtype.kind in "iu":
        return y.astype(np.int64), None
    raise DataError(f"{where}: labels of dtype {y.dtype} are neither integers nor strings")


def check_raw(raw: RawData, split: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray | None,
                                                               tuple[str, ...] | None, str]:
    """(x float64, labels int64 or None, label names, data kind) after checking the content:
    numeric, finite, a known sample shape, labels as long as x, enough samples for the
    splits. Raises :class:`DataError` naming the file and the problem."""
    where = str(raw.info.path)
    x = np.asarray(raw.x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{where}: the samples are not numeric (dtype {x.dtype})")
    if x.ndim < 1 or x.shape[0] == 0:
        raise DataError(f"{where}: no samples (shape {list(x.shape)})")
    kind, sample_shape = sample_kind(tuple(x.shape), where)
    x = x.astype(np.float64).reshape((x.shape[0],) + tuple(sample_shape))
    bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
    if bad.any():
        first = np.flatnonzero(bad)[:5].tolist()
        raise DataError(f"{where}: {int(bad.sum())} sample(s) hold non-finite values (NaN or "
                        f"inf), e.g. sample(s) {first}")
    y, names = None, raw.label_names
    if raw.y is not None:
        if len(raw.y) != len(x):
            raise DataError(f"{where}: {len(raw.y)} labels for {len(x)} samples")
        y, string_names = _labels_as_codes(raw.y, where)
        if raw.label_names is None:
            names = string_names
    n_train, n_val, n_test = split_sizes(len(x), split)
    if n_train < MIN_TRAIN or n_test < MIN_TEST or (split["val"] > 0 and n_val < 1):
        raise DataError(f"{where}: {len(x)} samples are too few for the split (val "
                        f"{split['val']}, test {split['test']}: {n_train} train, {n_val} val, "
                        f"{n_test} test; need >= {MIN_TRAIN} train, >= {MIN_TEST} test and one "
                        f"val sample when val > 0)")
    return x, y, names, kind


def scale(x: np.ndarray, train: np.ndarray, method: str) -> tuple[np.ndarray, dict[str, Any]]:
    """``x`` scaled with statistics of the training rows ``train`` (a boolean mask), and
    the statistics (for the store's attributes). ``minmax`` clips the other splits to
    [0, 1] (their values outside the training range are counted: ``clipped_values``)."""
    if method == "none":
        return x, {}
    if method == "minmax":
        lo, hi = float(x[train].min()), float(x[train].max())
        span = hi - lo if hi > lo else 1.0
        scaled = (x - lo) / span
        outside = int(((scaled < 0) | (scaled > 1)).sum())
        return np.clip(scaled, 0.0, 1.0), {"scaling_min": lo, "scaling_max": hi,
                                           "clipped_values": outside}
    if method == "standardize":
        mean = x[train].mean(axis=0)
        std = x[train].std(axis=0)
        constant = int((std == 0).sum())
        std = np.where(std > 0, std, 1.0)  # constant features stay at 0 rather than NaN
        return (x - mean) / std, {"scaling_mean": mean, "scaling_std": std,
                                  "constant_features": constant}
    raise DataError(f"unknown scaling {method!r}; known: minmax, none, standardize")


def _split_codes(n: int, labels: np.ndarray | None, split: Mapping[str, Any]) -> np.ndarray:
    rng = np.random.default_rng(split["seed"])
    fractions = {"val": split["val"], "test": split["test"]}
    if labels is None:
        return random_split(n, fractions, rng)
    return stratified_split(labels, fractions, rng)


def build_store(name: str, x: np.ndarray, labels, label_names, kind: str,
                entry: Mapping[str, Any], details: Mapping[str, Any]) -> xr.Dataset:
    """The prepared Dataset: split (grouped train, val, test, each in source order),
    scaled, with the attributes the image chain reads."""
    codes = _split_codes(len(x), labels, entry["split"])
    order = np.concatenate([np.flatnonzero(codes == SPLIT_CODES[s]) for s in SPLITS])
    x, codes = x[order], codes[order]
    scaled, stats = scale(x, codes == SPLIT_CODES["train"], entry["scaling"])
    scaled = scaled.astype(np.float32)
    sample_dims = ("feature",) if kind == "vector" else ("row", "col", "channel")[:scaled.ndim - 1]
    var = "x" if kind == "vector" else "images"
    data_vars: dict[str, Any] = {
        var: (("sample",) + sample_dims, scaled, {"long_name": f"{name} samples ({entry['scaling']} scaling)"}),
        "split": (("sample",), codes.astype(np.int8),
                  {"flag_values": list(SPLIT_CODES.values()), "flag_meanings": " ".join(SPLITS)}),
        "source_index": (("sample",), order.astype(np.int64),
                         {"long_name": "index of the sample in the source"}),
    }
    for key in ("scaling_mean", "scaling_std"):
        if key in stats:
            data_vars[key] = (sample_dims, np.asarray(stats.pop(key), np.float32))
    if labels is not None:
        data_vars["labels"] = (("sample",), labels[order].astype(np.int64), {"long_name": "class label"})
    coords = {"sample": np.arange(len(scaled))}
    coords.update({d: np.arange(s) for d, s in zip(sample_dims, scaled.shape[1:])})
    lo, hi = float(scaled.min()), float(scaled.max())
    attrs = {"dataset": name, "data_kind": kind, "scaling": entry["scaling"],
             "unit_interval": bool(lo >= 0.0 and hi <= 1.0), "value_range": [lo, hi],
             "split_rule": "stratified by label" if labels is not None else "random",
             **stats}
    if label_names is not None:
        attrs["label_names"] = list(label_names)
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def prepare_dataset(name: str, entry: Mapping[str, Any], out_path: str | os.PathLike,
                    base_dir: str | os.PathLike = ".") -> Path:
    """Stage ``datasets_prepare``: read, check, split, scale and write the entry's store
    (with a provenance record naming the source file and its checksum). Any problem with
    the source raises :class:`DataError` before anything is written."""
    from eae.support.config import section
    from eae.support.provenance import make_record, now_iso

    started = now_iso()
    entry = section(f"datasets.{name}", entry)
    raw = read_source(name, entry, base_dir)
    x, labels, names, kind = check_raw(raw, entry["split"])
    ds = build_store(name, x, labels, names, kind, entry, raw.details)
    counts = split_counts(ds)
    log.info("%s: %d %s samples of shape %s from %s (%s); split %s; labels: %s", name,
             len(x), kind, list(x.shape[1:]), raw.info.path, raw.info.format, counts,
             "none" if labels is None else f"{len(np.unique(labels))} classes")
    data_cfg = {k: v for k, v in entry.items() if k not in ("model", "eae", "vae", "ae", "enabled")}
    record = make_record("datasets_prepare", config=data_cfg, seeds={"split": entry["split"]["seed"]},
                         inputs=_source_files(raw.info.path), started=started,
                         extra={"split_counts": counts, "format": raw.info.format,
                                "data_kind": kind, "source": dict(raw.details)},
                         modules=["eae.experiments.datasets.prepare"])
    return write_store(ds, out_path, record)


def _source_files(path: Path, limit: int = 1000) -> list[Path]:
    """The files a provenance record checksums: the file, or a folder's files (sorted;
    at most ``limit`` of them, so that a large image folder stays a small record)."""
    if path.is_file():
        return [path]
    files = sorted(p for p in path.rglob("*") if p.is_file())
    return files[:limit]

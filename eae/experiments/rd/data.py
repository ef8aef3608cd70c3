"""Reaction–diffusion dataset preparation: train/val/test snapshots, flattened (SPEC §3.1).

From a simulation store (:func:`eae.experiments.rd.simulate.simulate_stage`) the last ``n_test`` snapshots
form the test set; ``n_train`` training and ``n_val`` validation snapshots are drawn
without replacement (disjoint) from the first ``floor(pool_fraction · N)`` snapshots —
with the paper's 10 001 snapshots: 4000 + 1000 from the first 9000, test the final 1000.

Output store variables: ``x``, ``x_dot`` (sample, pixel) float32 — each snapshot of
f·u and f·u_t flattened row-major over (y, x) — and ``split`` (sample,) int8 with
flag_values [0, 1, 2] = train, val, test; coords ``time`` and ``snapshot`` (index into
the simulation). Samples are stored train, then val, then test, each in time order.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np
import xarray as xr

from eae.support.settings import settings_from

log = logging.getLogger("eae")

SPLITS = {"train": 0, "val": 1, "test": 2}


@dataclass(frozen=True)
class RDDataParams:
    """The ``rd.data`` config section."""

    n_train: int = 4000
    n_val: int = 1000
    n_test: int = 1000
    pool_fraction: float = 0.9  # train/val are drawn from the first floor(fraction·N) snapshots
    seed: int = 0
    chunk_samples: int = 500  # samples per Zarr chunk


def data_params_from_config(cfg: Mapping[str, Any] | RDDataParams) -> RDDataParams:
    """Validate the ``rd.data`` config mapping."""
    if isinstance(cfg, RDDataParams):
        params = cfg
    else:
        params = settings_from(RDDataParams, cfg, "rd.data")
    if min(params.n_train, params.n_val, params.n_test) < 1:
        raise ValueError(f"rd.data: n_train, n_val, n_test must be >= 1 (got {asdict(params)})")
    if not 0.0 < params.pool_fraction < 1.0:
        raise ValueError(f"rd.data: pool_fraction must be in (0, 1) (got {params.pool_fraction})")
    if params.chunk_samples < 1:
        raise ValueError(f"rd.data: chunk_samples must be >= 1 (got {params.chunk_samples})")
    return params


def split_indices(n_snapshots: int, params: RDDataParams) -> dict[str, np.ndarray]:
    """Snapshot indices of each split (sorted), checked to be disjoint and in range."""
    pool = math.floor(params.pool_fraction * n_snapshots)
    first_test = n_snapshots - params.n_test
    if first_test < pool:
        raise ValueError(
            f"rd.data: the test set (last n_test = {params.n_test} of {n_snapshots} snapshots) "
            f"overlaps the train/val pool (first pool_fraction·N = {pool}); lower n_test or "
            f"pool_fraction, or simulate longer")
    if params.n_train + params.n_val > pool:
        raise ValueError(
            f"rd.data: n_train + n_val = {params.n_train + params.n_val} exceeds the pool of "
            f"{pool} snapshots (pool_fraction = {params.pool_fraction} of {n_snapshots})")
    rng = np.random.default_rng(params.seed)
    chosen = rng.choice(pool, size=params.n_train + params.n_val, replace=False)
    return {
        "train": np.sort(chosen[: params.n_train]),
        "val": np.sort(chosen[params.n_train:]),
        "test": np.arange(first_test, n_snapshots),
    }


def build_rd_dataset(sim: xr.Dataset, params: RDDataParams) -> xr.Dataset:
    """The flattened split dataset from an opened simulation Dataset (in memory)."""
    for name in ("field", "field_dot"):
        if name not in sim or sim[name].dims != ("time", "y", "x"):
            raise ValueError(f"rd.data: simulation store lacks variable {name!r} with dims "
                             f"(time, y, x) (has {list(sim.data_vars)})")
    n_snapshots = sim.sizes["time"]
    idx = split_indices(n_snapshots, params)
    order = np.concatenate([idx["train"], idx["val"], idx["test"]])
    split = np.concatenate([np.full(len(idx[s]), code, dtype=np.int8) for s, code in SPLITS.items()])
    ny, nx = sim.sizes["y"], sim.sizes["x"]

    def flat(name: str) -> np.ndarray:
        # Orthogonal indexing on the lazily opened store reads only the needed chunks.
        values = sim[name].isel(time=order).values.astype(np.float32, copy=False)
        return values.reshape(len(order), ny * nx)

    x, x_dot = flat("field"), flat("field_dot")
    if not (np.isfinite(x).all() and np.isfinite(x_dot).all()):
        raise ValueError("rd.data: the simulation holds non-finite values")
    ds = xr.Dataset(
        data_vars={
            "x": (("sample", "pixel"), x, {"long_name": "x = f*u, flattened row-major over (y, x)"}),
            "x_dot": (("sample", "pixel"), x_dot,
                      {"long_name": "x_dot = f*u_t, flattened row-major over (y, x)"}),
            "split": (("sample",), split,
                      {"flag_values": [0, 1, 2], "flag_meanings": "train val test"}),
        },
        coords={
            "time": (("sample",), sim["time"].values[order]),
            "snapshot": (("sample",), order.astype(np.int64),
                         {"long_name": "index of the snapshot in the simulation store"}),
        },
        attrs={
            "grid_shape": [int(ny), int(nx)],
            "grid_y": [float(sim["y"].values[0]), float(sim["y"].values[-1])],
            "grid_x": [float(sim["x"].values[0]), float(sim["x"].values[-1])],
            "pixel_order": "row-major over (y, x): pixel = iy * nx + ix",
            "n_snapshots_simulated": int(n_snapshots),
            **{k: v for k, v in asdict(params).items()},
        },
    )
    return ds


def prepare_rd_dataset(sim_path: str | os.PathLike, cfg: Mapping[str, Any],
                       out_path: str | os.PathLike) -> None:
    """Pipeline stage: write results/rd/dataset.zarr from the simulation store."""
    from eae.support.io import open_zarr, read_provenance, write_zarr
    from eae.support.provenance import make_record, now_iso

    started = now_iso()
    params = data_params_from_config(cfg)
    sim = open_zarr(sim_path)
    ds = build_rd_dataset(sim, params)
    counts = {s: int((ds["split"].values == c).sum()) for s, c in SPLITS.items()}
    log.info("prepare_rd: %s -> %s samples %s, %d pixels", sim_path, out_path, counts,
             ds.sizes["pixel"])
    chunk = (min(params.chunk_samples, ds.sizes["sample"]), ds.sizes["pixel"])
    for name in ("x", "x_dot"):
        ds[name].encoding["chunks"] = chunk  # by sample, without dask
    record = make_record(
        "rd_prepare", config=asdict(params), seeds={"split": params.seed}, inputs=[sim_path],
        started=started,
        extra={"simulation_config": read_provenance(sim).get("config", {})},
    )
    write_zarr(ds, out_path, provenance=record)


def load_rd_split(path: str | os.PathLike, split: str) -> dict[str, np.ndarray]:
    """One split of an RD dataset store: dict(x=float32 [n, pixel], x_dot=..., time=[n])."""
    from eae.support.io import open_zarr

    if split not in SPLITS:
        raise ValueError(f"load_rd_split: split must be one of {list(SPLITS)}, got {split!r}")
    ds = open_zarr(path)
    rows = np.flatnonzero(ds["split"].values == SPLITS[split])
    sub = ds.isel(sample=rows)
    return {
        "x": np.asarray(sub["x"].values, dtype=np.float32),
        "x_dot": np.asarray(sub["x_dot"].values, dtype=np.float32),
        "time": np.asarray(sub["time"].values, dtype=np.float64),
    }

"""What one sweep point of each experiment runs (registered in
:mod:`eae.experiments.sweep.points`): its base eae config and its ``run`` — train,
sample the ensemble, score.

Every ``run`` returns the same metrics (the keys of :data:`METRIC_KEYS`):
``test_mse`` (decoder applied to the ensemble-mean code, on the experiment's own
scale), active units of the ensemble-mean code (``active_units``, threshold
``analysis.active_threshold``), of all latent samples (``active_units_all_samples``)
and relative to the mean unit variance (``active_units_relative``, ``code_scale``),
``pcs_99``, ``probe_accuracy`` (NaN without labels), ``latent_dim``, ``n_test``,
``train_loss_final`` / ``val_loss_final`` (the training loss at the last decoder
update, NaN without a validation split), ``temperature_reached`` (target T at the
last training step) and the wall times ``train_s`` / ``ensemble_s``.
"""

from __future__ import annotations

import functools
import math
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np

#: What every experiment's ``run`` returns.
METRIC_KEYS = ("test_mse", "active_units", "active_units_all_samples", "active_units_relative",
               "code_scale", "pcs_99", "probe_accuracy", "latent_dim", "n_test",
               "train_loss_final", "val_loss_final", "temperature_reached", "train_s",
               "ensemble_s")

#: Names an ensemble store may give its (member, sample, unit) codes, in order of
#: preference: images and faces ``latent``, the SINDy-EAE ``latent_code``.
CODE_VARIABLES = ("latent", "latent_code", "z")


def code_variable(ds) -> str | None:
    """The code variable of an ensemble store (:data:`CODE_VARIABLES`), None when it has none."""
    return next((name for name in CODE_VARIABLES if name in ds.data_vars), None)


def _without_ensemble(cfg: Mapping[str, Any]) -> dict[str, Any]:
    # Without the ensemble block, so that the training checkpoint survives a change of
    # ensemble settings (the rerun then only samples and scores).
    return {k: v for k, v in cfg.items() if k != "ensemble"}


def _train_and_sample(train, sample, cfg: Mapping[str, Any], data, paths: Mapping[str, Path],
                      checkpoint_dir):
    """``train`` (resuming from ``checkpoint_dir``) then ``sample`` the ensemble store;
    (history, t0, t1, t2) with the wall clock before, between and after."""
    t0 = time.perf_counter()
    history = train(_without_ensemble(cfg), data, paths["model"], checkpoint_dir=checkpoint_dir)
    t1 = time.perf_counter()
    sample(dict(cfg), data, paths["model"], paths["ensemble"])
    return history, t0, t1, time.perf_counter()


def _run_metrics(row: Mapping[str, Any], history, t0: float, t1: float, t2: float) -> dict[str, Any]:
    last = history.iloc[-1]
    out = {k: row[k] for k in METRIC_KEYS[:9]}
    out.update(
        train_loss_final=float(last["loss_mean"]),
        val_loss_final=float(last["val_loss"]) if "val_loss" in last else math.nan,
        temperature_reached=float(last["temperature"]),
        train_s=t1 - t0,
        ensemble_s=t2 - t1,
    )
    return out


# --------------------------------------------------------------------------- base configs


def image_eae_config(config: Mapping[str, Any], experiment: str, temperature: float) -> Mapping[str, Any]:
    """``<experiment>.eae`` (mnist, frey)."""
    return config[experiment]["eae"]


def dataset_eae_config(config: Mapping[str, Any], experiment: str, temperature: float) -> dict[str, Any]:
    """A ``datasets:`` entry's EAE: its shared ``model`` block with its ``eae`` settings."""
    entry = config["datasets"][experiment]
    return {"model": entry["model"], **entry["eae"]}


def faces_eae_config(config: Mapping[str, Any], experiment: str, temperature: float) -> dict[str, Any]:
    """The faces run config at ``temperature``
    (:func:`eae.experiments.faces.eae.ensemble_config`: model, sampler, train, ensemble).
    ``faces.sampler.final_temperature_factor`` is superseded by the point's schedule."""
    from eae.experiments.faces.eae import ensemble_config

    return ensemble_config(config["faces"], temperature)


def rd_eae_config(config: Mapping[str, Any], experiment: str, temperature: float) -> Mapping[str, Any]:
    """``rd.eae`` (model, loss, sampler, train, ensemble)."""
    return config["rd"]["eae"]


# --------------------------------------------------------------------------- runs


def image_point(cfg: Mapping[str, Any], inputs: Mapping[str, str], paths: Mapping[str, Path],
                checkpoint_dir, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """A point of an image experiment: the ``train_eae`` and ``ensemble`` stages, then
    Table 1's EAE metrics (decoder applied to the ensemble-mean code).
    ``temperature_reached``: the target T at the last training step (history.csv)."""
    from eae.core.ensemble import ensemble_stage
    from eae.experiments.images.metrics import eae_metrics, load_test_data
    from eae.experiments.images.eae import IMAGES, train_images_stage

    data = inputs["data"]
    history, t0, t1, t2 = _train_and_sample(
        train_images_stage, functools.partial(ensemble_stage, IMAGES), cfg, data, paths,
        checkpoint_dir)
    x_test, labels, _ = load_test_data(data)
    row = eae_metrics({"eae": Path(paths["model"]), "ensemble": Path(paths["ensemble"])},
                      x_test, labels, analysis)
    return _run_metrics(row, history, t0, t1, t2)


def faces_point(cfg: Mapping[str, Any], inputs: Mapping[str, str], paths: Mapping[str, Path],
                checkpoint_dir, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """A point of the faces experiment: :func:`~eae.experiments.faces.eae.train_faces_stage`
    and :func:`~eae.experiments.faces.eae.ensemble_faces_stage`, then Table 1's EAE metrics
    (:func:`eae.experiments.images.metrics.eae_metrics`) on the store's test faces scaled to
    [0, 1] (:func:`eae.experiments.faces.data.to_float`), the scale of faces.csv's test
    MSE (:func:`eae.experiments.faces.report.faces_metrics`). ``probe_accuracy`` is NaN: the
    faces have no labels. Losses: MSE per pixel of the [0, 1] images."""
    from eae.experiments.faces.data import load_faces_at, to_float
    from eae.experiments.faces.eae import ensemble_faces_stage, train_faces_stage
    from eae.experiments.images.metrics import eae_metrics
    from eae.support.io import open_zarr

    data = inputs["data"]
    history, t0, t1, t2 = _train_and_sample(train_faces_stage, ensemble_faces_stage, cfg, data,
                                            paths, checkpoint_dir)
    store_index = np.asarray(open_zarr(paths["ensemble"])["store_index"].values)
    faces = to_float(load_faces_at(data, store_index))
    row = eae_metrics({"eae": Path(paths["model"]), "ensemble": Path(paths["ensemble"])},
                      faces.reshape(len(faces), -1), None, analysis)
    return _run_metrics(row, history, t0, t1, t2)


def rd_point(cfg: Mapping[str, Any], inputs: Mapping[str, str], paths: Mapping[str, Path],
             checkpoint_dir, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """A point of the SINDy-EAE on reaction–diffusion:
    :func:`~eae.experiments.rd.eae.train_sindy_stage` and
    :func:`~eae.experiments.rd.eae.coefficients_stage`, then :func:`code_metrics` of the
    store's ``latent_code``: ``test_mse`` is the MSE of x on the test split (the data
    store's scale, the one the loss's x term sees) reconstructed by the decoder from the
    ensemble-mean code; active units and PCs as Table 1 computes them (their threshold
    is calibrated for image codes; read them with the 2-D SINDy latent in mind);
    ``probe_accuracy`` is NaN (no labels). ``train_loss_final`` / ``val_loss_final`` are
    the full SINDy loss (x and ẋ terms), not the x MSE."""
    from eae.experiments.rd.data import load_rd_split
    from eae.experiments.rd.eae import coefficients_stage, train_sindy_stage

    data = inputs["data"]
    history, t0, t1, t2 = _train_and_sample(train_sindy_stage, coefficients_stage, cfg, data,
                                            paths, checkpoint_dir)
    x_test = load_rd_split(data, "test")["x"]
    row = code_metrics(paths["ensemble"], paths["model"], x_test, analysis)
    return _run_metrics(row, history, t0, t1, t2)


def code_metrics(store, model_dir, x_test: np.ndarray, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """Table 1's EAE metrics of a store whose codes are not called ``latent`` (one
    streaming pass over the members, the functions of
    :mod:`eae.experiments.images.metrics`): test MSE of ``decoder(ensemble-mean code)``
    against ``x_test`` [n, features], active units / relative active units / PCs of the
    ensemble-mean code, active units of all samples; probe NaN (no labels)."""
    from eae.experiments.images.metrics import (StreamingMoments, active_units,
                                                active_units_from_variance, decode, load_model,
                                                pcs_for_variance, relative_active_units)
    from eae.support.io import open_ensemble

    ds = open_ensemble(store)
    name = code_variable(ds)
    if name is None:
        raise KeyError(f"ensemble store {store} has no code variable (one of {list(CODE_VARIABLES)})")
    codes = ds[name]
    if codes.ndim != 3 or codes.dims[:2] != ("member", "sample"):
        raise ValueError(f"{store}: {name!r} must have dims (member, sample, unit), got {codes.dims}")
    n_members, n_samples, dim = (int(s) for s in codes.shape)
    x_test = np.asarray(x_test).reshape(len(x_test), -1)
    if n_samples != len(x_test):
        raise ValueError(f"ensemble store {store} has {n_samples} samples but the test split has "
                         f"{len(x_test)}; they come from different data")
    moments = StreamingMoments(dim)
    total = np.zeros((n_samples, dim))
    chunk = int(analysis["chunk_members"])
    for start in range(0, n_members, chunk):
        for z in np.asarray(codes.isel(member=slice(start, start + chunk)).values, np.float64):
            moments.update(z)
            total += z
    z_mean = (total / n_members).astype(np.float32)
    recon = decode(load_model(Path(model_dir) / "decoder.keras"), z_mean, int(analysis["batch_size"]))
    if recon.shape != x_test.shape:
        raise ValueError(f"decoder output {recon.shape[1:]} differs from the test data {x_test.shape[1:]}")
    threshold = float(analysis["active_threshold"])
    relative, scale = relative_active_units(z_mean, analysis["relative_active_fraction"])
    return {
        "test_mse": float(np.mean((recon.astype(np.float64) - x_test.astype(np.float64)) ** 2)),
        "active_units": active_units(z_mean, threshold),
        "active_units_all_samples": active_units_from_variance(moments.variance, threshold),
        "active_units_relative": relative,
        "code_scale": scale,
        "pcs_99": pcs_for_variance(z_mean, analysis["pca_variance"]),
        "probe_accuracy": math.nan,
        "latent_dim": dim,
        "n_test": n_samples,
    }

"""Table 1 of the image experiments (SPEC §3.2): reconstruction error, latent activity
and two scale-free diagnostics for the EAE, the VAE, the vanilla AE and a PCA reference.

Per dataset and model (rows of ``results/<dataset>/metrics.csv``):

* ``test_mse`` — mean over test images and pixels of (reconstruction − x)². EAE: the
  decoder applied to the ensemble-mean code z̄(x); VAE: the decoder's sigmoid output
  for the posterior mean μ(x) (no sampling); AE: the decoder of the code; PCA: the
  rank-``latent_dim`` reconstruction fitted on the training split.
* ``active_units`` — latent dimensions whose variance over the test set exceeds
  ``active_threshold`` (Burda et al. 2015). VAE: of the posterior mean; AE and PCA: of
  the code; EAE: of the ensemble-mean code. The EAE also gets
  ``active_units_all_samples`` (variance over all M × N latent samples, streamed over
  members in float64) and ``active_units_member_mean`` (per member, the number of
  dimensions whose variance over the test set exceeds the threshold, averaged over
  members: the data-dependent part of the activity, without the member-to-member drift).
* ``active_units_relative`` — dimensions whose variance over the test set is at least
  ``relative_active_fraction`` (1 %) of the mean per-unit variance of the same codes,
  and ``code_scale``, that mean: nothing fixes the scale of an EAE's or an AE's codes
  (measured: per-unit variances of 100–630 on MNIST, so "variance > 0.01" holds
  trivially), whereas the VAE's KL term fixes its own; the relative count is scale-free.
* ``pcs_99`` — principal components holding ``pca_variance`` of the code variance
  (unaffected by a global rescaling of the codes, unlike the fixed 0.01 threshold).
* ``probe_accuracy`` — k-NN (or logistic) accuracy of the labels from the test-set
  codes, ``probe.folds``-fold cross-validated (the EAE ensemble exists for test images
  only, so every model is probed the same way); NaN without labels.

:func:`table1_stage` collects the per-dataset CSVs into ``table1.csv`` / ``table1.md``.
"""

from __future__ import annotations

import copy
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from eae.support.io import write_csv_atomic, write_text_atomic
from eae.core.temperature import TEMPERATURE_COLUMNS, store_temperature_columns

log = logging.getLogger("eae")

__all__ = [
    "DEFAULTS",
    "TABLE1_SETTINGS",
    "MODEL_LABELS",
    "DATASET_LABELS",
    "resolve_config",
    "code_variances",
    "active_units",
    "active_units_from_variance",
    "relative_active_units",
    "pcs_for_variance",
    "pcs_from_covariance",
    "knn_predict",
    "logistic_predict",
    "probe_accuracy",
    "cross_validated_probe",
    "StreamingMoments",
    "ensemble_statistics",
    "pca_fit",
    "pca_reference",
    "dataset_paths",
    "analysis_inputs",
    "load_test_data",
    "model_metrics",
    "metrics_stage",
    "table1_stage",
]

#: Defaults of the ``analysis`` config section (workflow/schemas/analysis.schema.yaml).
DEFAULTS: dict[str, Any] = {
    "models": ["eae", "vae", "ae"],
    "pca_reference": True,
    "active_threshold": 0.01,
    "relative_active_fraction": 0.01,
    "pca_variance": 0.99,
    "probe": {"kind": "knn", "k": 10, "folds": 5, "l2": 1e-3, "max_iter": 300},
    "chunk_members": 20,
    "batch_size": 1024,
    "seed": 0,
    "interpolate": {"classes": [3, 8], "steps": 9, "vae_code": "sample"},
    "density_dims": 3,
    "density_members": 50,
    "density_max_points": 20000,
    "n_samples": 16,
    "sample_members": 7,
    "ae_samples": True,
    "dpi": 120,
}

#: The ``analysis`` settings Table 1 depends on (rule ``metrics`` gets only these, so a
#: figure setting such as ``dpi`` reruns the figures, not the table).
TABLE1_SETTINGS = ("models", "pca_reference", "active_threshold", "relative_active_fraction",
                   "pca_variance", "probe", "chunk_members", "batch_size", "seed")

MODELS = ("eae", "vae", "ae")
MODEL_LABELS = {"eae": "EAE", "vae": "VAE", "ae": "Vanilla AE", "pca": "PCA"}
DATASET_LABELS = {"mnist": "MNIST", "frey": "Frey Faces"}
PROBE_KINDS = ("knn", "logistic")

#: Columns of metrics.csv, in order.
COLUMNS = [
    "dataset", "model", "label", "latent_dim", "n_test", "n_members",
    "test_mse", "mse_of", "test_mse_chain_min", "test_mse_chain_max",
    "active_threshold", "active_units", "active_of",
    "active_units_all_samples", "active_units_member_mean",
    "relative_active_fraction", "active_units_relative", "code_scale",
    "pca_variance", "pcs_99", "pcs_99_all_samples",
    "probe", "probe_accuracy", "probe_chance",
]


# --------------------------------------------------------------------------- config


def resolve_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` merged over :data:`DEFAULTS` (nested blocks too), checked; clear errors
    name the offending ``analysis.<key>``."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"unknown analysis config key(s): {unknown}; allowed: {sorted(DEFAULTS)}")
    out = copy.deepcopy(DEFAULTS)
    for key, value in cfg.items():
        if isinstance(DEFAULTS[key], dict):
            sub = dict(value or {})
            bad = sorted(set(sub) - set(DEFAULTS[key]))
            if bad:
                raise ValueError(f"unknown key(s) analysis.{key}.{bad}; allowed: {sorted(DEFAULTS[key])}")
            out[key].update(sub)
        else:
            out[key] = copy.deepcopy(value)
    models = list(out["models"])
    if not set(models) <= set(MODELS) or len(set(models)) != len(models):
        raise ValueError(f"analysis.models must be distinct names from {list(MODELS)}, got {models}")
    if not 0 < float(out["pca_variance"]) <= 1:
        raise ValueError(f"analysis.pca_variance must be in (0, 1], got {out['pca_variance']}")
    if not 0 < float(out["relative_active_fraction"]) <= 1:
        raise ValueError("analysis.relative_active_fraction must be in (0, 1], got "
                         f"{out['relative_active_fraction']}")
    if float(out["active_threshold"]) < 0:
        raise ValueError(f"analysis.active_threshold must be >= 0, got {out['active_threshold']}")
    probe = out["probe"]
    if probe["kind"] not in PROBE_KINDS:
        raise ValueError(f"analysis.probe.kind must be one of {list(PROBE_KINDS)}, got {probe['kind']!r}")
    for key, minimum in (("k", 1), ("folds", 2), ("max_iter", 1)):
        if int(probe[key]) < minimum:
            raise ValueError(f"analysis.probe.{key} must be >= {minimum}, got {probe[key]}")
    for key in ("chunk_members", "batch_size", "density_dims", "density_members",
                "density_max_points", "n_samples", "sample_members", "dpi"):
        if int(out[key]) < 1:
            raise ValueError(f"analysis.{key} must be >= 1, got {out[key]}")
    interp = out["interpolate"]
    if len(interp["classes"]) != 2 or interp["classes"][0] == interp["classes"][1]:
        raise ValueError(f"analysis.interpolate.classes must be two different labels, got {interp['classes']}")
    if int(interp["steps"]) < 2:
        raise ValueError(f"analysis.interpolate.steps must be >= 2, got {interp['steps']}")
    if interp["vae_code"] not in ("sample", "mean"):
        raise ValueError(f"analysis.interpolate.vae_code must be 'sample' or 'mean', got {interp['vae_code']!r}")
    return out


# --------------------------------------------------------------------------- activity


def code_variances(codes: np.ndarray) -> np.ndarray:
    """Per-dimension variance (ddof 0) of ``codes`` [n, d] over samples, in float64."""
    codes = _as_2d(codes, "codes")
    return codes.astype(np.float64).var(axis=0)


def active_units_from_variance(variances: np.ndarray, threshold: float = 0.01) -> int:
    """Number of dimensions whose variance exceeds ``threshold`` (strictly)."""
    return int(np.count_nonzero(np.asarray(variances, np.float64) > threshold))


def active_units(codes: np.ndarray, threshold: float = 0.01) -> int:
    """Active units (Burda et al. 2015): dimensions of ``codes`` [n, d] whose variance over
    the samples exceeds ``threshold``."""
    return active_units_from_variance(code_variances(codes), threshold)


def relative_active_units(codes: np.ndarray, fraction: float = 0.01) -> tuple[int, float]:
    """Scale-free activity: (dimensions of ``codes`` [n, d] whose variance over the
    samples is at least ``fraction`` × the mean per-unit variance, that mean). Unchanged
    when all codes are rescaled by one factor, unlike :func:`active_units`; 0 units
    (and scale 0) for constant codes."""
    variances = code_variances(codes)
    scale = float(variances.mean()) if variances.size else 0.0
    if scale <= 0:
        return 0, scale
    return int(np.count_nonzero(variances >= fraction * scale)), scale


def pcs_from_covariance(cov: np.ndarray, fraction: float = 0.99) -> int:
    """Smallest number of principal components whose eigenvalues hold ``fraction`` of
    the trace of ``cov`` (0 for a zero covariance)."""
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    eig = np.clip(np.linalg.eigvalsh(np.asarray(cov, np.float64)), 0.0, None)[::-1]
    total = eig.sum()
    if total <= 0:
        return 0
    cum = np.cumsum(eig) / total
    # A relative tolerance keeps fraction=1 from failing on round-off in the last digits.
    return int(min(len(eig), np.searchsorted(cum, fraction - 1e-12) + 1))


def pcs_for_variance(codes: np.ndarray, fraction: float = 0.99) -> int:
    """Number of principal components holding ``fraction`` of the variance of ``codes``."""
    codes = _as_2d(codes, "codes").astype(np.float64)
    if codes.shape[0] < 2:
        return 0
    return pcs_from_covariance(np.cov(codes, rowvar=False, ddof=0).reshape(codes.shape[1], -1), fraction)


def _as_2d(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D [samples, dims], got shape {a.shape}")
    return a


# --------------------------------------------------------------------------- probes


def knn_predict(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                k: int = 10, block: int = 1024) -> np.ndarray:
    """Majority vote of the ``k`` nearest training codes (Euclidean, exact brute force,
    which is faster than a k-d tree in 64 dimensions). Ties go to the tied class with
    the nearest neighbour."""
    train = _as_2d(train_codes, "train_codes").astype(np.float64)
    test = _as_2d(test_codes, "test_codes").astype(np.float64)
    if train.shape[1] != test.shape[1]:
        raise ValueError(f"train codes have {train.shape[1]} dims, test codes {test.shape[1]}")
    classes, y = np.unique(np.asarray(train_labels), return_inverse=True)
    if len(y) != len(train):
        raise ValueError("train_labels and train_codes differ in length")
    k = int(min(k, len(train)))
    n_cls = len(classes)
    sq = np.einsum("ij,ij->i", train, train)
    out = np.empty(len(test), dtype=classes.dtype)
    for start in range(0, len(test), block):
        q = test[start:start + block]
        d2 = sq[None, :] - 2.0 * q @ train.T  # + |q|², constant per row
        idx = np.argpartition(d2, k - 1, axis=1)[:, :k] if k < len(train) else \
            np.tile(np.arange(len(train)), (len(q), 1))
        order = np.argsort(np.take_along_axis(d2, idx, axis=1), axis=1, kind="stable")
        lab = y[np.take_along_axis(idx, order, axis=1)]  # (b, k), nearest first
        rows = np.arange(len(q))[:, None]
        counts = np.zeros((len(q), n_cls), np.int64)
        np.add.at(counts, (np.broadcast_to(rows, lab.shape), lab), 1)
        first = np.full((len(q), n_cls), k, np.int64)
        for r in range(k - 1, -1, -1):
            first[rows[:, 0], lab[:, r]] = r
        score = counts * (k + 1) + (k - first)
        out[start:start + block] = classes[np.argmax(score, axis=1)]
    return out


def logistic_predict(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                     l2: float = 1e-3, max_iter: int = 300) -> np.ndarray:
    """Multinomial logistic regression (L-BFGS, L2 penalty ``l2`` on standardised
    features, unpenalised bias) fitted on the training codes; returns test predictions."""
    from scipy.optimize import minimize
    from scipy.special import logsumexp

    train = _as_2d(train_codes, "train_codes").astype(np.float64)
    test = _as_2d(test_codes, "test_codes").astype(np.float64)
    classes, y = np.unique(np.asarray(train_labels), return_inverse=True)
    mu, sd = train.mean(0), train.std(0)
    sd[sd < 1e-12] = 1.0  # constant dimensions carry no information; avoid 0/0
    xs = np.hstack([(train - mu) / sd, np.ones((len(train), 1))])
    n, d1 = xs.shape
    n_cls = len(classes)
    onehot = np.zeros((n, n_cls))
    onehot[np.arange(n), y] = 1.0
    penal = np.ones((d1, 1))
    penal[-1] = 0.0

    def loss_grad(w):
        W = w.reshape(d1, n_cls)
        logits = xs @ W
        lse = logsumexp(logits, axis=1, keepdims=True)
        p = np.exp(logits - lse)
        loss = -np.sum(onehot * (logits - lse)) / n + 0.5 * l2 * np.sum(penal * W * W)
        grad = xs.T @ (p - onehot) / n + l2 * penal * W
        return loss, grad.ravel()

    res = minimize(loss_grad, np.zeros(d1 * n_cls), jac=True, method="L-BFGS-B",
                   options={"maxiter": int(max_iter)})
    W = res.x.reshape(d1, n_cls)
    xt = np.hstack([(test - mu) / sd, np.ones((len(test), 1))])
    return classes[np.argmax(xt @ W, axis=1)]


def probe_accuracy(train_codes: np.ndarray, train_labels: np.ndarray, test_codes: np.ndarray,
                   test_labels: np.ndarray, kind: str = "knn", k: int = 10, l2: float = 1e-3,
                   max_iter: int = 300) -> float:
    """Accuracy of a k-NN (``kind="knn"``) or logistic probe trained on
    (``train_codes``, ``train_labels``) and scored on the test pair."""
    test_labels = np.asarray(test_labels)
    if len(test_labels) != len(test_codes):
        raise ValueError("test_labels and test_codes differ in length")
    if kind == "knn":
        pred = knn_predict(train_codes, train_labels, test_codes, k=k)
    elif kind == "logistic":
        pred = logistic_predict(train_codes, train_labels, test_codes, l2=l2, max_iter=max_iter)
    else:
        raise ValueError(f"probe kind must be one of {list(PROBE_KINDS)}, got {kind!r}")
    return float(np.mean(pred == test_labels)) if len(test_labels) else float("nan")


def cross_validated_probe(codes: np.ndarray, labels: np.ndarray, folds: int = 5, seed: int = 0,
                          kind: str = "knn", k: int = 10, l2: float = 1e-3,
                          max_iter: int = 300) -> float:
    """``folds``-fold cross-validated probe accuracy on one set of codes (seeded folds;
    every sample is predicted once, by a probe that did not see it)."""
    codes = _as_2d(codes, "codes")
    labels = np.asarray(labels)
    if len(labels) != len(codes):
        raise ValueError("labels and codes differ in length")
    folds = int(min(folds, len(codes)))
    if folds < 2:
        raise ValueError(f"need at least 2 samples for a cross-validated probe, got {len(codes)}")
    perm = np.random.default_rng([int(seed), 7]).permutation(len(codes))
    correct = 0
    for part in np.array_split(perm, folds):
        train = np.setdiff1d(perm, part, assume_unique=True)
        acc = probe_accuracy(codes[train], labels[train], codes[part], labels[part],
                             kind=kind, k=k, l2=l2, max_iter=max_iter)
        correct += acc * len(part)
    return float(correct / len(codes))


def _probe_description(probe: Mapping[str, Any]) -> str:
    what = f"k-NN (k={probe['k']})" if probe["kind"] == "knn" else f"logistic (L2={probe['l2']:g})"
    return f"{what}, {probe['folds']}-fold CV on test codes"


# --------------------------------------------------------------------------- streaming


class StreamingMoments:
    """Mean and covariance of rows added in blocks, merged in float64 with Chan et al.'s
    pairwise update (stable: no large sums of squares are subtracted)."""

    def __init__(self, dim: int):
        self.n = 0
        self.mean = np.zeros(dim)
        self.m2 = np.zeros((dim, dim))

    def update(self, rows: np.ndarray) -> None:
        x = _as_2d(rows, "rows").astype(np.float64)
        nb = x.shape[0]
        if nb == 0:
            return
        mb = x.mean(axis=0)
        xc = x - mb
        m2b = xc.T @ xc
        delta = mb - self.mean
        n = self.n + nb
        self.mean += delta * (nb / n)
        self.m2 += m2b + np.outer(delta, delta) * (self.n * nb / n)
        self.n = n

    @property
    def covariance(self) -> np.ndarray:
        """Population covariance (ddof 0)."""
        return self.m2 / max(self.n, 1)

    @property
    def variance(self) -> np.ndarray:
        return np.diag(self.covariance).copy()


def _ensemble_latent(ds) -> Any:
    """The (member, sample, latent) code array of an ensemble store, checked."""
    if "latent" not in ds.variables:
        raise KeyError("ensemble store has no variable 'latent' (member, sample, latent unit)")
    lat = ds["latent"]
    if lat.ndim != 3 or lat.dims[:2] != ("member", "sample"):
        raise ValueError(f"ensemble 'latent' must have dims (member, sample, <latent unit>), got {lat.dims}")
    return lat


def ensemble_statistics(path: str | os.PathLike, threshold: float = 0.01,
                        chunk_members: int = 20) -> dict[str, Any]:
    """One streaming pass over the members of an ensemble store.

    Returns ``n_members``, the pooled ``mean``/``covariance``/``variance`` over all
    member × sample codes (float64), ``member_active`` (active units of each member's
    test-set codes), ``latent_mean`` (ensemble-mean code per sample, float64 — compared
    with the stored ``latent_mean`` when the store has one) and ``chain_latent_mean``
    [C, samples, dim] (each chain's own mean code; a store of plain members is one chain). Memory: one block of
    ``chunk_members`` members.
    """
    from eae.support.io import open_ensemble
    from eae.support.progress import Progress

    ds = open_ensemble(path)
    lat = _ensemble_latent(ds)
    n_members, n_samples, dim = (int(s) for s in lat.shape)
    if n_members == 0:
        raise ValueError(f"ensemble store {path} has no members")
    moments = StreamingMoments(dim)
    per_sample = np.zeros((n_samples, dim))
    # members are chain-major with a chain coordinate; a store of plain members is one chain
    chain_of = (np.asarray(lat["chain"].values, np.int64) if "chain" in lat.coords
                else np.zeros(n_members, np.int64))
    per_chain = np.zeros((int(chain_of.max()) + 1, n_samples, dim))
    member_active = np.empty(n_members, np.int64)
    progress = Progress(n_members, "ensemble statistics", log)
    for start in range(0, n_members, chunk_members):
        block = np.asarray(lat.isel(member=slice(start, start + chunk_members)).values)
        for j, codes in enumerate(block):
            codes = codes.astype(np.float64)
            moments.update(codes)
            per_sample += codes
            per_chain[chain_of[start + j]] += codes
            member_active[start + j] = active_units_from_variance(codes.var(axis=0), threshold)
        progress.update(min(start + chunk_members, n_members))
    latent_mean = per_sample / n_members
    if "latent_mean" in ds.variables:
        stored = np.asarray(ds["latent_mean"].values, np.float64)
        if stored.shape != latent_mean.shape:
            raise ValueError(f"{path}: latent_mean has shape {stored.shape}, latent implies {latent_mean.shape}")
        scale = max(1.0, float(np.abs(latent_mean).max()))
        if not np.allclose(stored, latent_mean, rtol=0, atol=1e-4 * scale):
            raise ValueError(f"{path}: stored latent_mean is not the mean of 'latent' over members "
                             f"(max diff {np.abs(stored - latent_mean).max():.3g}); the store is inconsistent")
    return {
        "n_members": n_members,
        "n_samples": n_samples,
        "latent_dim": dim,
        "mean": moments.mean,
        "covariance": moments.covariance,
        "variance": moments.variance,
        "member_active": member_active,
        "latent_mean": latent_mean,
        "chain_latent_mean": per_chain / np.bincount(chain_of)[:, None, None],
    }


# --------------------------------------------------------------------------- PCA


def pca_fit(x: np.ndarray, n_components: int, block: int = 10000) -> dict[str, np.ndarray]:
    """PCA of ``x`` [n, d] (float64 covariance, accumulated in blocks): ``mean`` [d],
    ``components`` [k, d] (orthonormal rows, sign fixed so each row's largest-magnitude
    entry is positive) and ``eigenvalues`` [k]."""
    x = _as_2d(x, "x")
    n, d = x.shape
    if n < 2:
        raise ValueError(f"PCA needs at least 2 samples, got {n}")
    k = int(min(n_components, d))
    moments = StreamingMoments(d)
    for s in range(0, n, block):
        moments.update(x[s:s + block])
    eig, vec = np.linalg.eigh(moments.covariance)
    order = np.argsort(eig)[::-1][:k]
    comps = vec[:, order].T
    signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
    signs[signs == 0] = 1.0
    return {"mean": moments.mean, "components": comps * signs[:, None],
            "eigenvalues": np.clip(eig[order], 0.0, None)}


def pca_reference(x_train: np.ndarray, x_test: np.ndarray, n_components: int,
                  test_labels: np.ndarray | None = None, cfg: Mapping[str, Any] | None = None
                  ) -> dict[str, Any]:
    """The PCA-``n_components`` reference: fitted on ``x_train``, its test codes scored
    like a model's (MSE of the reconstruction, active units, PCs, probe)."""
    cfg = resolve_config(cfg)
    pca = pca_fit(x_train, n_components)
    xt = np.asarray(x_test, np.float64)
    codes = (xt - pca["mean"]) @ pca["components"].T
    recon = codes @ pca["components"] + pca["mean"]
    k = pca["components"].shape[0]
    row = _code_metrics(codes, test_labels, cfg)
    row.update(
        model="pca", label=f"PCA-{k}", latent_dim=k,
        test_mse=float(np.mean((recon - xt) ** 2)),
        mse_of=f"rank-{k} PCA reconstruction (fitted on train)",
        active_of="PCA codes (projections on the leading components)",
    )
    return row


# --------------------------------------------------------------------------- models


def dataset_paths(dataset: str, results_dir: str | os.PathLike = "results") -> dict[str, Path]:
    """Where the stage reads its inputs for ``dataset`` (the workflow's layout)."""
    r = Path(results_dir)
    return {
        "data": r / "data" / f"{dataset}.zarr",
        "eae": r / dataset / "eae" / "model",
        "ensemble": r / dataset / "eae" / "ensemble.zarr",
        "vae": r / dataset / "vae",
        "ae": r / dataset / "ae",
    }


def analysis_inputs(dataset: str, models: Sequence[str] = MODELS,
                    results_dir: str | os.PathLike = "results") -> dict[str, str]:
    """The inputs the metrics/figures stages read for ``models`` (named as in
    :func:`dataset_paths`; the workflow's rules use this as their input function)."""
    p = dataset_paths(dataset, results_dir)
    keys = ["data"] + [k for m in models for k in (("eae", "ensemble") if m == "eae" else (m,))]
    return {k: str(p[k]) for k in keys}


def _resolve_paths(dataset, results_dir, paths) -> dict[str, Path]:
    out = dataset_paths(dataset, results_dir)
    out.update({k: Path(v) for k, v in dict(paths or {}).items()})
    return out


def load_test_data(data_path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray | None, tuple[int, ...]]:
    """(x_test float32 [n, pixels], labels int64 [n] or None, image shape (rows, cols))."""
    from eae.experiments.images.data import load_split
    from eae.support.io import open_zarr

    image_shape = tuple(int(s) for s in open_zarr(data_path)["images"].shape[1:])
    x, labels = load_split(data_path, "test")
    if x.shape[0] == 0:
        raise ValueError(f"{data_path} has no test samples")
    return x, labels, image_shape


def load_model(path: str | os.PathLike):
    """A Keras model saved as ``.keras`` (clear error when missing)."""
    from eae.support.runtime import keras

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model file not found: {path}")
    return keras.saving.load_model(path, compile=False)


def decode(decoder, z: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Decoder outputs for codes ``z``, flattened to [n, pixels] float32."""
    from eae.experiments.images.baselines import decode as _decode

    out = _decode(decoder, np.asarray(z, np.float32), batch_size)
    return out.reshape(out.shape[0], -1)


def _model_input(encoder, x: np.ndarray) -> np.ndarray:
    shape = tuple(int(s) for s in encoder.input_shape[1:])
    return np.asarray(x, np.float32).reshape((x.shape[0],) + shape)


def encode(kind: str, encoder, x: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Codes of ``x`` (VAE: posterior mean) for flat images, laid out for the encoder."""
    from eae.experiments.images.baselines import encode as _encode

    return _encode(kind, encoder, _model_input(encoder, x), batch_size)


def vae_posterior(encoder, x: np.ndarray, batch_size: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """(posterior mean, log-variance) of a two-output VAE encoder, float32."""
    from eae.support.runtime import keras

    if len(encoder.outputs) != 2:
        raise ValueError(f"encoder {encoder.name!r} is not a VAE encoder (needs 2 outputs)")
    xm = _model_input(encoder, x)
    means, logvars = [], []
    for s in range(0, xm.shape[0], batch_size):
        m, lv = encoder(xm[s:s + batch_size], training=False)
        means.append(keras.ops.convert_to_numpy(m))
        logvars.append(keras.ops.convert_to_numpy(lv))
    return np.concatenate(means), np.concatenate(logvars)


def _check_ensemble_matches(ds, x_test: np.ndarray, labels: np.ndarray | None, path) -> None:
    n = int(ds.sizes["sample"])
    if n != x_test.shape[0]:
        raise ValueError(f"ensemble store {path} has {n} samples but the test split has {x_test.shape[0]}; "
                         "they come from different data")
    if labels is not None and "labels" in ds.variables:
        if not np.array_equal(np.asarray(ds["labels"].values), labels):
            raise ValueError(f"ensemble store {path}: labels differ from the test split's; "
                             "they come from different data")


def _code_metrics(codes: np.ndarray, labels: np.ndarray | None, cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Active units, PCs and probe of one set of test codes."""
    probe = cfg["probe"]
    relative, scale = relative_active_units(codes, cfg["relative_active_fraction"])
    row: dict[str, Any] = {
        "n_test": int(codes.shape[0]),
        "active_threshold": float(cfg["active_threshold"]),
        "active_units": active_units(codes, cfg["active_threshold"]),
        "relative_active_fraction": float(cfg["relative_active_fraction"]),
        "active_units_relative": relative,
        "code_scale": scale,
        "pca_variance": float(cfg["pca_variance"]),
        "pcs_99": pcs_for_variance(codes, cfg["pca_variance"]),
        "probe": _probe_description(probe) if labels is not None else "no labels",
        "probe_accuracy": float("nan"),
        "probe_chance": float("nan"),
    }
    if labels is not None:
        row["probe_accuracy"] = cross_validated_probe(
            codes, labels, folds=probe["folds"], seed=cfg["seed"], kind=probe["kind"],
            k=probe["k"], l2=probe["l2"], max_iter=probe["max_iter"])
        row["probe_chance"] = float(np.bincount(labels - labels.min()).max() / len(labels))
    return row


def _mse(recon: np.ndarray, x: np.ndarray) -> float:
    return float(np.mean((recon.astype(np.float64) - x.astype(np.float64)) ** 2))


def eae_metrics(paths: Mapping[str, Path], x_test, labels, cfg) -> dict[str, Any]:
    """Metrics of the EAE: ensemble-mean codes decoded by the trained decoder, and the
    activity of the mean codes and of all latent samples."""
    from eae.support.io import open_ensemble
    from eae.core.models import output_activation_of

    ds = open_ensemble(paths["ensemble"])
    _check_ensemble_matches(ds, x_test, labels, paths["ensemble"])
    stats = ensemble_statistics(paths["ensemble"], cfg["active_threshold"], cfg["chunk_members"])
    decoder = load_model(Path(paths["eae"]) / "decoder.keras")
    z_mean = stats["latent_mean"].astype(np.float32)
    row = _code_metrics(z_mean, labels, cfg)
    row.update(
        model="eae", label=MODEL_LABELS["eae"], latent_dim=stats["latent_dim"],
        n_members=stats["n_members"],
        test_mse=_mse(decode(decoder, z_mean, cfg["batch_size"]), x_test),
        mse_of=f"decoder({output_activation_of(decoder)}) of the ensemble-mean code "
               f"over {stats['n_members']} members",
        active_of="ensemble-mean code",
        active_units_all_samples=active_units_from_variance(stats["variance"], cfg["active_threshold"]),
        active_units_member_mean=float(stats["member_active"].mean()),
        pcs_99_all_samples=pcs_from_covariance(stats["covariance"], cfg["pca_variance"]),
        **_chain_mse(stats["chain_latent_mean"], decoder, x_test, cfg["batch_size"]),
        **store_temperature_columns(ds.attrs),
    )
    return row


def _chain_mse(chain_means: np.ndarray, decoder, x_test, batch_size: int) -> dict[str, float]:
    """Test MSE of each chain's own mean code [C, n, d] (pooled chains that disagree
    decode to a blend none of them would give): min and max over chains."""
    per_chain = [_mse(decode(decoder, z.astype(np.float32), batch_size), x_test)
                 for z in chain_means]
    return {"test_mse_chain_min": float(min(per_chain)),
            "test_mse_chain_max": float(max(per_chain))}


def baseline_metrics(kind: str, model_dir: Path, x_test, labels, cfg) -> dict[str, Any]:
    """Metrics of a trained VAE or AE (VAE: posterior mean decoded, sigmoid output vs x)."""
    from eae.core.models import output_activation_of

    encoder = load_model(Path(model_dir) / "encoder.keras")
    decoder = load_model(Path(model_dir) / "decoder.keras")
    codes = encode(kind, encoder, x_test, cfg["batch_size"])
    row = _code_metrics(codes, labels, cfg)
    act = output_activation_of(decoder)
    row.update(
        model=kind, label=MODEL_LABELS[kind], latent_dim=int(codes.shape[1]),
        test_mse=_mse(decode(decoder, codes, cfg["batch_size"]), x_test),
        mse_of=(f"decoder({act}) of the posterior mean (no sampling)" if kind == "vae"
                else f"decoder({act}) of the code"),
        active_of="posterior mean" if kind == "vae" else "code",
    )
    return row


def model_metrics(dataset: str, results_dir: str | os.PathLike = "results",
                  cfg: Mapping[str, Any] | None = None,
                  paths: Mapping[str, str | os.PathLike] | None = None) -> pd.DataFrame:
    """One row per model (``cfg["models"]`` and the PCA reference) for ``dataset``.

    Inputs are found under ``results_dir`` (see :func:`dataset_paths`); ``paths``
    overrides single entries (``data``, ``eae``, ``ensemble``, ``vae``, ``ae``).
    """
    cfg = resolve_config(cfg)
    p = _resolve_paths(dataset, results_dir, paths)
    x_test, labels, _ = load_test_data(p["data"])
    rows = []
    for model in cfg["models"]:
        log.info("metrics %s: %s", dataset, model)
        if model == "eae":
            rows.append(eae_metrics(p, x_test, labels, cfg))
        else:
            rows.append(baseline_metrics(model, p[model], x_test, labels, cfg))
    if cfg["pca_reference"]:
        from eae.experiments.images.data import load_split

        x_train, _ = load_split(p["data"], "train")
        latent = rows[0]["latent_dim"] if rows else 64
        if any(r["latent_dim"] != latent for r in rows):
            log.warning("models differ in latent_dim (%s); PCA uses %d",
                        [r["latent_dim"] for r in rows], latent)
        log.info("metrics %s: PCA-%d reference", dataset, latent)
        rows.append(pca_reference(x_train, x_test, latent, labels, cfg))
    frame = pd.DataFrame(rows)
    frame.insert(0, "dataset", dataset)
    # the EAE row carries its store's measured temperatures; the other models have none
    columns = COLUMNS + TEMPERATURE_COLUMNS
    for col in columns:
        if col not in frame:
            frame[col] = np.nan
    return frame[columns]


def _input_list(p: Mapping[str, Path], cfg: Mapping[str, Any]) -> list[Path]:
    out = [p["data"]]
    for model in cfg["models"]:
        if model == "eae":
            out += [Path(p["eae"]) / "decoder.keras", p["ensemble"]]
        else:
            out += [Path(p[model]) / "encoder.keras", Path(p[model]) / "decoder.keras"]
    return out


def metrics_stage(dataset: str, cfg: Mapping[str, Any] | None, out_csv: str | os.PathLike,
                  results_dir: str | os.PathLike = "results",
                  paths: Mapping[str, str | os.PathLike] | None = None) -> pd.DataFrame:
    """Workflow stage ``metrics``: :func:`model_metrics` → ``out_csv`` + provenance sidecar."""
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    full = resolve_config(cfg)
    frame = model_metrics(dataset, results_dir, full, paths)
    write_csv_atomic(frame, out_csv)
    p = _resolve_paths(dataset, results_dir, paths)
    record = make_record(f"metrics_{dataset}", config=full, seeds={"seed": full["seed"]},
                         inputs=_input_list(p, full), started=started)
    record_outputs(record, [out_csv])
    log.info("metrics %s:\n%s", dataset, frame.drop(columns=["mse_of", "active_of", "probe"]).to_string(index=False))
    return frame


# --------------------------------------------------------------------------- Table 1

_ORDER = {"eae": 0, "vae": 1, "ae": 2, "pca": 3}


def _fmt(value, kind: str, latent: Any = None) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    if kind == "mse":
        return f"{value:.4f}" if value >= 1e-3 else f"{value:.5f}"  # the paper's 4 decimals
    if kind == "units":
        return f"{int(round(value))}/{int(latent)}"
    if kind == "mean_units":
        return f"{value:.1f}/{int(latent)}"
    if kind == "acc":
        return f"{100 * value:.1f} %"
    return str(int(round(value)))


_TABLE_METRICS = [
    # (csv column, table column, format)
    ("test_mse", "test MSE", "mse"),
    ("active_units", "active units", "units"),
    ("active_units_all_samples", "active (all EAE samples)", "units"),
    ("active_units_relative", "active (relative)", "units"),
    ("pcs_99", "PCs 99 %", "int"),
    ("probe_accuracy", "probe acc.", "acc"),
]


def table1(frames: Sequence[pd.DataFrame]) -> pd.DataFrame:
    """Paper layout: one row per model (EAE, VAE, Vanilla AE, PCA), for each dataset the
    columns ``<dataset>/<metric>`` (raw numbers)."""
    if not frames:
        raise ValueError("table1 needs at least one dataset's metrics")
    parts = []
    for frame in frames:
        missing = sorted(set(COLUMNS) - set(frame.columns))
        if missing:
            raise ValueError(f"metrics table lacks column(s) {missing}")
        ds = str(frame["dataset"].iloc[0])
        extra = ["latent_dim", "pcs_99_all_samples", "active_units_member_mean", "code_scale"]
        extra += [c for c in TEMPERATURE_COLUMNS if c in frame.columns]
        sub = frame.set_index("model")[[c for c, _, _ in _TABLE_METRICS] + extra]
        sub.columns = [f"{ds}/{c}" for c in sub.columns]
        parts.append(sub)
    wide = pd.concat(parts, axis=1)
    wide = wide.loc[sorted(wide.index, key=lambda m: _ORDER.get(m, 99))]
    labels = {}
    for frame in frames:
        labels.update(dict(zip(frame["model"], frame["label"])))
    wide.insert(0, "label", [labels[m] if m != "pca" else "PCA" for m in wide.index])
    wide.index.name = "model"
    return wide.reset_index()


def _temperature_note(name: str, r: Mapping[str, Any]) -> str:
    """The EAE's measured temperatures (eae.temperature) as a note, flagged when out."""
    if "T flag" not in r or not isinstance(r["T flag"], str):
        return f"- {name} EAE temperature: not measured (a store from before eae.temperature)."
    cells = ", ".join(f"{c} {float(r[c]):.3g}" for c in TEMPERATURE_COLUMNS[:4])
    flag = ("**" + r["T flag"] + "** — the ensemble is not at its target T; its numbers "
            "describe the temperature it reached") if r["T flag"] != "ok" else "within the bands"
    text = f"- {name} EAE temperature (measured, ratio to the target T): {cells}; {flag}."
    improper = r.get("improper")
    if isinstance(improper, str) and improper != "not measured":
        growth = ", ".join(f"{c} {float(r[c]):.2f}" for c in ("θ growth train", "θ growth ensemble"))
        text += (f" Ensemble well-posedness (log–log slope of ‖θ − θ₀‖ against steps over "
                 f"the last half of each phase; > 0.25 = improper): {growth}; "
                 + ("**" + improper + "**: θ keeps moving away, so the members are no draws "
                    "of a stationary ensemble (exp(−L/T) does not confine the encoder, or it "
                    "is still drifting)" if improper != "ok" else "stationary") + ".")
    return text


def _scales(frames: Sequence[pd.DataFrame]) -> str:
    parts = []
    for frame in frames:
        name = DATASET_LABELS.get(str(frame["dataset"].iloc[0]), str(frame["dataset"].iloc[0]))
        cells = ", ".join(f"{MODEL_LABELS.get(m, m)} {v:.3g}"
                          for m, v in zip(frame["model"], frame["code_scale"]))
        parts.append(f"{name}: {cells}")
    return "; ".join(parts)


def table1_markdown(wide: pd.DataFrame, frames: Sequence[pd.DataFrame]) -> str:
    """Markdown version of :func:`table1` with notes on what each number is."""
    datasets = [str(f["dataset"].iloc[0]) for f in frames]
    header = ["Model"]
    for ds in datasets:
        name = DATASET_LABELS.get(ds, ds)
        header += [f"{name} {title}" for _, title, _ in _TABLE_METRICS]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in wide.iterrows():
        label = row["label"]
        if row["model"] == "pca":
            lat = [row.get(f"{ds}/latent_dim") for ds in datasets]
            lat = [int(v) for v in lat if v == v and v is not None]
            label = f"PCA-{lat[0]}" if lat and len(set(lat)) == 1 else "PCA"
        cells = [label]
        for ds in datasets:
            latent = row.get(f"{ds}/latent_dim")
            for col, _, kind in _TABLE_METRICS:
                cells.append(_fmt(row.get(f"{ds}/{col}"), kind, latent))
        lines.append("| " + " | ".join(cells) + " |")
    first = frames[0].iloc[0]
    labelled = [f for f in frames if (f["probe"] != "no labels").any()]
    probe_text = (labelled[0].loc[labelled[0]["probe"] != "no labels", "probe"].iloc[0]
                  if labelled else "no dataset has labels")
    notes = ["", "Notes:", "",
             "- test MSE: mean over test images and pixels (in [0, 1]) of (reconstruction − x)². "
             "EAE: decoder output for the ensemble-mean code z̄(x) = mean over members of E_θk(x). "
             "VAE: the decoder's sigmoid output (pixel probabilities) for the posterior mean μ(x), "
             "no sampling, compared with x by MSE (the VAE is trained with binary cross-entropy). "
             "Vanilla AE: decoder output for the code. PCA: rank-k reconstruction, PCA fitted on the "
             "training split.",
             f"- active units: latent dimensions whose variance over the test set exceeds "
             f"{first['active_threshold']:g} (Burda et al. 2015). EAE: of the ensemble-mean code; "
             "VAE: of the posterior mean; AE and PCA: of the code. 'active (all EAE samples)': "
             "variance over all members × test images of the EAE's latent samples (it includes the "
             "member-to-member spread).",
             f"- active (relative): units whose variance over the test set is at least "
             f"{100 * first['relative_active_fraction']:g} % of the mean per-unit variance of the "
             "same codes (EAE: the ensemble-mean code over all chains). Nothing fixes the scale "
             "of EAE or AE codes, so the fixed threshold above says little about them (code "
             "scale, the mean per-unit variance: " + _scales(frames) + "); the VAE's KL term "
             "fixes its scale. This count and the PCs are unchanged by a rescaling of the codes.",
             f"- PCs {100 * first['pca_variance']:g} %: number of principal components holding that "
             "fraction of the code variance (EAE: of the ensemble-mean code).",
             f"- probe acc.: {probe_text} (ensemble-mean code for the EAE); — where the "
             "dataset has no labels."]
    for frame in frames:
        eae = frame[frame["model"] == "eae"]
        if len(eae):
            r = eae.iloc[0]
            notes.append(
                f"- {DATASET_LABELS.get(r['dataset'], r['dataset'])} EAE: {int(r['n_members'])} ensemble "
                f"members; per member, on average {r['active_units_member_mean']:.1f}/{int(r['latent_dim'])} "
                f"active units over the test set; all samples need {int(r['pcs_99_all_samples'])} PCs "
                f"for {100 * r['pca_variance']:g} % of their variance.")
            notes.append(
                f"- {DATASET_LABELS.get(r['dataset'], r['dataset'])} EAE per chain: the decoder "
                f"of each chain's own mean code has test MSE {r['test_mse_chain_min']:.4f}–"
                f"{r['test_mse_chain_max']:.4f} (pooled over chains: {r['test_mse']:.4f}); "
                "results/<dataset>/diagnostics.csv gives the between-chain share of the "
                "latent variance.")
            notes.append(_temperature_note(DATASET_LABELS.get(r["dataset"], r["dataset"]), r))
        chance = frame["probe_chance"].dropna()
        if len(chance):
            name = str(frame["dataset"].iloc[0])
            notes.append(f"- {DATASET_LABELS.get(name, name)} probe chance level "
                         f"(most frequent class): {100 * chance.iloc[0]:.1f} %.")
    notes.append("- Paper (Table 1): MNIST MSE / active EAE 0.026 64/64, VAE 0.016 16/64, AE 0.010 53/64; "
                 "Frey EAE 0.0052 64/64, VAE 0.0046 3/64, AE 0.0014 64/64.")
    return "\n".join(lines + notes) + "\n"


def table1_stage(per_dataset_csvs: Iterable[str | os.PathLike], out_csv: str | os.PathLike,
                 out_md: str | os.PathLike) -> pd.DataFrame:
    """Workflow stage ``table1``: the datasets' metrics.csv → table1.csv and table1.md."""
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    csvs = [Path(p) for p in per_dataset_csvs]
    for p in csvs:
        if not p.is_file():
            raise FileNotFoundError(f"metrics table not found: {p}")
    frames = [pd.read_csv(p) for p in csvs]
    wide = table1(frames)
    text = table1_markdown(wide, frames)
    write_csv_atomic(wide, out_csv)
    write_text_atomic(out_md, text)
    record = make_record("table1", config={"datasets": [str(f["dataset"].iloc[0]) for f in frames]},
                         inputs=csvs, started=started)
    record_outputs(record, [out_csv, out_md])
    log.info("Table 1:\n%s", text)
    return wide

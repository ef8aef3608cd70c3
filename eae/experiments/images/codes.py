"""Statistics of latent codes for Table 1 (:mod:`eae.experiments.images.metrics`) and the
sweep: active units (absolute and scale-free), principal components, k-NN / logistic label
probes, streaming moments and one streaming pass over an ensemble store, and the PCA fit of
the PCA reference. NumPy/SciPy only: no TensorFlow, no config."""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

import numpy as np

log = logging.getLogger("eae")

__all__ = [
    "PROBE_KINDS",
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
]

PROBE_KINDS = ("knn", "logistic")


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

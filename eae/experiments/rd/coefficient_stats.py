"""Ensemble statistics of the SINDy coefficients: per-coefficient summary and correlations.

The mean / KDE mode / significance of every coefficient (:func:`coefficient_summary`, the
numbers of Table 4), the Pearson correlations between coefficients over the ensemble
(Fig 4) and the most co-varying pairs of linear coefficients (Fig 1d). Split out of
:mod:`eae.experiments.rd.analysis` (which re-exports every name here).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from eae.experiments.rd.analysis_params import DOT, AnalysisParams
from eae.experiments.rd.kde import kde_mode


def coefficient_summary(coefficients: np.ndarray, terms: Sequence[str], latents: Sequence[str],
                        params: AnalysisParams = AnalysisParams()) -> pd.DataFrame:
    """Long table, one row per (latent, term): mean, mode, std, significant."""
    c = np.asarray(coefficients, np.float64)
    rows = []
    for k, lat in enumerate(latents):
        for t, term in enumerate(terms):
            x = c[:, t, k]
            finite = x[np.isfinite(x)]
            mean = float(finite.mean()) if finite.size else float("nan")
            mode = kde_mode(x, params.kde_grid_points, params.kde_max_samples, params.seed)
            rows.append(dict(latent=lat, term=term, mean=mean, mode=mode,
                             std=float(finite.std()) if finite.size else float("nan"),
                             n_finite=int(finite.size),
                             significant=bool(abs(mean) > params.threshold
                                              and abs(mode) > params.threshold)))
    return pd.DataFrame(rows)


def coefficient_labels(terms: Sequence[str], latents: Sequence[str]) -> list[str]:
    """Labels "ż1: z1", … in the flattening order of :func:`flatten_coefficients`."""
    return [f"{lat[0]}{DOT}{lat[1:]}: {term}" for lat in latents for term in terms]


def flatten_coefficients(coefficients: np.ndarray) -> np.ndarray:
    """[member, term, latent] → [member, latent·term] (latent-major, as the labels)."""
    c = np.asarray(coefficients, np.float64)
    return c.transpose(0, 2, 1).reshape(c.shape[0], -1)


def correlation_matrix(coefficients: np.ndarray) -> np.ndarray:
    """Pearson correlation between all coefficients over the ensemble (members with a
    non-finite coefficient dropped; constant coefficients give NaN rows)."""
    flat = flatten_coefficients(coefficients)
    flat = flat[np.all(np.isfinite(flat), axis=1)]
    if flat.shape[0] < 2:
        return np.full((flat.shape[1],) * 2, np.nan)
    std = flat.std(0)
    centred = flat - flat.mean(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (centred.T @ centred) / flat.shape[0] / np.outer(std, std)
    corr[:, std == 0] = np.nan
    corr[std == 0, :] = np.nan
    return corr


def linear_coefficient_index(terms: Sequence[str], latents: Sequence[str]) -> dict:
    """{(i, j): (term index, latent index)} of A[i, j] = coefficient of z_j in ż_i."""
    out = {}
    for i, lat_i in enumerate(latents):
        for j, lat_j in enumerate(latents):
            out[(i, j)] = (list(terms).index(lat_j), i)
    return out


def top_linear_pairs(coefficients: np.ndarray, terms: Sequence[str], latents: Sequence[str],
                     n_pairs: int = 2) -> list[tuple[tuple[int, int], tuple[int, int], float]]:
    """The ``n_pairs`` pairs of linear coefficients A[i, j] that co-vary most
    (largest |correlation| over the ensemble): [((i, j), (k, l), corr), …]."""
    idx = linear_coefficient_index(terms, latents)
    keys = sorted(idx)
    c = np.asarray(coefficients, np.float64)
    pairs = []
    for a in range(len(keys)):
        for b in range(a + 1, len(keys)):
            xa = c[:, idx[keys[a]][0], idx[keys[a]][1]]
            xb = c[:, idx[keys[b]][0], idx[keys[b]][1]]
            ok = np.isfinite(xa) & np.isfinite(xb)
            if ok.sum() < 2 or xa[ok].std() == 0 or xb[ok].std() == 0:
                r = 0.0
            else:
                r = float(np.corrcoef(xa[ok], xb[ok])[0, 1])
            pairs.append((keys[a], keys[b], r))
    pairs.sort(key=lambda p: -abs(p[2]))
    return pairs[:n_pairs]

"""Dominant modes of ensemble samples by Gaussian kernel density estimates (1-D and 2-D).

The mode estimates behind Table 4 (:func:`kde_mode`) and Fig 1d (:func:`kde_mode_2d`).
Split out of :mod:`eae.experiments.rd.analysis` (which re-exports both names); it depends
on numpy and scipy only.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


def kde_mode(samples: np.ndarray, grid_points: int = 2048, max_samples: int | None = None,
             seed: int = 0) -> float:
    """The dominant mode of a 1-D sample: argmax of a Gaussian KDE (scipy, Scott's rule).

    Robust to degenerate input: non-finite values are dropped; an empty sample gives NaN;
    a constant sample (or one whose KDE is singular) gives its median. The maximum of
    the KDE on a grid over the sample's range is refined by a parabola through the
    three grid points around it. ``max_samples`` subsamples (seeded) very large inputs.
    """
    from scipy.stats import gaussian_kde

    x = np.asarray(samples, np.float64).ravel()
    x = x[np.isfinite(x)]
    if x.size == 0:
        return float("nan")
    median = float(np.median(x))
    spread = float(np.ptp(x))
    if x.size < 2 or spread <= 1e-12 * max(1.0, abs(median)):
        return median
    if max_samples is not None and x.size > max_samples:
        x = np.random.default_rng(seed).choice(x, max_samples, replace=False)
    try:
        kde = gaussian_kde(x)
    except (np.linalg.LinAlgError, ValueError):
        return median
    grid = np.linspace(x.min(), x.max(), int(grid_points))
    density = kde(grid)
    if not np.all(np.isfinite(density)):
        return median
    i = int(np.argmax(density))
    if 0 < i < len(grid) - 1:
        y0, y1, y2 = density[i - 1 : i + 2]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            return float(grid[i] + 0.5 * (y0 - y2) / denom * (grid[1] - grid[0]))
    return float(grid[i])


def kde_mode_2d(a: np.ndarray, b: np.ndarray, grid_points: int = 128,
                max_samples: int | None = 5000, seed: int = 0,
                include: Sequence[tuple[float, float]] = ()):
    """Mode (a*, b*) and the density grid (A, B, density) of a 2-D Gaussian KDE.

    The grid spans the sample (plus 10 %) and the points in ``include``. Degenerate
    pairs (singular covariance, e.g. a constant coordinate) give the medians and
    ``None`` for the grid.
    """
    from scipy.stats import gaussian_kde

    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    if a.size == 0:
        return (float("nan"), float("nan")), None
    if max_samples is not None and a.size > max_samples:
        idx = np.random.default_rng(seed).choice(a.size, max_samples, replace=False)
        a, b = a[idx], b[idx]
    medians = (float(np.median(a)), float(np.median(b)))
    try:
        kde = gaussian_kde(np.vstack([a, b]))
    except (np.linalg.LinAlgError, ValueError):
        return medians, None
    extra_a = [p[0] for p in include if np.isfinite(p[0])]
    extra_b = [p[1] for p in include if np.isfinite(p[1])]
    lo_a, hi_a = min([a.min()] + extra_a), max([a.max()] + extra_a)
    lo_b, hi_b = min([b.min()] + extra_b), max([b.max()] + extra_b)
    pad_a, pad_b = 0.1 * (hi_a - lo_a + 1e-12), 0.1 * (hi_b - lo_b + 1e-12)
    ga = np.linspace(lo_a - pad_a, hi_a + pad_a, grid_points)
    gb = np.linspace(lo_b - pad_b, hi_b + pad_b, grid_points)
    A, B = np.meshgrid(ga, gb)
    density = kde(np.vstack([A.ravel(), B.ravel()])).reshape(A.shape)
    if not np.all(np.isfinite(density)):
        return medians, None
    j, i = np.unravel_index(int(np.argmax(density)), density.shape)
    return (float(A[j, i]), float(B[j, i])), (A, B, density)

"""Identified models and their oscillation frequencies.

The linear block and Jacobian of a SINDy model and their frequencies, the integration of
a model (:func:`integrate_model`), sinusoid-fit frequencies of series and snapshots, the
mean / mode models of the ensemble and the frequency table (frequency.csv). Split out of
:mod:`eae.experiments.rd.analysis` (which re-exports every name here).
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np
import pandas as pd


def linear_block(xi: np.ndarray, terms: Sequence[str], latents: Sequence[str],
                 include_sines: bool = False) -> np.ndarray:
    """A with ż = A z + …: A[i, j] = Ξ[z_j, i]. With ``include_sines`` the sine terms'
    slope at 0 is added (sin z ≈ z), i.e. A is the Jacobian of Θ(z)Ξ at z = 0."""
    terms = list(terms)
    d = len(latents)
    a = np.zeros((d, d))
    for i in range(d):
        for j, lat in enumerate(latents):
            a[i, j] = xi[terms.index(lat), i]
            if include_sines and f"sin({lat})" in terms:
                a[i, j] += xi[terms.index(f"sin({lat})"), i]
    return a


def eigen_frequency(a: np.ndarray) -> float:
    """Angular frequency |Im λ| of the linear system ż = A z (0 without oscillation)."""
    if not np.all(np.isfinite(a)):
        return float("nan")
    return float(np.max(np.abs(np.linalg.eigvals(a).imag)))


def product_frequency(a: np.ndarray) -> float:
    """sqrt(−A[0,1]·A[1,0]): the frequency of ż1 = a z2, ż2 = b z1 (NaN when a·b ≥ 0)."""
    p = -a[0, 1] * a[1, 0]
    return float(math.sqrt(p)) if p > 0 else float("nan")


def integrate_model(xi: np.ndarray, z0: np.ndarray, t: np.ndarray, rtol: float = 1e-8,
                    bound: float | None = None, library=None) -> np.ndarray:
    """Integrate ż = Θ(z) Ξ from z0 over times t (scipy solve_ivp, DOP853).

    Returns [len(t), latent]; times after a blow-up (|z| > bound) or a solver failure
    are NaN. ``library``: another Θ (z [n, d] → [n, terms]) than the fitted one.
    """
    from scipy.integrate import solve_ivp

    from eae.core.sindy import sindy_library_np

    xi = np.asarray(xi, np.float64)
    z0 = np.asarray(z0, np.float64)
    out = np.full((len(t), len(z0)), np.nan)
    if not (np.all(np.isfinite(xi)) and np.all(np.isfinite(z0))):
        return out

    theta = sindy_library_np if library is None else library

    def rhs(_, z):
        return theta(z[None, :])[0] @ xi

    events = None
    if bound is not None:
        def escape(_, z):
            return bound - float(np.max(np.abs(z)))
        escape.terminal = True
        events = [escape]
    sol = solve_ivp(rhs, (float(t[0]), float(t[-1])), z0, method="DOP853", t_eval=t,
                    rtol=rtol, atol=rtol * max(1.0, float(np.max(np.abs(z0)))), events=events)
    n = sol.y.shape[1]
    out[:n] = sol.y.T
    return out


def _sinusoid_residual(omega: float, t: np.ndarray, y: np.ndarray) -> float:
    """Residual sum of squares of the least-squares fit y ≈ a cos ωt + b sin ωt + c
    (per column, one common ω)."""
    basis = np.stack([np.cos(omega * t), np.sin(omega * t), np.ones_like(t)], 1)
    coef, *_ = np.linalg.lstsq(basis, y, rcond=None)
    return float(np.sum((y - basis @ coef) ** 2))


def series_frequency(t: np.ndarray, y: np.ndarray, min_r2: float = 0.5) -> float:
    """Angular frequency of an oscillating series y [time, k]: the ω of the best
    least-squares fit y ≈ a cos ωt + b sin ωt + c (common to all columns).

    Exact for sinusoids and needs no whole number of periods (the RD test window may
    hold only ~1.5 periods), unlike counting zero crossings. ω is scanned from half a
    period per window to the Nyquist frequency and refined by a bounded 1-D search.
    NaN for non-finite input, fewer than 5 samples, when the best fit explains less
    than ``min_r2`` of the variance, or when it completes less than one period in the
    window (no oscillation, e.g. a trajectory settling on a fixed point).
    """
    from scipy.optimize import minimize_scalar

    t = np.asarray(t, np.float64)
    y = np.asarray(y, np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if len(t) < 5 or not (np.all(np.isfinite(y)) and np.all(np.isfinite(t))):
        return float("nan")
    t = t - t[0]
    span = float(t[-1])
    total = float(np.sum((y - y.mean(0)) ** 2))
    if span <= 0 or total == 0:
        return float("nan")
    lo, hi = math.pi / span, math.pi / float(np.median(np.diff(t)))
    # a grid step of a quarter of the peak width (2π/span) cannot miss the peak
    grid = np.arange(lo, hi, 0.25 * math.pi / span)
    if grid.size < 3:
        return float("nan")
    residuals = np.array([_sinusoid_residual(w, t, y) for w in grid])
    i = int(np.argmin(residuals))
    step = grid[1] - grid[0]
    best = minimize_scalar(_sinusoid_residual, bounds=(max(lo, grid[i] - step), grid[i] + step),
                           args=(t, y), method="bounded", options={"xatol": 1e-10})
    omega, rss = float(best.x), float(best.fun)
    if 1.0 - rss / total < min_r2 or omega * span < 2 * math.pi:
        return float("nan")
    return omega


def data_frequency(t: np.ndarray, x: np.ndarray, n_components: int = 2) -> float:
    """Oscillation frequency of snapshots x [time, pixel]: :func:`series_frequency` of
    their leading principal-component scores (the rotating spiral is ~2 modes)."""
    x = np.asarray(x, np.float64)
    u, s, _ = np.linalg.svd(x - x.mean(0), full_matrices=False)
    return series_frequency(t, u[:, :n_components] * s[:n_components])


def identified_models(coefficients: np.ndarray, summary: pd.DataFrame, terms: Sequence[str],
                      latents: Sequence[str], model_terms: str = "all") -> dict[str, np.ndarray]:
    """{"mean": Ξ, "mode": Ξ} from the per-coefficient means / modes; with
    ``model_terms == "significant"`` non-significant coefficients are set to 0."""
    if model_terms not in ("all", "significant"):
        raise ValueError(f"model_terms must be 'all' or 'significant', got {model_terms!r}")
    shape = np.asarray(coefficients).shape[1:]
    models = {}
    for name in ("mean", "mode"):
        xi = np.zeros(shape)
        for _, row in summary.iterrows():
            t, k = list(terms).index(row["term"]), list(latents).index(row["latent"])
            keep = model_terms == "all" or bool(row["significant"])
            xi[t, k] = row[name] if keep else 0.0
        models[name] = xi
    return models


def equation_strings(xi: np.ndarray, terms: Sequence[str], latents: Sequence[str],
                     digits: int = 2) -> list[str]:
    """Readable equations "ż1 = 0.47 z1 + 1.00 z2" (zero coefficients omitted):
    :func:`eae.core.sindy.format_equations`."""
    from eae.core.sindy import format_equations

    return format_equations(xi, terms, latents, digits)


def member_choice(n_members: int, n: int) -> np.ndarray:
    """``n`` evenly spaced member indices (deterministic)."""
    n = min(n, n_members)
    if n == 0:
        return np.array([], int)
    return np.unique(np.linspace(0, n_members - 1, n).round().astype(int))


def _members_row(method: str, omega: np.ndarray) -> dict:
    """A "ensemble members" row of :func:`frequency_table`: median and quartiles of the
    finite frequencies ``omega`` over members (NaN when there are none)."""
    return dict(source="ensemble members", method=method,
                omega=float(np.median(omega)) if omega.size else float("nan"),
                q25=float(np.quantile(omega, 0.25)) if omega.size else float("nan"),
                q75=float(np.quantile(omega, 0.75)) if omega.size else float("nan"))


def frequency_table(t: np.ndarray, x_test: np.ndarray, z_test: np.ndarray,
                    models: Mapping[str, np.ndarray], trajectories: Mapping[str, np.ndarray],
                    coefficients: np.ndarray, terms: Sequence[str], latents: Sequence[str],
                    member_trajectories: Mapping[int, np.ndarray] | None = None,
                    t_model: np.ndarray | None = None) -> pd.DataFrame:
    """The identified angular frequencies next to the simulation's (rad per time unit).

    ``models`` / ``trajectories`` are keyed by a label (e.g. "mean model (all terms)");
    trajectories (and member trajectories) are sampled at ``t_model`` (default ``t``).
    """
    t_model = t if t_model is None else t_model
    rows = [dict(source="simulation", method="test snapshots: PCA scores, sinusoid fit",
                 omega=data_frequency(t, x_test)),
            dict(source="encoded test data", method="ensemble-mean latents, sinusoid fit",
                 omega=series_frequency(t, z_test))]
    for name, xi in models.items():
        a = linear_block(xi, terms, latents)
        a_sin = linear_block(xi, terms, latents, include_sines=True)
        rows += [
            dict(source=name, method="integrated trajectory, sinusoid fit",
                 omega=series_frequency(t_model, trajectories[name])),
            dict(source=name, method="eigenvalues of the linear block",
                 omega=eigen_frequency(a)),
            dict(source=name, method="sqrt(-xi[z2,dz1] xi[z1,dz2])",
                 omega=product_frequency(a)),
            dict(source=name, method="eigenvalues of the Jacobian at 0 (linear + sine)",
                 omega=eigen_frequency(a_sin)),
        ]
    if member_trajectories:
        om = np.array([series_frequency(t_model, tr) for tr in member_trajectories.values()])
        ok = om[np.isfinite(om)]
        rows.append(_members_row(
            f"median over {len(om)} integrated members ({len(ok)} oscillate)", ok))
    c = np.asarray(coefficients, np.float64)
    for label, sines in (("linear block", False), ("Jacobian at 0 (linear + sine)", True)):
        om = np.array([eigen_frequency(linear_block(c[m], terms, latents, sines))
                       for m in range(c.shape[0])])
        om = om[np.isfinite(om)]
        rows.append(_members_row(f"median over members of eigenvalues of the {label}", om))
    table = pd.DataFrame(rows)
    ref = table.loc[0, "omega"]
    table["relative_error"] = (table["omega"] - ref) / ref
    return table


def linear_invariants(xi: np.ndarray, terms, latents) -> dict[str, float]:
    """Frequencies of a model's linear part: eigenvalues of the linear block
    (``linear``), sqrt(−ξ[z2, ż1]·ξ[z1, ż2]) (``cross``) and the Jacobian at 0 with the
    sine terms (``jacobian``)."""
    a = linear_block(xi, terms, latents)
    return {"linear": eigen_frequency(a), "cross": product_frequency(a),
            "jacobian": eigen_frequency(linear_block(xi, terms, latents, include_sines=True))}

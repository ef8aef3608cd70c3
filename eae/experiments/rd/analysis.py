"""Analysis of the SINDy-EAE coefficient ensemble (SPEC §3.1): Table 4, Figs 1d–f and 4,
and the identified oscillation frequency.

Conventions. ``coefficients[member, term, latent]`` is the coefficient of library term
``term`` in dz_latent/dt, so a model Ξ [term, latent] gives ż = Θ(z) Ξ. The linear block
is A[i, j] = Ξ[z_j, latent i] (ż = A z + …). A coefficient is *significant* when the
magnitudes of both its ensemble mean and its dominant mode exceed the threshold (0.1 in
the paper). The *mean model* and the *modal model* keep only significant terms
(``significant``, the paper's choice) or all terms (``all``, the default: the library's
columns are nearly collinear — sin z ≈ z − z³/6 — so members trade coefficients between
correlated terms and dropping the small ones can break the balance); both variants go
into frequency.csv, the figure shows ``model_terms``. Ensemble members are integrated
with their own complete Ξ from their own encoding of the earliest test snapshot.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from eae.support.io import atomic_paths
from eae.support.settings import settings_from

logger = logging.getLogger("eae")

DOT = "\u0307"  # combining dot above: "z" + DOT renders as ż


@dataclass(frozen=True)
class AnalysisParams:
    """The ``rd.analysis`` config section."""

    threshold: float = 0.1
    kde_grid_points: int = 2048
    kde_max_samples: int = 5000
    n_pairs: int = 2
    model_terms: str = "all"
    n_member_trajectories: int = 5
    integration_rtol: float = 1e-8
    escape_factor: float = 20.0
    min_periods: float = 5.0
    sensitivity_members: int = 200
    omega_tolerance: float = 0.05
    seed: int = 0

    @classmethod
    def from_dict(cls, cfg: Mapping | None) -> "AnalysisParams":
        params = settings_from(cls, cfg, "rd.analysis")
        if params.model_terms not in ("significant", "all"):
            raise ValueError(f"rd.analysis.model_terms must be 'significant' or 'all', "
                             f"got {params.model_terms!r}")
        if params.threshold < 0 or params.kde_grid_points < 16 or params.n_pairs < 1:
            raise ValueError(f"rd.analysis: threshold >= 0, kde_grid_points >= 16 and "
                             f"n_pairs >= 1 required, got {cfg}")
        return params


#: The paper's Table 4 (mean, mode) per (latent, term), in library order.
PAPER_TABLE4 = {
    "z1": {"z1": (0.47, 0.48), "z2": (1.00, 1.17), "z1^2": (0.00, 0.00), "z1 z2": (0.00, 0.00),
           "z2^2": (-0.03, -0.01), "z1^3": (0.00, -0.01), "z1^2 z2": (-0.02, -0.03),
           "z1 z2^2": (-0.03, -0.03), "z2^3": (0.03, 0.02), "sin(z1)": (0.36, 0.31),
           "sin(z2)": (0.86, 0.81)},
    "z2": {"z1": (-1.98, -1.98), "z2": (-1.37, -0.38), "z1^2": (0.01, 0.00),
           "z1 z2": (-0.03, -0.03), "z2^2": (-0.03, -0.01), "z1^3": (-0.05, -0.07),
           "z1^2 z2": (0.09, -0.03), "z1 z2^2": (0.14, -0.03), "z2^3": (0.09, 0.02),
           "sin(z1)": (0.13, 0.31), "sin(z2)": (0.11, 0.85)},
}


# -- one-dimensional summaries -------------------------------------------------------------


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


def table4(summary: pd.DataFrame, robust: pd.DataFrame | None = None) -> pd.DataFrame:
    """The paper's layout: rows = library terms, columns per latent derivative
    (``z1dot_mean``, ``z1dot_mode``, ``z1dot_significant``, ``z2dot_…``); with
    ``robust`` (:func:`eae.experiments.rd.identifiability.robustness`) also ``z1dot_status``
    ("robust" / "depends": whether the significance survives other ridges, a constant
    term and centred codes)."""
    terms = list(dict.fromkeys(summary["term"]))
    out = pd.DataFrame({"term": terms})
    for lat in dict.fromkeys(summary["latent"]):
        part = summary[summary["latent"] == lat].set_index("term").loc[terms]
        out[f"{lat}dot_mean"] = part["mean"].to_numpy()
        out[f"{lat}dot_mode"] = part["mode"].to_numpy()
        out[f"{lat}dot_significant"] = part["significant"].to_numpy()
        if robust is not None:
            status = robust[robust["latent"] == lat].set_index("term")["status"]
            out[f"{lat}dot_status"] = [status.get(t, "not tested") for t in terms]
    return out


def table4_markdown(table: pd.DataFrame, threshold: float, digits: int = 2,
                    notes: Sequence[str] = ()) -> str:
    """Markdown rendering of :func:`table4`; significant coefficients in bold, † where
    the significance depends on the ridge / constant term / centring; ``notes`` are
    appended as bullet points."""
    latents = [c[: -len("dot_mean")] for c in table.columns if c.endswith("dot_mean")]
    header = ["term"] + [f"{lat}{DOT} {w}" for lat in latents for w in ("mean", "mode")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [f"{row['term']}"]
        for lat in latents:
            bold = bool(row[f"{lat}dot_significant"])
            dagger = " †" if row.get(f"{lat}dot_status") == "depends" else ""
            for w in ("mean", "mode"):
                text = f"{row[f'{lat}dot_{w}']:.{digits}f}"
                cells.append((f"**{text}**" if bold else text) + (dagger if w == "mode" else ""))
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"Ensemble mean and dominant mode (Gaussian KDE) of each coefficient; bold: "
                 f"both exceed {threshold:g} in magnitude (significant).")
    if any(c.endswith("dot_status") for c in table.columns):
        lines.append("†: significance depends on the solve's choices (ridge 0 … 0.1, a constant "
                     "term, centred codes; see table4_identifiability.md): the data do not fix "
                     "this coefficient.")
    lines += [""] + [f"- {n}" for n in notes] if notes else []
    return "\n".join(lines) + "\n"


# -- correlations and linear pairs -----------------------------------------------------------


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


# -- models, integration and frequencies -----------------------------------------------------


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
        rows.append(dict(source="ensemble members",
                         method=f"median over {len(om)} integrated members ({len(ok)} oscillate)",
                         omega=float(np.median(ok)) if ok.size else float("nan"),
                         q25=float(np.quantile(ok, 0.25)) if ok.size else float("nan"),
                         q75=float(np.quantile(ok, 0.75)) if ok.size else float("nan")))
    c = np.asarray(coefficients, np.float64)
    for label, sines in (("linear block", False), ("Jacobian at 0 (linear + sine)", True)):
        om = np.array([eigen_frequency(linear_block(c[m], terms, latents, sines))
                       for m in range(c.shape[0])])
        om = om[np.isfinite(om)]
        rows.append(dict(source="ensemble members",
                         method=f"median over members of eigenvalues of the {label}",
                         omega=float(np.median(om)) if om.size else float("nan"),
                         q25=float(np.quantile(om, 0.25)) if om.size else float("nan"),
                         q75=float(np.quantile(om, 0.75)) if om.size else float("nan")))
    table = pd.DataFrame(rows)
    ref = table.loc[0, "omega"]
    table["relative_error"] = (table["omega"] - ref) / ref
    return table


# -- figures ----------------------------------------------------------------------------------


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_correlation(corr: np.ndarray, labels: Sequence[str], path) -> None:
    """Fig 4: the coefficient correlation matrix."""
    plt = _plt()
    n = len(labels)
    fig, ax = plt.subplots(figsize=(0.32 * n + 2.5, 0.32 * n + 1.5))
    cmap = plt.get_cmap("RdBu_r").with_extremes(bad="0.85")
    im = ax.imshow(np.ma.masked_invalid(corr), cmap=cmap, vmin=-1, vmax=1)
    ax.set_xticks(range(n), labels, rotation=90, fontsize=7)
    ax.set_yticks(range(n), labels, fontsize=7)
    ax.set_title("SINDy-EAE coefficient correlations over the encoder ensemble")
    fig.colorbar(im, ax=ax, shrink=0.8, label="Pearson r")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _a_label(i: int, j: int, latents: Sequence[str]) -> str:
    return f"ξ[{latents[j]} → {latents[i][0]}{DOT}{latents[i][1:]}]"


def plot_pairs_kde(coefficients: np.ndarray, terms, latents, pairs, path,
                   params: AnalysisParams = AnalysisParams()) -> list[dict]:
    """Fig 1d: 2-D KDE of the most co-varying pairs of linear coefficients, with the
    pair's KDE mode and the point it maps to under the z1 ↔ z2 permutation
    (A → P A P). Returns one dict per pair (labels, corr, mode, permuted)."""
    plt = _plt()
    idx = linear_coefficient_index(terms, latents)
    c = np.asarray(coefficients, np.float64)
    fig, axes = plt.subplots(1, len(pairs), figsize=(4.6 * len(pairs), 4.2), squeeze=False)
    info = []
    for ax, (pa, pb, r) in zip(axes[0], pairs):
        a = c[:, idx[pa][0], idx[pa][1]]
        b = c[:, idx[pb][0], idx[pb][1]]
        mode, _ = kde_mode_2d(a, b, max_samples=params.kde_max_samples, seed=params.seed)
        # Under the z1 ↔ z2 permutation A[i, j] → A[1-i, 1-j]: where the mode would be
        # if the ensemble held the permuted model too (the paper's superposition).
        swap = {k: (1 - k[0], 1 - k[1]) for k in idx}
        perm = None
        if swap[pa] == pb:
            perm = (mode[1], mode[0])
        _, grid = kde_mode_2d(a, b, max_samples=params.kde_max_samples, seed=params.seed,
                              include=[perm] if perm is not None else [])
        if grid is not None:
            ax.contourf(*grid, levels=14, cmap="viridis")
        ax.scatter(a, b, s=2, c="w", alpha=0.25, linewidths=0)
        ax.plot(*mode, "r+", ms=14, mew=2, label=f"KDE mode ({mode[0]:.2f}, {mode[1]:.2f})")
        if perm is not None:
            if grid is not None:
                lo = max(grid[0].min(), grid[1].min())
                hi = min(grid[0].max(), grid[1].max())
                if hi > lo:
                    ax.plot([lo, hi], [lo, hi], "w--", lw=0.8)
            ax.plot(*perm, "wx", ms=10, mew=2, label="mode under z1 ↔ z2")
        ax.set_xlabel(_a_label(*pa, latents))
        ax.set_ylabel(_a_label(*pb, latents))
        ax.set_title(f"r = {r:+.2f}")
        ax.legend(fontsize=7, loc="best")
        info.append(dict(first=_a_label(*pa, latents), second=_a_label(*pb, latents),
                         corr=r, mode=mode, permuted=perm))
    fig.suptitle("Most co-varying linear SINDy coefficients (2-D KDE over the ensemble)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return info


def plot_dynamics(t: np.ndarray, z_test: np.ndarray, trajectories: Mapping[str, np.ndarray],
                  member_trajectories: Mapping[int, np.ndarray], latents, path,
                  t_model: np.ndarray | None = None) -> None:
    """Figs 1e–f: latent trajectories z(t) and phase portraits of the identified models
    (sampled at ``t_model``, default ``t``) beside the encoded test data."""
    t_model = t if t_model is None else t_model
    plt = _plt()
    fig = plt.figure(figsize=(13, 4.6))
    grid = fig.add_gridspec(2, 2, width_ratios=[2.2, 1])
    ax_t = [fig.add_subplot(grid[i, 0]) for i in range(2)]
    ax_p = fig.add_subplot(grid[:, 1])
    def style(name):  # keys like "mean model (all terms)"
        if name.startswith("mean"):
            return dict(color="tab:red", lw=1.6)
        if name.startswith("mode"):
            return dict(color="tab:blue", lw=1.6, ls="--")
        return {}

    for m, traj in member_trajectories.items():
        kw = dict(color="0.55", lw=0.6, alpha=0.7)
        for i in range(2):
            ax_t[i].plot(t_model, traj[:, i], **kw)
        first = m == min(member_trajectories)
        ax_p.plot(traj[:, 0], traj[:, 1], **kw, label="members" if first else None)
    for i in range(2):
        # a broad translucent band, so the model curves drawn on top leave it visible
        ax_t[i].plot(t, z_test[:, i], color="k", lw=5, alpha=0.25, label="encoded test data")
        for name, traj in trajectories.items():
            ax_t[i].plot(t_model, traj[:, i], label=name, **style(name))
        ax_t[i].set_ylabel(latents[i])
    ax_t[1].set_xlabel("time")
    ax_t[0].legend(fontsize=7, ncol=3, loc="upper right")
    ax_t[0].set_title("(e) latent trajectories from the encoding of the earliest test snapshot")
    ax_p.plot(z_test[:, 0], z_test[:, 1], color="k", lw=5, alpha=0.25, label="encoded test data")
    for name, traj in trajectories.items():
        ax_p.plot(traj[:, 0], traj[:, 1], label=name, **style(name))
    ax_p.plot(*z_test[0], "ko", ms=5)
    ax_p.set_xlabel(latents[0])
    ax_p.set_ylabel(latents[1])
    ax_p.set_title("(f) phase portrait")
    ax_p.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


# -- the stage ----------------------------------------------------------------------------------


def analyse(ds, x_test: np.ndarray, params: AnalysisParams) -> dict:
    """Everything the stage writes, from an opened coefficient store and the test
    snapshots: summary, table, correlation, pairs, models, trajectories, frequencies."""
    from eae.core.sindy import SindyLibrary

    terms = [str(s) for s in ds["term"].values]
    latents = [str(s) for s in ds["latent"].values]
    # the library the coefficients belong to, as the store names it (stores written
    # before it did hold the default one)
    library = SindyLibrary.from_attrs(ds.attrs, default=SindyLibrary(len(latents)))
    if library.names != terms:
        raise ValueError(f"coefficient store: its terms {terms} are not those of its library "
                         f"{library.names}")
    coeffs = np.asarray(ds["coefficients"].values, np.float64)
    t = np.asarray(ds["time"].values, np.float64)
    codes = ds["latent_code"]
    z_mean = np.asarray(ds["latent_code_mean"].values, np.float64)
    if len(t) != len(x_test):
        raise ValueError(f"rd_analysis: the coefficient store has {len(t)} test samples, "
                         f"the dataset's test split {len(x_test)}")
    order = np.argsort(t)  # integrate forward from the earliest test snapshot
    t, z_mean, x_test = t[order], z_mean[order], x_test[order]
    summary = coefficient_summary(coeffs, terms, latents, params)
    bound = params.escape_factor * max(1.0, float(np.nanmax(np.abs(z_mean))))
    # Integrate over the test window, extended to at least min_periods periods of the
    # data's oscillation (a reduced test set may hold only ~1.5 periods).
    omega_data = data_frequency(t, x_test)
    dt = float(np.median(np.diff(t)))
    horizon = t[-1] - t[0]
    if np.isfinite(omega_data) and omega_data > 0:
        horizon = max(horizon, params.min_periods * 2 * math.pi / omega_data)
    else:  # less than a period of test data (tiny CI configs): min_periods windows
        horizon = max(horizon, params.min_periods * horizon)
    t_model = t[0] + dt * np.arange(int(round(horizon / dt)) + 1)
    all_models, all_traj = {}, {}
    for variant in ("all", "significant"):
        for name, xi in identified_models(coeffs, summary, terms, latents, variant).items():
            label = f"{name} model ({variant} terms)"
            all_models[label] = xi
            all_traj[label] = integrate_model(xi, z_mean[0], t_model, params.integration_rtol,
                                              bound, library.numpy)
    # The figure shows the configured variant.
    shown = [f"{n} model ({params.model_terms} terms)" for n in ("mean", "mode")]
    models = {label: all_models[label] for label in shown}
    trajectories = {label: all_traj[label] for label in shown}
    members = member_choice(coeffs.shape[0], params.n_member_trajectories)
    member_traj = {}
    for m in members:
        z0 = np.asarray(codes.isel(member=int(m)).values, np.float64)[order][0]
        member_traj[int(m)] = integrate_model(coeffs[m], z0, t_model, params.integration_rtol,
                                              bound, library.numpy)
    freq = frequency_table(t, x_test, z_mean, all_models, all_traj, coeffs, terms, latents,
                           member_traj, t_model)
    ident = identifiability(ds, order, z_mean, terms, latents, t_model, bound, params)
    if ident is not None:
        freq = label_ill_posed(freq, ident["sensitivity"])
    notes = reproduction_notes(freq, params.omega_tolerance)
    return dict(identifiability=ident, notes=notes,
                table=table4(summary, ident["robust"] if ident else None), terms=terms, latents=latents, coefficients=coeffs, time=t, z_mean=z_mean,
                model_time=t_model,
                summary=summary, models=models, all_models=all_models,
                trajectories=trajectories, member_trajectories=member_traj,
                correlation=correlation_matrix(coeffs), frequency=freq,
                pairs=top_linear_pairs(coeffs, terms, latents, params.n_pairs))


def identifiability(ds, order: np.ndarray, z_mean: np.ndarray, terms, latents,
                    t_model: np.ndarray, bound: float, params: AnalysisParams) -> dict | None:
    """The identifiability report (:mod:`eae.experiments.rd.identifiability`) on
    ``params.sensitivity_members`` evenly spaced members' stored codes and velocities;
    None for a store without ``latent_velocity`` (written before it was recorded)."""
    from eae.experiments.rd import identifiability as ident
    if "latent_velocity" not in ds:
        logger.warning("rd_analysis: the store has no latent_velocity; the identifiability "
                       "report needs a store written by this version of rd_coefficients")
        return None
    members = member_choice(ds.sizes["member"], params.sensitivity_members)
    codes = np.asarray(ds["latent_code"].isel(member=members).values, np.float64)[:, order]
    velocities = np.asarray(ds["latent_velocity"].isel(member=members).values,
                            np.float64)[:, order]
    table, nulls = ident.sensitivity_table(
        codes, velocities, z_mean, terms, latents, t_model, params.threshold,
        kde=lambda x: kde_mode(x, params.kde_grid_points, params.kde_max_samples, params.seed),
        integrate=lambda xi, z0, t, lib: integrate_model(xi, z0, t, params.integration_rtol,
                                                         bound, library=lib),
        frequency=series_frequency)
    return dict(sensitivity=table, robust=ident.robustness(table), null_equations=nulls,
                members=len(members))


def label_ill_posed(freq: pd.DataFrame, sensitivity: pd.DataFrame) -> pd.DataFrame:
    """Add a ``note`` to the frequencies read off the linear block (or the Jacobian at 0)
    when a near-null combination of the fitted library moves those coefficients: the
    data do not fix them (:func:`eae.experiments.rd.identifiability.ill_posed`)."""
    fitted = sensitivity[sensitivity["library"] == "as fitted"]
    ill = bool(fitted["linear_block_ill_posed"].any()) if len(fitted) else False
    ill_jac = bool(fitted["jacobian_ill_posed"].any()) if len(fitted) else False
    freq = freq.copy()
    jacobian = freq["method"].str.contains("Jacobian at 0", regex=False)
    linear = ~jacobian & freq["method"].str.contains("linear block|sqrt\\(-xi", regex=True)
    text = "ill-posed: a near-null combination of the library moves these coefficients"
    freq["note"] = np.where((linear & ill) | (jacobian & ill_jac), text, "")
    return freq


def reproduction_notes(freq: pd.DataFrame, tolerance: float) -> list[str]:
    """Whether each integrated identified model reproduces the simulation's ω (within
    ``tolerance``): the claim a model built from the significant terms makes."""
    notes = []
    sim = float(freq.loc[0, "omega"])
    rows = freq[freq["method"] == "integrated trajectory, sinusoid fit"]
    for r in rows.itertuples():
        err = (r.omega - sim) / sim if np.isfinite(r.omega) and sim else math.nan
        ok = np.isfinite(err) and abs(err) <= tolerance
        verdict = ("reproduces the dynamics" if ok else
                   "**does not reproduce the dynamics**")
        omega = f"{r.omega:.4g}" if np.isfinite(r.omega) else "no oscillation"
        pct = f"{100 * err:+.1f} %" if np.isfinite(err) else "—"
        notes.append(f"{r.source}: ω of the integrated model {omega} vs simulation {sim:.4g} "
                     f"({pct}): {verdict} (tolerance {100 * tolerance:g} %).")
    return notes


def _write_identifiability(result: Mapping, params: AnalysisParams, md_path, csv_path) -> None:
    from eae.experiments.rd.identifiability import identifiability_markdown

    ident = result["identifiability"]
    if ident is None:
        text = ("# SINDy identifiability\n\nNot available: the coefficient store has no "
                "`latent_velocity` (rerun rd_coefficients with this version).\n")
        md_path.write_text(text)
        pd.DataFrame().to_csv(csv_path, index=False)
        return
    omega_sim = float(result["frequency"].loc[0, "omega"])
    md_path.write_text(identifiability_markdown(ident["sensitivity"], ident["robust"],
                                                ident["null_equations"], omega_sim,
                                                params.threshold)
                       + f"\nRe-solved on {ident['members']} evenly spaced members.\n")
    ident["sensitivity"].to_csv(csv_path, index=False, float_format="%.6g")


def paper_model(which: str, terms: Sequence[str], latents: Sequence[str]) -> np.ndarray:
    """Ξ of the paper's Table 4 ("mean" or "mode")."""
    k = 0 if which == "mean" else 1
    return np.array([[PAPER_TABLE4[lat][t][k] for lat in latents] for t in terms])


def linear_invariants(xi: np.ndarray, terms, latents) -> dict[str, float]:
    """Frequencies of a model's linear part: eigenvalues of the linear block
    (``linear``), sqrt(−ξ[z2, ż1]·ξ[z1, ż2]) (``cross``) and the Jacobian at 0 with the
    sine terms (``jacobian``)."""
    a = linear_block(xi, terms, latents)
    return {"linear": eigen_frequency(a), "cross": product_frequency(a),
            "jacobian": eigen_frequency(linear_block(xi, terms, latents, include_sines=True))}


def table4_vs_paper(result: Mapping, params: AnalysisParams) -> str:
    """Markdown: our Table 4 (mean / mode, significance, robustness) beside the paper's,
    the invariants of each model, and each integrated model's ω against the simulation's."""
    terms, latents, table = result["terms"], result["latents"], result["table"]
    freq = result["frequency"]
    sim = float(freq.loc[0, "omega"])
    header = ["term"]
    for lat in latents:
        header += [f"{lat}{DOT} ours mean / mode", f"{lat}{DOT} paper mean / mode"]
    lines = ["# Table 4: this run beside the paper", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for _, row in table.iterrows():
        cells = [row["term"]]
        for lat in latents:
            mean, mode = row[f"{lat}dot_mean"], row[f"{lat}dot_mode"]
            text = f"{mean:.2f} / {mode:.2f}"
            if row[f"{lat}dot_significant"]:
                text = f"**{text}**"
            if row.get(f"{lat}dot_status") == "depends":
                text += " †"
            pm, pmode = PAPER_TABLE4[lat].get(row["term"], (math.nan, math.nan))
            ptext = f"{pm:.2f} / {pmode:.2f}"
            cells += [text, f"**{ptext}**" if abs(pm) > params.threshold and abs(pmode) > params.threshold else ptext]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Bold: |mean| and |mode| > {params.threshold:g} (significant); †: the "
              "significance depends on the ridge, a constant term or centring "
              "(table4_identifiability.md). Latents are defined up to scale, sign and "
              "permutation, so compare the invariants below, not raw coefficients.", "",
              "## Invariants (rad per time unit)", "",
              f"Simulation: ω = {sim:.4g}.", "",
              "| model | ω linear block | sqrt(−ξ[z2,ż1]·ξ[z1,ż2]) | ω Jacobian at 0 (linear + sine) | ω integrated | vs simulation |",
              "|---|---|---|---|---|---|"]
    integrated = freq[freq["method"] == "integrated trajectory, sinusoid fit"].set_index("source")["omega"]
    models = {f"ours: {name}": xi for name, xi in result["all_models"].items()}
    models.update({"paper: mean model": paper_model("mean", terms, latents),
                   "paper: mode model": paper_model("mode", terms, latents)})
    for name, xi in models.items():
        inv = linear_invariants(xi, terms, latents)
        key = name.removeprefix("ours: ")
        omega = float(integrated.get(key, math.nan)) if name.startswith("ours") else math.nan
        err = (omega - sim) / sim if np.isfinite(omega) else math.nan
        verdict = ("—" if not np.isfinite(err) else
                   f"{100 * err:+.1f} % ({'reproduces' if abs(err) <= params.omega_tolerance else '**does not reproduce**'})")
        lines.append(f"| {name} | {_f(inv['linear'])} | {_f(inv['cross'])} | {_f(inv['jacobian'])} | "
                     f"{_f(omega)} | {verdict} |")
    lines += ["", "The paper's models are not integrated here: their latents live on the "
              "paper's (unknown) code scale, so no initial condition of ours is theirs; their "
              "linear-block invariants are scale-free for the linear terms only.",
              f"A model reproduces the dynamics when its integrated ω is within "
              f"{100 * params.omega_tolerance:g} % of the simulation's (rd.analysis.omega_tolerance)."]
    return "\n".join(lines) + "\n"


def _f(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.4g}"


def rd_analysis_stage(cfg: Mapping | None, coefficients_path, data_path, outputs: Mapping) -> dict:
    """Stage ``rd_analysis``: Table 4 (csv, md), Figs 4, 1d, 1e–f and frequency.csv.

    ``outputs`` maps table_csv, table_md, fig_correlation, fig_kde, fig_dynamics,
    frequency to paths. Each gets a provenance sidecar (results/provenance/…).
    """
    from eae.support.io import open_ensemble, read_provenance
    from eae.support.provenance import make_record, now_iso, record_outputs
    from eae.experiments.rd.data import load_rd_split

    started = now_iso()
    params = AnalysisParams.from_dict(cfg)
    missing = sorted({"table_csv", "table_md", "fig_correlation", "fig_kde", "fig_dynamics",
                      "frequency", "identifiability", "sensitivity", "vs_paper"} - set(outputs))
    if missing:
        raise KeyError(f"rd_analysis: output path(s) {missing} not given")
    ds = open_ensemble(coefficients_path)
    for name in ("coefficients", "latent_code", "latent_code_mean"):
        if name not in ds:
            raise ValueError(f"{coefficients_path}: variable {name!r} missing (not a "
                             f"rd_coefficients store?)")
    test = load_rd_split(data_path, "test")
    result = analyse(ds, test["x"], params)
    paths = {k: Path(v) for k, v in outputs.items()}
    # Everything is written under temporary names (same suffix, so matplotlib picks the
    # format) and renamed at the end: a failure leaves no partial set of outputs.
    with atomic_paths(paths) as tmp:
        result["table"].to_csv(tmp["table_csv"], index=False, float_format="%.6g")
        tmp["table_md"].write_text(table4_markdown(result["table"], params.threshold,
                                                   notes=result["notes"]))
        _write_identifiability(result, params, tmp["identifiability"], tmp["sensitivity"])
        tmp["vs_paper"].write_text(table4_vs_paper(result, params))
        result["frequency"].to_csv(tmp["frequency"], index=False, float_format="%.6g")
        plot_correlation(result["correlation"],
                         coefficient_labels(result["terms"], result["latents"]),
                         tmp["fig_correlation"])
        pairs_info = plot_pairs_kde(result["coefficients"], result["terms"], result["latents"],
                                    result["pairs"], tmp["fig_kde"], params)
        plot_dynamics(result["time"], result["z_mean"], result["trajectories"],
                      result["member_trajectories"], result["latents"], tmp["fig_dynamics"],
                      result["model_time"])
    equations = {name: equation_strings(xi, result["terms"], result["latents"])
                 for name, xi in result["all_models"].items()}
    for name, lines in equations.items():
        logger.info("%s model: %s", name, "; ".join(lines))
    for _, row in result["frequency"].iterrows():
        logger.info("omega %-18s %-55s %.4f (%+.1f%%)", row["source"], row["method"],
                    row["omega"], 100 * row["relative_error"])
    record = make_record("rd_analysis", config=vars(params), seeds={"analysis": params.seed},
                         inputs=[coefficients_path, data_path], started=started,
                         modules=["eae.experiments.rd.analysis"],
                         extra={"equations": equations, "pairs": pairs_info,
                                "ensemble_config": read_provenance(ds).get("config", {})})
    record_outputs(record, list(paths.values()))
    result["equations"] = equations
    result["pairs_info"] = pairs_info
    return result

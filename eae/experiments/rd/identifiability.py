"""Which SINDy coefficients the stored codes can identify, and which merely reflect choices.

On a limit cycle the 11-term library is nearly rank-deficient by construction: the
orbit z(t) satisfies a quadratic relation, and z times that relation is a combination of
library terms (z₁³ + z₁z₂² ≈ A²z₁ on a circle), while sin z ≈ z − z³/6 for small codes. A
near-null combination of columns can be added to Ξ at almost no cost in residual, so
the coefficients along it are set by the ridge, the centring of the codes or a constant
term — not by the data. This module re-solves Ξ on the stored codes and velocities of
an ``rd_coefficients`` store (no retraining) and reports:

* the condition number of the column-normalised library on the ensemble-mean codes and
  its near-null combinations as readable equations (:func:`near_null_combinations`);
* a sensitivity table (:func:`sensitivity_table`): for ridge 0, 1e-6, 1e-3, 1e-1 and
  three libraries (as fitted; with a constant term; of centred codes) the per-term
  significance under Table 4's rule and the invariants that do not depend on the
  latents' scale, sign or permutation — ω of the integrated ensemble-mean model, ω of
  the linear block's eigenvalues and sqrt(−ξ[z₂, ż₁] ξ[z₁, ż₂]) (the cross terms'
  product) — each labelled ill-posed when a near-null combination moves the linear
  coefficients (:func:`ill_posed`);
* :func:`robustness`: per (latent, term) whether its significance holds under every
  setting ("robust") or depends on them ("depends"), which Table 4 marks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from eae.core.sindy import column_normalised, minimum_norm_solves, sindy_library_np

__all__ = ["RIDGES", "LIBRARIES", "Library", "make_library", "condition_number",
           "near_null_combinations", "null_equations", "ill_posed", "member_coefficients",
           "sensitivity_table", "robustness", "identifiability_markdown"]

#: ridges of the sensitivity table (dimensionless, as ``rd.eae.loss.ridge``)
RIDGES = (0.0, 1e-6, 1e-3, 1e-1)
#: libraries of the sensitivity table
LIBRARIES = ("as fitted", "with constant", "centred codes")
#: a direction is near-null when its eigenvalue of the normalised Gram matrix ΘₙᵀΘₙ/n
#: (diagonal 1, trace = number of terms) is below this — the default training ridge
#: (rd.eae.loss.ridge): along such directions the ridge, not the data, sets Ξ
NULL_EIGENVALUE = 1e-3
#: a near-null combination involves a term when its normalised weight exceeds this
INVOLVES = 0.1


@dataclass(frozen=True)
class Library:
    """A candidate library: ``names`` and ``theta(z)`` → [n, terms] (NumPy)."""

    kind: str
    names: tuple[str, ...]
    theta: Callable[[np.ndarray], np.ndarray]


def make_library(kind: str, names: Sequence[str], centre: np.ndarray | None = None) -> Library:
    """The 11-term library ``names`` as fitted, with a constant column first, or of codes
    centred on ``centre`` (the ensemble-mean code's time average)."""
    names = tuple(str(n) for n in names)
    if kind == "as fitted":
        return Library(kind, names, sindy_library_np)
    if kind == "with constant":
        return Library(kind, ("1",) + names,
                       lambda z: np.concatenate([np.ones((len(z), 1)), sindy_library_np(z)], 1))
    if kind == "centred codes":
        if centre is None:
            raise ValueError("a centred library needs the centre")
        c = np.asarray(centre, np.float64)
        return Library(kind, names, lambda z: sindy_library_np(np.asarray(z) - c))
    raise ValueError(f"library must be one of {LIBRARIES}, got {kind!r}")


def condition_number(theta: np.ndarray) -> float:
    """Condition number of the column-normalised library (s_max / s_min)."""
    s = np.linalg.svd(column_normalised(theta)[0], compute_uv=False)
    return float(s[0] / s[-1]) if s[-1] > 0 else math.inf


def near_null_combinations(theta: np.ndarray, tolerance: float = NULL_EIGENVALUE
                           ) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """[(λ, c, w)] for each eigenvector v of the normalised Gram matrix ΘₙᵀΘₙ/n with
    eigenvalue λ < ``tolerance``: c holds raw-term coefficients with Θ c ≈ 0 (v / column
    RMS) and w = |v| / max |v| the terms' normalised weights."""
    a, scale = column_normalised(theta)
    _, s, vt = np.linalg.svd(a / np.sqrt(len(a)), full_matrices=False)
    out = []
    for k in range(len(s)):
        rel = float(s[k] ** 2)
        if rel < tolerance:
            v = vt[k] / vt[k][np.argmax(np.abs(vt[k]))]
            out.append((rel, v / scale, np.abs(v)))
    return out


def null_equations(combos, names: Sequence[str], digits: int = 3,
                   min_weight: float = 0.05) -> list[str]:
    """Readable "z1^3 + 1.00 z1 z2^2 − 4.95 z1 ≈ 0 (Gram eigenvalue 3e-04)" in
    raw terms, leading term first; terms of normalised weight below ``min_weight`` are
    left out."""
    lines = []
    for rel, c, w in combos:
        order = [j for j in np.argsort(-w) if w[j] >= min_weight]
        lead = c[order[0]]
        text = str(names[order[0]])
        for j in order[1:]:
            k = c[j] / lead
            text += f" {'−' if k < 0 else '+'} {abs(k):.{digits}g} {names[j]}"
        lines.append(f"{text} ≈ 0 (Gram eigenvalue {rel:.1e})")
    return lines


def ill_posed(combos, names: Sequence[str], functional: Mapping[str, float],
              theta: np.ndarray) -> bool:
    """Is the linear functional Σ_t f_t Ξ[t] (``functional``: term → f_t) left unfixed
    by the data, i.e. not orthogonal to a near-null combination? In normalised units
    (Ξ_n = Ξ · column RMS) a null direction v moves it by (f / RMS)·v; ill-posed when
    that exceeds :data:`INVOLVES` × ‖f / RMS‖ ‖v‖. The linear block's ξ[z_j] alone is
    ill-posed under z − sin z ≈ 0; the Jacobian at 0, ξ[z_j] + ξ[sin z_j], is not."""
    _, scale = column_normalised(theta)
    f = np.zeros(len(names))
    for term, weight in functional.items():
        if term in names:
            f[list(names).index(term)] = weight
    f = f / scale
    if not np.any(f):
        return False
    for _, c, _ in combos:
        v = c * scale  # back to normalised units
        if abs(f @ v) > INVOLVES * np.linalg.norm(f) * np.linalg.norm(v):
            return True
    return False


def member_coefficients(codes: np.ndarray, velocities: np.ndarray, library: Library,
                        ridges: Sequence[float]) -> np.ndarray:
    """Ξ [ridges, members, terms, latent] re-solved per member on its stored codes
    z [M, n, d] and velocities ż [M, n, d], one SVD per member for all ``ridges``
    (minimum-norm, :func:`eae.core.sindy.minimum_norm_solves`)."""
    per_member = [[sol.xi for sol in minimum_norm_solves(library.theta(z), zd, ridges)]
                  for z, zd in zip(np.asarray(codes, np.float64),
                                   np.asarray(velocities, np.float64))]
    return np.stack(per_member, axis=1)


def _significance(coefficients, names, latents, threshold, kde) -> dict:
    """{(latent, term): (mean, mode, significant)} under Table 4's rule."""
    out = {}
    for k, lat in enumerate(latents):
        for t, term in enumerate(names):
            x = coefficients[:, t, k]
            x = x[np.isfinite(x)]
            mean = float(x.mean()) if x.size else math.nan
            mode = kde(x) if x.size else math.nan
            out[(lat, term)] = (mean, mode, bool(abs(mean) > threshold and abs(mode) > threshold))
    return out


def sensitivity_table(codes: np.ndarray, velocities: np.ndarray, z_mean: np.ndarray,
                      names: Sequence[str], latents: Sequence[str], t_model: np.ndarray,
                      threshold: float, kde: Callable[[np.ndarray], float],
                      integrate: Callable, frequency: Callable,
                      ridges: Sequence[float] = RIDGES,
                      libraries: Sequence[str] = LIBRARIES
                      ) -> tuple[pd.DataFrame, dict[str, list[str]]]:
    """(table, near-null equations per library). The table has one row per (library,
    ridge, latent, term) with the ensemble mean and mode of the re-solved coefficient and
    its significance, plus per (library, ridge) the invariants (``omega_integrated``,
    ``omega_linear``, ``omega_cross``), the library's condition number on the
    ensemble-mean codes and whether the data leave the linear block
    (``linear_block_ill_posed``) or the Jacobian at 0 (linear + sine,
    ``jacobian_ill_posed``) unfixed (:func:`ill_posed`); the equations are
    :func:`null_equations` of the ensemble-mean codes.

    ``integrate(xi, z0, t, library)`` and ``frequency(t, trajectory)`` come from
    :mod:`eae.experiments.rd.analysis` (integration of ż = library(z)·Ξ, sinusoid fit)."""
    from eae.experiments.rd.analysis import linear_invariants

    centre = np.asarray(z_mean, np.float64).mean(axis=0)
    rows, nulls = [], {}
    for kind in libraries:
        lib = make_library(kind, names, centre)
        theta_mean = lib.theta(np.asarray(z_mean, np.float64))
        combos = near_null_combinations(theta_mean)
        nulls[kind] = null_equations(combos, lib.names)
        cond = condition_number(theta_mean)
        ill = any(ill_posed(combos, lib.names, {lat: 1.0}, theta_mean) for lat in latents)
        ill_jac = any(ill_posed(combos, lib.names, {lat: 1.0, f"sin({lat})": 1.0}, theta_mean)
                      for lat in latents)
        for ridge, coeffs in zip(ridges, member_coefficients(codes, velocities, lib, ridges)):
            sig = _significance(coeffs, lib.names, latents, threshold, kde)
            xi_mean = np.nanmean(coeffs, axis=0)
            linear = linear_invariants(xi_mean, lib.names, latents)
            invariants = dict(
                omega_integrated=frequency(t_model, integrate(xi_mean, z_mean[0], t_model,
                                                              lib.theta)),
                omega_linear=linear["linear"], omega_cross=linear["cross"],
                condition_number=cond, linear_block_ill_posed=ill,
                jacobian_ill_posed=ill_jac)
            for (lat, term), (mean, mode, significant) in sig.items():
                rows.append(dict(library=kind, ridge=ridge, latent=lat, term=term, mean=mean,
                                 mode=mode, significant=significant, **invariants))
    return pd.DataFrame(rows), nulls


def robustness(table: pd.DataFrame) -> pd.DataFrame:
    """Per (latent, term) present in every setting: ``robust`` when its significance is
    the same under every (library, ridge), else ``depends``; with the settings' share
    where it is significant."""
    settings = table.groupby(["library", "ridge"]).ngroups
    grouped = table.groupby(["latent", "term"], sort=False)["significant"]
    out = grouped.agg(["count", "sum"]).reset_index()
    out = out[out["count"] == settings]
    out["share_significant"] = out["sum"] / out["count"]
    out["status"] = np.where(out["sum"].isin([0, settings]), "robust", "depends")
    return out[["latent", "term", "share_significant", "status"]].reset_index(drop=True)


def identifiability_markdown(table: pd.DataFrame, robust: pd.DataFrame,
                             null_lines: Mapping[str, Sequence[str]], omega_sim: float,
                             threshold: float) -> str:
    """The identifiability report: condition numbers, near-null combinations, the
    invariants per setting and the per-term significance across settings."""
    lines = ["# SINDy identifiability on the stored test codes", "",
             "Ξ re-solved per ensemble member on its stored codes z and velocities ż = J_E ẋ "
             "(minimum-norm SVD; no retraining), for each library and ridge. Latents are "
             "defined only up to scale, sign and permutation, so models are compared by "
             f"invariants: ω of the integrated ensemble-mean model (simulation: {omega_sim:.4g}), "
             "ω of the linear block's eigenvalues and sqrt(−ξ[z2, ż1]·ξ[z1, ż2]) (the cross "
             "terms' product). A frequency from the linear block is marked *ill-posed* when a "
             "near-null combination of the library moves the coefficients of z1 or z2: the "
             "data do not fix it (the integrated model's ω does not rest on one block).",
             "", "## Near-null combinations (ensemble-mean codes)", "",
             f"Eigenvectors of the column-normalised Gram matrix ΘₙᵀΘₙ/n (diagonal 1) with "
             f"eigenvalue below {NULL_EIGENVALUE:g}, the default training ridge: along them "
             "the ridge, not the data, sets Ξ.", ""]
    first = table.drop_duplicates("library")
    for _, r in first.iterrows():
        lines.append(f"- {r['library']}: condition number {r['condition_number']:.3g}")
        for eq in null_lines.get(r["library"], []) or ["none below the threshold"]:
            lines.append(f"  - {eq}")
    lines += ["", "## Invariants per setting", "",
              "| library | ridge | ω integrated | error vs simulation | ω linear block | "
              "sqrt(−cross product) | significant terms |", "|---|---|---|---|---|---|---|"]
    for (kind, ridge), part in table.groupby(["library", "ridge"], sort=False):
        r = part.iloc[0]
        tag = " (ill-posed)" if r["linear_block_ill_posed"] else ""
        err = (r["omega_integrated"] - omega_sim) / omega_sim if omega_sim else math.nan
        sig = ", ".join(f"{x.latent}: {x.term}" for x in part.itertuples() if x.significant)
        lines.append(f"| {kind} | {ridge:g} | {_num(r['omega_integrated'])} | "
                     f"{_pct(err)} | {_num(r['omega_linear'])}{tag} | "
                     f"{_num(r['omega_cross'])}{tag} | {sig or '—'} |")
    lines += ["", "## Significance across settings", "",
              f"Table 4's rule (|mean| and |mode| > {threshold:g}) under every setting above; "
              "*depends*: significant under some settings only (Table 4 marks these with †).",
              "", "| latent | term | share of settings significant | status |", "|---|---|---|---|"]
    for r in robust.itertuples():
        lines.append(f"| {r.latent} | {r.term} | {r.share_significant:.2f} | {r.status} |")
    return "\n".join(lines) + "\n"


def _num(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.4g}"


def _pct(x) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{100 * x:+.1f} %"

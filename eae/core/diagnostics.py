"""MCMC convergence diagnostics of Simmering encoder ensembles, computed with ArviZ.

An ensemble store is read as an xarray Dataset whose sampled variables carry the dims
``chain`` and ``draw`` (e.g. ``loss (chain, draw)``, ``kinetic_temperature (chain,
draw)``, ``latent (chain, draw, sample, unit)``). For every such variable:

* rank-normalised split-R̂ (Vehtari et al. 2021, ``az.rhat(method="rank")``): the
  larger of the bulk and tail R̂, compared over the chain halves;
* bulk and tail effective sample sizes (``az.ess(method="bulk" | "tail")``);
* the integrated autocorrelation time in draws, ``IAT = chains · draws / ESS_bulk``.

* :func:`convergence_table` — one row per variable, worst and median over components.
* :func:`check_convergence` — human-readable warnings against configured limits.
* :func:`trace_diagnostics` — the same numbers for one ``[steps, chains]`` loss trace,
  cheap enough for the trainer's per-round check.
* :func:`diagnostics_figure` — trace plots and per-chain autocorrelations.
* :func:`diagnostics_stage` — store → CSV table + PNG figure + logged warnings.

Components that are constant (zero variance: R̂ is 0/0 and ArviZ reports ESS = N for
them) or contain NaN/inf are left out of the statistics and counted in the columns
``constant`` and ``nonfinite`` instead, so one frozen unit cannot hide or fake a
convergence problem.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import warnings
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from eae.core.temperature import store_temperature_columns

log = logging.getLogger("eae")

__all__ = [
    "TABLE_COLUMNS",
    "RHAT_KEY",
    "ESS_KEY",
    "STAGE_FIGURE_VARIABLES",
    "sampled_variables",
    "convergence_table",
    "check_convergence",
    "trace_diagnostics",
    "diagnostics_figure",
    "diagnostics_stage",
]

# Where the limits live in the workflow config; named in every warning.
RHAT_KEY = "sampler.diagnostics.rhat_max"
ESS_KEY = "sampler.diagnostics.ess_min"
BETWEEN_KEY = "diagnostics.between_share_max"

MIN_DRAWS = 4  # ArviZ's own minimum for R̂ and ESS

# Traces the stage's figure shows (those absent from a store are skipped).
STAGE_FIGURE_VARIABLES = ("loss", "kinetic_temperature", "latent")

TABLE_COLUMNS = [
    "variable", "elements", "analysed", "constant", "nonfinite", "chains", "draws",
    "rhat", "rhat_median", "ess_bulk", "ess_tail", "ess_bulk_median", "iat", "mean", "sd",
    "between_chain_share",
]
#: pooled members whose variance is mostly chain offsets (share above this) are reported
BETWEEN_SHARE_MAX = 0.5


@functools.cache
def _az():
    """ArviZ, imported on first use: it takes ~1 s and pulls in pyplot, which the
    trainer should not pay for at import; its daily FutureWarning about the ArviZ
    refactor is silenced so that logs stay clean."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        import arviz  # noqa: PLC0415

    return arviz


# --------------------------------------------------------------------------- core


def _require_chain_draw(ds: xr.Dataset, name: str) -> xr.DataArray:
    """The variable ``name`` with ``chain`` and ``draw`` first (ValueError otherwise)."""
    if name not in ds.data_vars:
        raise ValueError(f"diagnostics: variable {name!r} is not in the dataset "
                         f"(has {sorted(map(str, ds.data_vars))})")
    da = ds[name]
    missing = [d for d in ("chain", "draw") if d not in da.dims]
    if missing:
        raise ValueError(f"diagnostics: variable {name!r} has dims {tuple(da.dims)}, "
                         f"missing {missing}; need (chain, draw, ...)")
    if da.sizes["draw"] < MIN_DRAWS:
        raise ValueError(f"diagnostics: variable {name!r} has {da.sizes['draw']} draws; "
                         f"need at least {MIN_DRAWS}")
    return da.transpose("chain", "draw", ...)


def _component_values(da: xr.DataArray, max_elements: int | None,
                      seed: int = 0) -> tuple[np.ndarray, int]:
    """Values as float64 ``[chain, draw, k]`` and the total number of components.

    With ``max_elements`` a seeded random subset of components is taken (random, not a
    stride, so a stride cannot alias with the unit axis and always pick one unit). The
    subset is selected before loading, so a lazily opened Zarr variable is read only
    where needed.
    """
    extra = da.dims[2:]
    shape = tuple(da.sizes[d] for d in extra)
    total = int(np.prod(shape, dtype=np.int64)) if extra else 1
    if not extra:
        return np.asarray(da.values, np.float64)[:, :, None], 1
    if max_elements is not None and max_elements < total:
        flat = np.sort(np.random.default_rng(seed).choice(total, int(max_elements), replace=False))
        index = np.unravel_index(flat, shape)
        da = da.isel({d: xr.DataArray(i, dims="component") for d, i in zip(extra, index)})
        values = np.asarray(da.transpose("chain", "draw", "component").values, np.float64)
    else:
        values = np.asarray(da.values, np.float64).reshape(da.sizes["chain"], da.sizes["draw"], -1)
    return values, total


def _classify(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Masks over components ``[k]``: non-finite anywhere, and constant (finite)."""
    nonfinite = ~np.isfinite(values).all(axis=(0, 1))
    with np.errstate(invalid="ignore"):
        constant = ~nonfinite & (np.ptp(values, axis=(0, 1)) == 0)
    return nonfinite, constant


def _halves_as_chains(values: np.ndarray) -> np.ndarray:
    """A single chain as two chains (its halves; an odd middle draw is dropped).

    ArviZ refuses R̂ for fewer than two chains (it returns NaN); with the halves as
    chains it splits once more, so single-chain R̂ compares the four quarters.
    """
    half = values.shape[1] // 2
    return np.concatenate([values[:, :half], values[:, values.shape[1] - half:]], axis=0)


def _arviz_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """R̂ (rank), ESS bulk and ESS tail per component of ``[chain, draw, k]`` values
    (all finite and non-constant), through ArviZ's Dataset interface."""
    az = _az()
    k = values.shape[2]
    if k == 0:
        empty = np.empty(0)
        return {"rhat": empty, "ess_bulk": empty, "ess_tail": empty}
    dims = ("chain", "draw", "component")
    ds = xr.Dataset({"x": (dims, values)})
    rhat_values = values if values.shape[0] > 1 else _halves_as_chains(values)
    if rhat_values.shape[1] >= MIN_DRAWS:
        rhat = az.rhat(xr.Dataset({"x": (dims, rhat_values)}), method="rank")["x"].values
    else:  # a single chain too short to halve: no R̂, as ArviZ would say
        rhat = np.full(k, np.nan)
    return {
        "rhat": np.asarray(rhat, np.float64).reshape(k),
        "ess_bulk": np.asarray(az.ess(ds, method="bulk")["x"].values, np.float64).reshape(k),
        "ess_tail": np.asarray(az.ess(ds, method="tail")["x"].values, np.float64).reshape(k),
    }


def _nanmax(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.max()) if x.size else math.nan


def _nanmin(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(x.min()) if x.size else math.nan


def _nanmedian(x: np.ndarray) -> float:
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else math.nan


def _variable_row(name: str, da: xr.DataArray, max_elements: int | None) -> dict[str, Any]:
    values, total = _component_values(da, max_elements)
    chains, draws, k = values.shape
    nonfinite, constant = _classify(values)
    ok = ~nonfinite & ~constant
    stats = _arviz_stats(values[:, :, ok])
    ess_bulk = _nanmin(stats["ess_bulk"])
    scalar = total == 1
    return {
        "variable": name,
        "elements": total,
        "analysed": k,
        "constant": int(constant.sum()),
        "nonfinite": int(nonfinite.sum()),
        "chains": chains,
        "draws": draws,
        "rhat": _nanmax(stats["rhat"]),
        "rhat_median": _nanmedian(stats["rhat"]),
        "ess_bulk": ess_bulk,
        "ess_tail": _nanmin(stats["ess_tail"]),
        "ess_bulk_median": _nanmedian(stats["ess_bulk"]),
        "iat": chains * draws / ess_bulk if ess_bulk > 0 else math.nan,
        "mean": float(values.mean()) if scalar and not nonfinite[0] else math.nan,
        "sd": float(values.std(ddof=1)) if scalar and not nonfinite[0] else math.nan,
        "between_chain_share": between_chain_share(values[:, :, ok]),
    }


def between_chain_share(values: np.ndarray) -> float:
    """Σ over components of the variance of the per-chain means divided by Σ of the
    pooled variance (``values`` [chains, draws, k]): the part of the pooled ensemble's
    spread that is chain offsets. ≈ 1/draws for chains that agree, → 1 when every chain
    sits in its own place; NaN for one chain or no component."""
    if values.shape[0] < 2 or values.shape[2] == 0:
        return math.nan
    v = values.astype(np.float64)
    between = v.mean(axis=1).var(axis=0).sum()
    total = v.reshape(-1, v.shape[2]).var(axis=0).sum()
    return float(between / total) if total > 0 else math.nan


def sampled_variables(ds: xr.Dataset) -> list[str]:
    """Names of the data variables that have both ``chain`` and ``draw`` dims, sorted: a
    Zarr store lists its variables in the order of its directory listing, which differs
    between two writes of the same store, and the diagnostics table must not."""
    return sorted(str(n) for n, v in ds.data_vars.items() if {"chain", "draw"} <= set(v.dims))


def convergence_table(ds: xr.Dataset, variables: Sequence[str] | None = None,
                      max_elements: int | None = None) -> pd.DataFrame:
    """Convergence diagnostics, one row per variable of an ensemble Dataset.

    ``variables``: names to analyse (default: every data variable with ``chain`` and
    ``draw`` dims). ``max_elements``: analyse at most this many components of a
    variable, a seeded (deterministic) random subset; None analyses all.

    Columns:

    * ``variable``; ``elements`` (scalar components of the variable), ``analysed``
      (components looked at, ≤ ``max_elements``), ``constant`` and ``nonfinite``
      (analysed components that are constant over all chains and draws, or contain
      NaN/inf: excluded from every statistic below); ``chains``, ``draws``;
    * ``rhat`` — max over components of ArviZ's rank-normalised split-R̂ (one chain:
      computed from its halves, see :func:`_halves_as_chains`); ``rhat_median``;
    * ``ess_bulk``, ``ess_tail`` — min over components of the bulk / tail ESS;
      ``ess_bulk_median``;
    * ``iat`` — integrated autocorrelation time in draws, ``chains · draws /
      ess_bulk``: that of the worst-mixing component (the one with the smallest bulk
      ESS), which for a scalar variable is the variable itself;
    * ``mean``, ``sd`` — over all chains and draws, for scalar variables (NaN
      otherwise).

    Statistics are NaN when no component is left to analyse (e.g. all constant).
    Raises ValueError naming the variable when it lacks ``chain``/``draw`` or has
    fewer than 4 draws.
    """
    if variables is None:
        variables = sampled_variables(ds)
        if not variables:
            raise ValueError("diagnostics: no data variable has dims (chain, draw); "
                             f"variables: {sorted(map(str, ds.data_vars))}")
    arrays = {name: _require_chain_draw(ds, name) for name in variables}
    rows = [_variable_row(name, da, max_elements) for name, da in arrays.items()]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


# --------------------------------------------------------------------------- checks


def _problems(row: Mapping[str, Any], rhat_max: float, ess_min: float,
              between_max: float = BETWEEN_SHARE_MAX) -> list[str]:
    name = row["variable"]
    problems = []
    if row["rhat"] > rhat_max:  # NaN compares False: nothing to judge, nothing to say
        problems.append(f"R̂ of {name} = {row['rhat']:.3g} > {rhat_max:g} ({RHAT_KEY}): "
                        "chains disagree; sample longer or raise thin")
    for kind in ("bulk", "tail"):
        ess = row[f"ess_{kind}"]
        if ess < ess_min:
            problems.append(f"ESS_{kind} of {name} = {ess:.0f} < {ess_min:g} ({ESS_KEY}): "
                            f"too few effective draws (IAT ≈ {row['iat']:.3g} draws); "
                            "sample longer or raise thin")
    share = row.get("between_chain_share", math.nan)
    if share > between_max:
        problems.append(f"{100 * share:.0f} % of the pooled variance of {name} is between "
                        f"chains (> {100 * between_max:g} %, {BETWEEN_KEY}): the chains "
                        "disagree, so pooled statistics mostly measure chain offsets")
    if row.get("nonfinite", 0):
        problems.append(f"{name} has {row['nonfinite']} component(s) with NaN/inf draws "
                        "(excluded from R̂ and ESS): the sampler diverged")
    return problems


def check_convergence(table: pd.DataFrame, rhat_max: float = 1.01,
                      ess_min: float = 100.0,
                      between_max: float = BETWEEN_SHARE_MAX) -> list[str]:
    """Warnings for the variables of a :func:`convergence_table` that fail the limits.

    One message per offending variable (its problems joined by "; "), naming the
    variable, the value, the limit and the config key it comes from: R̂ above
    ``rhat_max``, bulk or tail ESS below ``ess_min``, a between-chain share of the
    pooled variance above ``between_max``, NaN/inf draws. NaN statistics
    (nothing analysable, e.g. all components constant) are not flagged. Empty when
    every variable passes.
    """
    messages = []
    for row in table.to_dict("records"):
        problems = _problems(row, rhat_max, ess_min, between_max)
        if problems:
            messages.append("; ".join(problems))
    return messages


def trace_diagnostics(loss: np.ndarray) -> dict[str, float]:
    """R̂, bulk/tail ESS and IAT of one trace ``loss[steps, chains]`` (e.g. the loss of
    each ensemble member over a training round).

    The numbers equal those of :func:`convergence_table` for a scalar variable with the
    same values. All entries are NaN for fewer than 4 steps, a constant trace or any
    NaN/inf value; never raises on such input.
    """
    nan = {"rhat": math.nan, "ess_bulk": math.nan, "ess_tail": math.nan, "iat": math.nan}
    x = np.asarray(loss, np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2 or x.shape[0] < MIN_DRAWS or x.shape[1] < 1:
        return nan
    values = x.T[:, :, None]  # [chain, draw, 1]
    nonfinite, constant = _classify(values)
    if nonfinite[0] or constant[0]:
        return nan
    stats = _arviz_stats(values)
    chains, draws = x.shape[1], x.shape[0]
    ess_bulk = float(stats["ess_bulk"][0])
    return {
        "rhat": float(stats["rhat"][0]),
        "ess_bulk": ess_bulk,
        "ess_tail": float(stats["ess_tail"][0]),
        "iat": chains * draws / ess_bulk if ess_bulk > 0 else math.nan,
    }


# --------------------------------------------------------------------------- figure


def _panels(ds: xr.Dataset, variables: Sequence[str],
            latent_points: int) -> list[tuple[str, np.ndarray]]:
    """(label, values[chain, draw]) per trace to plot. Scalar variables as they are;
    others (``latent``): the first unit of each of the first ``latent_points``
    entries along the first non-(chain, draw) dim."""
    panels = []
    for name in variables:
        if name not in ds.data_vars:
            log.info("diagnostics figure: no variable %r in the store; skipped", name)
            continue
        da = _require_chain_draw(ds, name)
        extra = da.dims[2:]
        if not extra:
            panels.append((name, np.asarray(da.values, np.float64)))
            continue
        rest = {d: 0 for d in extra[1:]}
        for i in range(min(latent_points, da.sizes[extra[0]])):
            sel = {extra[0]: i, **rest}
            label = f"{name}[" + ", ".join(f"{d}={j}" for d, j in sel.items()) + "]"
            panels.append((label, np.asarray(da.isel(sel).values, np.float64)))
    return panels


def _panel_title(label: str, values: np.ndarray) -> str:
    d = trace_diagnostics(values.T)
    return f"{label}   R̂ = {d['rhat']:.3f}   ESS bulk = {d['ess_bulk']:.0f}, tail = {d['ess_tail']:.0f}"


def diagnostics_figure(ds: xr.Dataset, path: str | os.PathLike,
                       variables: Sequence[str] = ("loss", "kinetic_temperature"),
                       latent_points: int = 2, max_lag: int = 100, dpi: int = 120) -> Path:
    """Trace and autocorrelation plots of an ensemble Dataset, saved as a PNG.

    One row per trace: left, the values against the draw with one line per chain;
    right, each chain's autocorrelation (``az.autocorr``) up to ``max_lag`` draws.
    Titles carry the trace's R̂ and bulk/tail ESS. Variables in ``variables`` that
    are absent from ``ds`` are skipped; for non-scalar variables such as ``latent``
    the first unit of the first ``latent_points`` samples is shown.
    """
    import matplotlib

    from eae.support.io import save_figure

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    az = _az()
    panels = _panels(ds, variables, latent_points)
    rows = max(len(panels), 1)
    fig, axes = plt.subplots(rows, 2, figsize=(11.0, 2.4 * rows), squeeze=False,
                             gridspec_kw={"width_ratios": [2.2, 1.0]}, layout="constrained")
    if not panels:
        axes[0, 0].text(0.5, 0.5, f"none of {list(variables)} in the store",
                        ha="center", va="center", transform=axes[0, 0].transAxes)
    for (label, values), (ax_trace, ax_acf) in zip(panels, axes):
        lags = np.arange(min(max_lag, values.shape[1] - 1) + 1)
        acf = az.autocorr(values, axis=-1)
        for c in range(values.shape[0]):
            ax_trace.plot(values[c], lw=0.7, label=f"chain {c}")
            ax_acf.plot(lags, acf[c, : lags.size], lw=0.9)
        ax_trace.set_title(_panel_title(label, values), fontsize=9, loc="left")
        ax_trace.set_xlabel("draw")
        ax_acf.axhline(0.0, color="0.5", lw=0.6)
        ax_acf.set_title("autocorrelation", fontsize=9, loc="left")
        ax_acf.set_xlabel("lag (draws)")
        ax_acf.set_ylim(-0.5, 1.05)
    if panels and panels[0][1].shape[0] <= 10:
        axes[0, 0].legend(fontsize=7, ncols=min(panels[0][1].shape[0], 5), loc="upper right")
    return save_figure(fig, path, dpi)


# --------------------------------------------------------------------------- stage


def diagnostics_stage(store_path: str | os.PathLike, out_csv: str | os.PathLike,
                      out_figure: str | os.PathLike, rhat_max: float, ess_min: float,
                      between_max: float = BETWEEN_SHARE_MAX,
                      variables: Sequence[str] | None = None,
                      provenance: Mapping[str, Any] | None = None,
                      max_elements: int | None = None) -> tuple[pd.DataFrame, list[str]]:
    """Workflow stage: ensemble store → convergence table (CSV) + figure (PNG).

    Opens ``store_path`` with :func:`eae.support.io.open_zarr`, writes
    :func:`convergence_table` (``variables``, ``max_elements``) to ``out_csv`` and
    :func:`diagnostics_figure` (of :data:`STAGE_FIGURE_VARIABLES`) to ``out_figure``,
    logs each warning of :func:`check_convergence` on the ``eae`` logger and returns
    (table, warnings). ``provenance``: a record from :func:`eae.support.provenance.make_record`;
    when given, a sidecar (with the warnings added) is written for the CSV and figure.
    """
    from eae.support.io import open_zarr, write_csv_atomic

    ds = open_zarr(store_path)
    table = convergence_table(ds, variables, max_elements=max_elements)
    # the temperature the ensemble reached qualifies every row's diagnostics
    temperatures = store_temperature_columns(ds.attrs)
    table = table.assign(**temperatures)
    write_csv_atomic(table, out_csv)
    diagnostics_figure(ds, out_figure, variables=STAGE_FIGURE_VARIABLES)
    messages = check_convergence(table, rhat_max=rhat_max, ess_min=ess_min,
                                 between_max=between_max)
    log.info("convergence diagnostics of %s:\n%s", store_path, table.to_string(index=False))
    numbers = {k: v for k, v in temperatures.items() if not isinstance(v, str)}
    if temperatures["T flag"] != "ok":
        messages.append(f"measured temperature {temperatures['T flag']}: "
                        + ", ".join(f"{k} {v:.3g}" for k, v in numbers.items()
                                    if k.startswith("T_")))
    if temperatures["improper"].startswith("IMPROPER"):
        messages.append(f"{temperatures['improper']}: ‖θ − θ₀‖ keeps growing ("
                        + ", ".join(f"{k} {v:.2f}" for k, v in numbers.items()
                                    if k.startswith("θ")) + "): not a stationary ensemble")
    for message in messages:
        log.warning("convergence: %s", message)
    if provenance is not None:
        from eae.support.provenance import record_outputs

        record = {**provenance, "convergence_warnings": messages}
        record_outputs(record, [out_csv, out_figure])
    return table, messages

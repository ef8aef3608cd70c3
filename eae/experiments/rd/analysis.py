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

Modules: this one keeps the stage (:func:`rd_analysis_stage`, :func:`analyse`) and the
identifiability glue; the settings are in :mod:`~eae.experiments.rd.analysis_params`, the
KDE modes in :mod:`~eae.experiments.rd.kde`, the coefficient summary and correlations in
:mod:`~eae.experiments.rd.coefficient_stats`, models and frequencies in
:mod:`~eae.experiments.rd.frequency`, the figures in
:mod:`~eae.experiments.rd.analysis_figures` and Table 4 in :mod:`~eae.experiments.rd.tables`.
Every name is re-exported here.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd

from eae.experiments.rd.analysis_figures import (  # noqa: F401 (re-exported)
    _a_label,
    _plt,
    plot_correlation,
    plot_dynamics,
    plot_pairs_kde,
)
from eae.experiments.rd.analysis_params import DOT, AnalysisParams  # noqa: F401 (re-exported)
from eae.experiments.rd.coefficient_stats import (  # noqa: F401 (re-exported)
    coefficient_labels,
    coefficient_summary,
    correlation_matrix,
    flatten_coefficients,
    linear_coefficient_index,
    top_linear_pairs,
)
from eae.experiments.rd.frequency import (  # noqa: F401 (re-exported)
    _sinusoid_residual,
    data_frequency,
    eigen_frequency,
    equation_strings,
    frequency_table,
    identified_models,
    integrate_model,
    linear_block,
    linear_invariants,
    member_choice,
    product_frequency,
    series_frequency,
)
from eae.experiments.rd.kde import kde_mode, kde_mode_2d  # noqa: F401 (re-exported)
from eae.experiments.rd.tables import (  # noqa: F401 (re-exported)
    PAPER_TABLE4,
    _f,
    paper_model,
    table4,
    table4_markdown,
    table4_vs_paper,
)
from eae.support.io import atomic_paths

logger = logging.getLogger("eae")


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

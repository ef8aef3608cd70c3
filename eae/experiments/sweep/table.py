"""The temperature sweep's table: rows of all points → ``sweep.csv``, Markdown, figure
and the recommendation (:func:`sweep_table_stage`); see :mod:`eae.experiments.sweep`."""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from eae.support.io import save_figure, write_csv_atomic, write_text_atomic
from eae.support.io import temperature_tag as format_temperature
from eae.core.temperature import CONFIGURATIONAL_BAND, KINETIC_BAND, TEMPERATURE_COLUMNS

log = logging.getLogger("eae")

#: Ensemble variables whose R̂ / ESS go into a point's row.
CONVERGENCE_VARIABLES = ("loss", "kinetic_temperature", "latent")

RULE = ("recommended T = the highest constant temperature whose test MSE ≤ mse_factor × "
        "the test MSE of the coldest constant run (the coldest when none qualifies), among "
        "the points whose measured temperature is not flagged and whose ensemble is not "
        "improper (none when all are)")

ROW_COLUMNS = [
    "experiment", "point", "kind", "schedule", "temperature", "initial_temperature",
    "temperature_reached", "test_mse", "active_units", "active_units_all_samples",
    "active_units_relative", "code_scale", "latent_dim", "pcs_99", "probe_accuracy", "n_test", "n_members", "chains", "draws",
    "loss_mean", "loss_sd", "loss_q05", "loss_q95", "loss_spread",
    "kinetic_temperature_mean", "tkin_ratio",
    "rhat", "ess_bulk", "ess_tail",
    "rhat_loss", "ess_bulk_loss", "ess_tail_loss",
    "rhat_kinetic_temperature", "ess_bulk_kinetic_temperature", "ess_tail_kinetic_temperature",
    "rhat_latent", "ess_bulk_latent", "ess_tail_latent",
    "train_loss_final", "val_loss_final", "decoder_updates", "encoder_steps",
    "train_s", "ensemble_s", "wall_s",
    *TEMPERATURE_COLUMNS,
]


_SHORT = {"loss": "loss", "kinetic_temperature": "T_kin", "latent": "latent"}


def convergence_flags(row: Mapping[str, Any], rhat_max: float, ess_min: float) -> str:
    """Which diagnostics of a row miss the limits, e.g. ``"R̂: latent; ESS: loss, T_kin"``
    (ESS: bulk or tail below ``ess_min``; "" when all pass; NaN is not flagged)."""
    rhat_bad, ess_bad = [], []
    for v in CONVERGENCE_VARIABLES:
        rhat = row.get(f"rhat_{v}", math.nan)
        if rhat is not None and rhat > rhat_max:
            rhat_bad.append(_SHORT[v])
        if any((ess := row.get(f"ess_{kind}_{v}", math.nan)) is not None and ess < ess_min
               for kind in ("bulk", "tail")):
            ess_bad.append(_SHORT[v])
    parts = [f"R̂: {', '.join(rhat_bad)}"] if rhat_bad else []
    parts += [f"ESS: {', '.join(ess_bad)}"] if ess_bad else []
    return "; ".join(parts)


def _finite(x) -> float | None:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def _is_flagged(row: Mapping[str, Any]) -> bool:
    """Not at its target T, or not a stationary ensemble (eae.wellposed)."""
    flag, improper = row.get("T flag"), row.get("improper")
    return ((isinstance(flag, str) and flag != "ok")
            or (isinstance(improper, str) and improper.startswith("IMPROPER")))


def recommend(frame: pd.DataFrame, mse_factor: float) -> dict[str, Any]:
    """Apply :data:`RULE` to the constant-temperature rows of ``frame`` (columns
    ``kind``, ``temperature``, ``test_mse``, ``point``; ``T flag`` when measured).

    Points whose measured temperature is flagged (``T flag`` other than "ok": the
    ensemble was not at the T the row names) are left out, and named in
    ``excluded``. Among the rest a run qualifies when its test MSE ≤ ``mse_factor`` ×
    the coldest run's (equality qualifies); of the qualifying runs the hottest is
    recommended (at equal temperatures, the lower MSE). When none qualifies (e.g.
    ``mse_factor`` < 1, or the coldest MSE is NaN) the coldest is recommended and
    ``fallback`` is true. When every point is flagged nothing is recommended
    (``recommended_point`` None) and ``reason`` says why. Returns the recommendation
    with every number it used.
    """
    const = frame[frame["kind"] == "constant"].sort_values(["temperature", "test_mse"])
    if const.empty:
        raise ValueError("sweep: the rule needs at least one constant-temperature run")
    rows = const.to_dict("records")
    excluded = [{"point": r["point"], "temperature": float(r["temperature"]),
                 "T flag": r["T flag"], "improper": r.get("improper")}
                for r in rows if _is_flagged(r)]
    usable = [r for r in rows if not _is_flagged(r)]
    result = {"rule": RULE, "mse_factor": float(mse_factor), "excluded": excluded}
    if not usable:
        return {**result, "recommended_point": None, "recommended_temperature": None,
                "recommended_test_mse": None, "coldest_point": None,
                "coldest_temperature": None, "coldest_test_mse": None, "threshold_mse": None,
                "fallback": False, "candidates": [],
                "reason": "every constant-temperature point is flagged: no ensemble reached "
                          "the temperature its row names (see T_kin/T, T_conf/T) as a "
                          "stationary ensemble (θ growth), so the rule has no run to compare"}
    coldest = usable[0]
    cold_mse = _finite(coldest["test_mse"])
    threshold = float(mse_factor) * cold_mse if cold_mse is not None else None
    candidates = []
    for r in usable:
        mse = _finite(r["test_mse"])
        ok = threshold is not None and mse is not None and mse <= threshold
        candidates.append({"point": r["point"], "temperature": float(r["temperature"]),
                           "test_mse": mse, "qualifies": bool(ok)})
    qualifying = [c for c in candidates if c["qualifies"]]
    if qualifying:
        best = max(qualifying, key=lambda c: (c["temperature"], -c["test_mse"]))
    else:
        best = candidates[0]
    return {
        **result,
        "recommended_point": best["point"],
        "recommended_temperature": best["temperature"],
        "recommended_test_mse": best["test_mse"],
        "coldest_point": coldest["point"],
        "coldest_temperature": float(coldest["temperature"]),
        "coldest_test_mse": cold_mse,
        "threshold_mse": threshold,
        "fallback": not qualifying,
        "candidates": candidates,
        "reason": None,
    }


def sweep_frame(rows: Sequence[pd.DataFrame], rhat_max: float, ess_min: float) -> pd.DataFrame:
    """The points' rows as one table (constant runs by temperature, then annealed
    runs), with ``flags`` (:func:`convergence_flags`)."""
    if not rows:
        raise ValueError("sweep: no point rows to combine")
    frame = pd.concat([r.reindex(columns=ROW_COLUMNS) for r in rows], ignore_index=True)
    if frame["point"].duplicated().any():
        raise ValueError(f"sweep: duplicate points {sorted(frame['point'][frame['point'].duplicated()])}")
    frame["_order"] = (frame["kind"] != "constant").astype(int)
    frame = frame.sort_values(["_order", "temperature", "initial_temperature"]).drop(columns="_order")
    frame["flags"] = [convergence_flags(r, rhat_max, ess_min) for r in frame.to_dict("records")]
    return frame.reset_index(drop=True)


def _fmt(value, spec: str) -> str:
    v = _finite(value)
    return "—" if v is None else format(v, spec)


def _flag_cell(flag) -> str:
    if not isinstance(flag, str):
        return "not measured"
    return "ok" if flag == "ok" else "**" + flag.replace("FLAGGED: ", "flagged: ") + "**"


def _verdict(rec: Mapping[str, Any]) -> str:
    excluded = rec.get("excluded") or []
    left_out = (f"; left out as flagged: {', '.join('`' + e['point'] + '`' for e in excluded)}"
                if excluded else "")
    if rec["recommended_point"] is None:
        return f"**No recommendation**: {rec['reason']}{left_out}"
    thr = rec["threshold_mse"]
    verdict = (f"**Recommended T = {format_temperature(rec['recommended_temperature'])}** "
               f"(`{rec['recommended_point']}`, test MSE {_fmt(rec['recommended_test_mse'], '.5f')}; "
               f"coldest unflagged T = {format_temperature(rec['coldest_temperature'])} has test "
               f"MSE {_fmt(rec['coldest_test_mse'], '.5f')}, threshold "
               f"{rec['mse_factor']:g} × that = {_fmt(thr, '.5f')}){left_out}")
    if rec["fallback"]:
        verdict += "; no constant run met the threshold, so the coldest is recommended"
    return verdict


def _units(r: Mapping[str, Any], column: str) -> str:
    value, latent = _finite(r.get(column)), _finite(r.get("latent_dim"))
    return "—" if value is None or latent is None else f"{int(value)}/{int(latent)}"


def sweep_markdown(frame: pd.DataFrame, rec: Mapping[str, Any], rhat_max: float,
                   ess_min: float) -> str:
    """The sweep table in Markdown, with the rule, the recommendation and notes."""
    experiment = str(frame["experiment"].iloc[0])
    header = ["point", "schedule", "final T", "test MSE", "active units", "active (relative)",
              "PCs 99 %", "code scale", "probe acc.",
              "T_kin/T train / ens.", "T_conf/T train / ens.", "T flag", "θ growth train / ens.",
              "loss sd", "loss q95−q05", "R̂ max", "ESS bulk / tail min", "flags", "wall s"]
    lines = [f"# Temperature sweep: {experiment}", "",
             "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in frame.to_dict("records"):
        schedule = ("constant" if r["kind"] == "constant" else
                    f"{r['schedule']} from {format_temperature(r['initial_temperature'])}")
        acc = _finite(r["probe_accuracy"])
        mark = " **(recommended)**" if r["point"] == rec["recommended_point"] else ""
        cells = [f"`{r['point']}`{mark}", schedule, format_temperature(r["temperature"]),
                 _fmt(r["test_mse"], ".5f"), _units(r, "active_units"),
                 _units(r, "active_units_relative"),
                 _fmt(r.get("pcs_99"), ".0f"), _fmt(r.get("code_scale"), ".3g"),
                 "—" if acc is None else f"{100 * acc:.1f} %",
                 f"{_fmt(r.get('T_kin/T train'), '.3g')} / {_fmt(r.get('T_kin/T ensemble'), '.3g')}",
                 f"{_fmt(r.get('T_conf/T train'), '.3g')} / {_fmt(r.get('T_conf/T ensemble'), '.3g')}",
                 _flag_cell(r.get("T flag")),
                 f"{_fmt(r.get('θ growth train'), '.2f')} / {_fmt(r.get('θ growth ensemble'), '.2f')}"
                 + (f" **{r['improper']}**" if str(r.get("improper", "")).startswith("IMPROPER")
                    else ""),
                 _fmt(r["loss_sd"], ".3g"), _fmt(r["loss_spread"], ".3g"),
                 _fmt(r["rhat"], ".3f"),
                 f"{_fmt(r['ess_bulk'], '.0f')} / {_fmt(r['ess_tail'], '.0f')}",
                 r["flags"] or "—", _fmt(r["wall_s"], ".0f")]
        lines.append("| " + " | ".join(cells) + " |")
    verdict = _verdict(rec)
    notes = ["", f"Rule: {RULE}, with mse_factor = {rec['mse_factor']:g}. Annealed runs are shown "
             "for comparison and do not enter the rule, nor do points whose measured "
             "temperature is flagged.", "", verdict + ".", "",
             "Notes:", "",
             "- test MSE, active units, probe acc.: as in Table 1 (decoder applied to the "
             "ensemble-mean code; variance of the ensemble-mean code over the test set above the "
             "active threshold; cross-validated probe on the test codes, — without labels).",
             "- active (relative), PCs 99 %, code scale: the scale-free activity of Table 1 "
             "(units whose variance is at least analysis.relative_active_fraction of the mean "
             "per-unit variance, which is the code scale; principal components of the "
             "ensemble-mean code). The fixed threshold of 'active units' is met trivially "
             "by codes of large scale, and nothing fixes an EAE's code scale.",
             "- loss sd, loss q95−q05: spread of the mini-batch loss over the ensemble members "
             "(all chains and draws, decoder frozen).",
             "- R̂ max: the largest rank-normalised split-R̂ of loss, kinetic temperature and the "
             "latents of fixed test points; ESS: the smallest bulk / tail effective sample size "
             f"of the same (ArviZ). Flags: R̂ > {rhat_max:g} (sweep.rhat_max) or ESS < "
             f"{ess_min:g} (sweep.ess_min).",
             "- T_kin/T, T_conf/T: the temperature the ensemble reached, kinetic (Σp²/m / N_f) "
             "and configurational (⟨|∇L|²⟩ / ⟨tr ∇²L⟩ on two held-apart batches, Hutchinson "
             "trace), as ratios to the target, pooled over training's last tenth and over "
             f"ensemble sampling. T flag: a chain left T_kin/T ∈ {list(KINETIC_BAND)} or "
             f"T_conf/T ∈ {list(CONFIGURATIONAL_BAND)}; such a row describes a run at another "
             "temperature than its label.",
             "- θ growth: log–log slope of ‖θ − θ₀‖ against steps over the last half of training "
             "/ ensemble sampling (eae.wellposed); above 0.25 the encoder keeps moving away "
             "(**IMPROPER**: exp(−L/T) does not confine it, or it is still drifting), so the "
             "members are no draws of a stationary ensemble; such points are left out of the "
             "rule too.",
             "- final T: the temperature the ensemble was sampled at (annealed runs: the end of "
             "their schedule); wall s: the point's job (training, ensemble, scoring; a job that "
             "resumed from a checkpoint counts only its own run)."]
    return "\n".join(lines + notes) + "\n"


def sweep_figure(frame: pd.DataFrame, rec: Mapping[str, Any], path: str | os.PathLike,
                 rhat_max: float, ess_min: float, dpi: int = 120) -> Path:
    """Panels against the (final) temperature on a log axis: test MSE, active units,
    probe accuracy, ensemble-loss spread, R̂ and bulk ESS (per variable). Constant
    runs are circles joined by lines; annealed runs are stars (black edge) at their
    final temperature; the recommended T is a dotted vertical line."""
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    const = frame[frame["kind"] == "constant"].sort_values("temperature")
    anneal = frame[frame["kind"] != "constant"]
    fig, axes = plt.subplots(2, 4, figsize=(16.0, 6.6), layout="constrained", sharex=True)
    per_variable = [(v, _SHORT[v]) for v in CONVERGENCE_VARIABLES]
    panels = [
        ("test MSE", [("test_mse", None)], "log"),
        ("active units", [("active_units", "variance > threshold"),
                          ("active_units_relative", "relative"), ("pcs_99", "PCs 99 %")], "linear"),
        ("probe accuracy", [("probe_accuracy", None)], "linear"),
        ("ensemble loss spread", [("loss_sd", "sd"), ("loss_spread", "q95 − q05")], "log"),
        ("R̂ (max over components)", [(f"rhat_{v}", s) for v, s in per_variable], "log"),
        ("bulk ESS (min over components)", [(f"ess_bulk_{v}", s) for v, s in per_variable], "log"),
        ("measured T / target T (kinetic)", [("T_kin/T train", "train, last tenth"),
                                              ("T_kin/T ensemble", "ensemble")], "log"),
        ("measured T / target T (configurational)", [("T_conf/T train", "train, last tenth"),
                                                      ("T_conf/T ensemble", "ensemble")], "log"),
    ]
    frame = frame.reindex(columns=list(dict.fromkeys([*frame.columns, *TEMPERATURE_COLUMNS])))
    const = const.reindex(columns=frame.columns)
    anneal = anneal.reindex(columns=frame.columns)
    for ax, (title, columns, yscale) in zip(axes.ravel(), panels):
        for i, (col, label) in enumerate(columns):
            color = f"C{(0, 2, 4)[i % 3]}"
            ax.plot(const["temperature"], const[col], "-" if i == 0 else "--", marker="o",
                    color=color, label=f"{label} (constant T)" if label else "constant T")
            if len(anneal):
                ax.plot(anneal["temperature"], anneal[col], linestyle="none", marker="*",
                        markersize=14, color=color, markeredgecolor="k", markeredgewidth=0.7,
                        label=f"{label} (annealed, at final T)" if label else "annealed, at final T")
        values = pd.to_numeric(frame[[c for c, _ in columns]].stack(), errors="coerce")
        if yscale == "log" and (values > 0).any():
            ax.set_yscale("log")
        if rec["recommended_temperature"] is not None:
            ax.axvline(rec["recommended_temperature"], color="0.4", ls=":", lw=1.0)
        ax.set_xscale("log")
        ax.set_title(title, fontsize=10, loc="left")
        ax.grid(alpha=0.3)
    axes[1, 1].axhline(rhat_max, color="C3", lw=0.9, label=f"rhat_max = {rhat_max:g}")
    axes[1, 2].axhline(ess_min, color="C3", lw=0.9, label=f"ess_min = {ess_min:g}")
    for ax, band in ((axes[0, 3], KINETIC_BAND), (axes[1, 3], CONFIGURATIONAL_BAND)):
        ax.axhspan(*band, color="C2", alpha=0.15, label=f"unflagged band {list(band)}")
        ax.axhline(1.0, color="0.3", lw=0.8)
    if _finite(frame["latent_dim"].max()) is not None:
        axes[0, 1].set_ylim(-0.5, float(frame["latent_dim"].max()) + 1.5)
    for ax in axes[1]:
        ax.set_xlabel("temperature T (annealed: final T)")
    for ax in (axes[0, 0], axes[0, 1], axes[1, 0], axes[1, 1], axes[1, 2], axes[0, 3], axes[1, 3]):
        ax.legend(fontsize=6.5)
    for _, r in anneal.iterrows():
        axes[0, 0].annotate(f"from {format_temperature(r['initial_temperature'])}",
                            (r["temperature"], r["test_mse"]), textcoords="offset points",
                            xytext=(7, 4), fontsize=7)
    experiment = str(frame["experiment"].iloc[0])
    if rec["recommended_temperature"] is None:
        title = (f"Temperature sweep ({experiment}): no recommendation (every constant-T "
                 "point is flagged: not at its target T)")
    else:
        title = (f"Temperature sweep ({experiment}): recommended T = "
                 f"{format_temperature(rec['recommended_temperature'])} (dotted line; the hottest "
                 f"unflagged constant T with test MSE ≤ {rec['mse_factor']:g} × the coldest "
                 "unflagged run's)")
    fig.suptitle(title, fontsize=11)
    return save_figure(fig, path, dpi)


def _json_safe(obj):
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, np.generic):
        return _json_safe(obj.item())
    return obj


def sweep_table_stage(row_csvs: Iterable[str | os.PathLike], settings: Mapping[str, Any],
                      outputs: Mapping[str, str | os.PathLike]) -> tuple[pd.DataFrame, dict]:
    """Workflow stage ``sweep_table``: the points' row.csv files → ``outputs["csv"]``
    (sweep.csv), ``outputs["md"]``, ``outputs["figure"]`` and ``outputs["json"]``
    (recommended.json), with provenance sidecars. ``settings``: ``mse_factor``,
    ``rhat_max``, ``ess_min`` (and optionally ``dpi``)."""
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    csvs = [Path(p) for p in row_csvs]
    for p in csvs:
        if not p.is_file():
            raise FileNotFoundError(f"sweep point row not found: {p}")
    rhat_max, ess_min = float(settings["rhat_max"]), float(settings["ess_min"])
    frame = sweep_frame([pd.read_csv(p) for p in csvs], rhat_max, ess_min)
    rec = recommend(frame, settings["mse_factor"])
    best = frame[frame["point"] == rec["recommended_point"]]
    rec = {"experiment": str(frame["experiment"].iloc[0]), **rec,
           "recommended_flags": best["flags"].iloc[0] if len(best) else None, "rhat_max": rhat_max, "ess_min": ess_min,
           "points": list(frame["point"])}
    write_csv_atomic(frame, outputs["csv"])
    write_text_atomic(outputs["md"], sweep_markdown(frame, rec, rhat_max, ess_min))
    sweep_figure(frame, rec, outputs["figure"], rhat_max, ess_min, int(settings.get("dpi", 120)))
    write_text_atomic(outputs["json"], json.dumps(_json_safe(rec), indent=2, ensure_ascii=False) + "\n")
    record = make_record("sweep_table", config=dict(settings), inputs=csvs, started=started,
                         modules=["eae.experiments.sweep"], extra={"recommended": rec["recommended_point"]})
    record_outputs(record, [outputs[k] for k in ("csv", "md", "figure", "json")])
    log.info("sweep %s: %s", rec["experiment"], rec["rule"])
    for e in rec["excluded"]:
        log.warning("sweep %s: point %s left out of the rule: %s; %s", rec["experiment"],
                    e["point"], e["T flag"], e.get("improper"))
    if rec["recommended_point"] is None:
        log.warning("sweep %s: no recommendation: %s", rec["experiment"], rec["reason"])
    else:
        log.info("sweep %s: recommended %s (T = %g)", rec["experiment"], rec["recommended_point"],
                 rec["recommended_temperature"])
    return frame, rec

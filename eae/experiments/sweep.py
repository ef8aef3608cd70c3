"""Temperature sweep of an experiment: one EAE per temperature (and per annealed run),
each trained, sampled and scored on its own, then one table, figure and recommendation.

Points are named by tags that appear in paths and are reversible (:func:`parse_tag`):

* ``T1e-08`` — constant temperature 1e-8;
* ``anneal_1e-05_1e-09_geometric`` — from 1e-5 to 1e-9 (geometric schedule); the
  ensemble is sampled at the final temperature.

A point's settings (:func:`point_config`) are ``<experiment>.eae`` (model, sampler)
with the temperature — and for annealed points ``final_temperature`` and
``schedule`` — replaced, ``sweep.train`` merged over ``<experiment>.eae.train`` and
``sweep.ensemble`` over ``<experiment>.eae.ensemble``. They do not depend on the other
points, so adding a temperature runs only the new point (and the table).

:func:`sweep_point_stage` trains (resuming from a checkpoint), samples the ensemble
and writes one row: test MSE, active units and probe accuracy exactly as Table 1
computes them (:func:`eae.experiments.images.metrics.eae_metrics`), the spread of the members' losses,
R̂ and ESS (:func:`eae.core.diagnostics.convergence_table`) of loss, kinetic temperature
and the latents of a fixed set of test points, the final temperature and the wall
time. :func:`sweep_table_stage` combines the rows into ``sweep.csv``, a Markdown
table, a figure and ``recommended.json`` (:func:`recommend`).

Experiments are registered with :func:`register_experiment`: one function that
trains, samples and scores a point, plus the path templates of its inputs.
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from eae.support.io import save_figure, temperature_tag, write_csv_atomic, write_text_atomic
from eae.core.temperature import (CONFIGURATIONAL_BAND, KINETIC_BAND, TEMPERATURE_COLUMNS,
                             store_temperature_columns)

log = logging.getLogger("eae")

__all__ = [
    "EXPERIMENTS",
    "ANALYSIS_KEYS",
    "ROW_COLUMNS",
    "register_experiment",
    "experiment_inputs",
    "format_temperature",
    "constant_tag",
    "annealed_tag",
    "parse_tag",
    "annealed_runs",
    "sweep_points",
    "point_tags",
    "point_config",
    "point_params",
    "point_paths",
    "table_paths",
    "sweep_targets",
    "ensemble_summary",
    "sweep_point_stage",
    "convergence_flags",
    "recommend",
    "RULE",
    "sweep_frame",
    "sweep_markdown",
    "sweep_figure",
    "sweep_table_stage",
]

SCHEDULES = ("linear", "geometric")
#: Ensemble variables whose R̂ / ESS go into a point's row.
CONVERGENCE_VARIABLES = ("loss", "kinetic_temperature", "latent")
#: Keys of the ``analysis`` config section that a point's metrics depend on (only
#: these enter the job's params, so e.g. a figure setting reruns no point).
ANALYSIS_KEYS = ("active_threshold", "relative_active_fraction", "pca_variance", "probe", "seed", "batch_size",
                 "chunk_members")
RULE = ("recommended T = the highest constant temperature whose test MSE ≤ mse_factor × "
        "the test MSE of the coldest constant run (the coldest when none qualifies), among "
        "the points whose measured temperature is not flagged and whose ensemble is not "
        "improper (none when all are)")


# --------------------------------------------------------------------------- experiments


@dataclass(frozen=True)
class Experiment:
    """How to run one sweep point of an experiment.

    ``run(cfg, inputs, paths, checkpoint_dir, analysis)`` trains the point's EAE
    (``cfg``: the point's eae config, see :func:`point_config`), samples its ensemble
    to ``paths["ensemble"]`` (a store with ``(chain, draw, …)`` variables ``loss``,
    ``kinetic_temperature`` and, for images, ``latent``) and returns its metrics
    (``test_mse``, ``active_units``, ``probe_accuracy``, … as a dict).
    ``inputs``: path templates with ``{experiment}`` (e.g. the data store).
    """

    run: Callable[..., dict[str, Any]]
    inputs: Mapping[str, str]


#: name -> :class:`Experiment`; the schema's ``sweep.experiment`` enum lists the same names.
EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(*names: str, inputs: Mapping[str, str]):
    """Decorator: register ``run`` (see :class:`Experiment`) for the named experiments."""

    def wrap(run):
        for name in names:
            EXPERIMENTS[name] = Experiment(run=run, inputs=dict(inputs))
        return run

    return wrap


def _experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise ValueError(f"sweep: unknown experiment {name!r}; known: {sorted(EXPERIMENTS)}")
    return EXPERIMENTS[name]


def experiment_inputs(experiment: str) -> dict[str, str]:
    """The input files of a point of ``experiment`` (the workflow's rule inputs)."""
    return {k: v.format(experiment=experiment) for k, v in _experiment(experiment).inputs.items()}


@register_experiment("mnist", "frey", inputs={"data": "results/data/{experiment}.zarr"})
def image_point(cfg: Mapping[str, Any], inputs: Mapping[str, str], paths: Mapping[str, Path],
                checkpoint_dir, analysis: Mapping[str, Any]) -> dict[str, Any]:
    """A point of an image experiment: the ``train_eae`` and ``ensemble`` stages, then
    Table 1's EAE metrics (decoder applied to the ensemble-mean code).
    ``temperature_reached``: the target T at the last training step (history.csv)."""
    from eae.core.ensemble import ensemble_stage
    from eae.experiments.images.metrics import eae_metrics, load_test_data
    from eae.experiments.images.eae import IMAGES, train_images_stage

    data = inputs["data"]
    t0 = time.perf_counter()
    # Without the ensemble block, so that the training checkpoint survives a change of
    # ensemble settings (the rerun then only samples and scores).
    train_cfg = {k: v for k, v in cfg.items() if k != "ensemble"}
    history = train_images_stage(train_cfg, data, paths["model"], checkpoint_dir=checkpoint_dir)
    t1 = time.perf_counter()
    ensemble_stage(IMAGES, dict(cfg), data, paths["model"], paths["ensemble"])
    t2 = time.perf_counter()
    x_test, labels, _ = load_test_data(data)
    row = eae_metrics({"eae": Path(paths["model"]), "ensemble": Path(paths["ensemble"])},
                      x_test, labels, analysis)
    last = history.iloc[-1]
    return {
        "test_mse": row["test_mse"],
        "active_units": row["active_units"],
        "active_units_all_samples": row["active_units_all_samples"],
        "active_units_relative": row["active_units_relative"],
        "code_scale": row["code_scale"],
        "pcs_99": row["pcs_99"],
        "probe_accuracy": row["probe_accuracy"],
        "latent_dim": row["latent_dim"],
        "n_test": row["n_test"],
        "train_loss_final": float(last["loss_mean"]),
        "val_loss_final": float(last["val_loss"]) if "val_loss" in last else math.nan,
        "temperature_reached": float(last["temperature"]),
        "train_s": t1 - t0,
        "ensemble_s": t2 - t1,
    }


# --------------------------------------------------------------------------- tags


#: A temperature as it appears in tags (:func:`eae.support.io.temperature_tag`).
format_temperature = temperature_tag


def constant_tag(temperature: float) -> str:
    """Tag of a constant-temperature point, e.g. ``T1e-08``."""
    return f"T{format_temperature(temperature)}"


def annealed_tag(start: float, end: float, schedule: str) -> str:
    """Tag of an annealed point, e.g. ``anneal_1e-05_1e-09_geometric``."""
    if schedule not in SCHEDULES:
        raise ValueError(f"sweep: schedule must be one of {list(SCHEDULES)}, got {schedule!r}")
    return f"anneal_{format_temperature(start)}_{format_temperature(end)}_{schedule}"


def _parse_float(text: str, tag: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"sweep: bad temperature {text!r} in point tag {tag!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"sweep: temperature in point tag {tag!r} must be positive")
    return value


def parse_tag(tag: str) -> dict[str, Any]:
    """The settings a tag names: ``{"kind": "constant", "temperature": T}`` or
    ``{"kind": "annealed", "from": T0, "to": T1, "schedule": s}`` (ValueError when
    ``tag`` is no point tag). Values are those of the tag (7 significant digits)."""
    if tag.startswith("T"):
        return {"kind": "constant", "temperature": _parse_float(tag[1:], tag)}
    parts = tag.split("_")
    if len(parts) == 4 and parts[0] == "anneal" and parts[3] in SCHEDULES:
        return {"kind": "annealed", "from": _parse_float(parts[1], tag),
                "to": _parse_float(parts[2], tag), "schedule": parts[3]}
    raise ValueError(f"sweep: {tag!r} is not a point tag (T<temperature> or "
                     "anneal_<from>_<to>_<linear|geometric>)")


def annealed_runs(sweep_cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """``sweep.annealed`` with its nulls resolved: ``from`` = the hottest and ``to`` = the
    coldest of ``sweep.temperatures``, schedule geometric."""
    temps = [float(t) for t in sweep_cfg["temperatures"]]
    runs = []
    for run in sweep_cfg.get("annealed") or []:
        run = dict(run or {})
        start = run.get("from")
        end = run.get("to")
        runs.append({"from": float(max(temps) if start is None else start),
                     "to": float(min(temps) if end is None else end),
                     "schedule": run.get("schedule") or "geometric"})
    return runs


def sweep_points(sweep_cfg: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """tag -> settings (as :func:`parse_tag` returns, with the configured values) of
    every point, constant temperatures first; ValueError for duplicate tags."""
    points: dict[str, dict[str, Any]] = {}

    def add(tag, settings):
        if tag in points:
            raise ValueError(f"sweep: point {tag!r} is configured twice (temperatures must "
                             "be distinct at 7 significant digits, annealed runs distinct)")
        points[tag] = settings

    for t in sweep_cfg["temperatures"]:
        add(constant_tag(t), {"kind": "constant", "temperature": float(t)})
    for run in annealed_runs(sweep_cfg):
        add(annealed_tag(run["from"], run["to"], run["schedule"]), {"kind": "annealed", **run})
    return points


def point_tags(sweep_cfg: Mapping[str, Any]) -> list[str]:
    """Tags of every configured point."""
    return list(sweep_points(sweep_cfg))


# --------------------------------------------------------------------------- configs


def _point_settings(sweep_cfg: Mapping[str, Any], tag: str) -> dict[str, Any]:
    points = sweep_points(sweep_cfg)
    if tag not in points:
        parse_tag(tag)  # a malformed tag gets the more specific message
        raise ValueError(f"sweep: point {tag!r} is not configured; points: {list(points)}")
    return points[tag]


def point_config(experiment_eae_cfg: Mapping[str, Any], sweep_cfg: Mapping[str, Any],
                 tag: str) -> dict[str, Any]:
    """The eae config of one point: ``experiment_eae_cfg`` (``model``, ``sampler``,
    ``train``, ``ensemble``) with the point's temperature; annealed points get
    ``final_temperature`` and ``schedule``, constant ones ``final_temperature: None``
    and ``schedule: constant``; non-null ``sweep.train`` values replace the
    experiment's, ``sweep.ensemble`` replaces members and thin."""
    settings = _point_settings(sweep_cfg, tag)
    cfg = copy.deepcopy(dict(experiment_eae_cfg))
    sampler = dict(cfg.get("sampler") or {})
    if settings["kind"] == "constant":
        sampler.update(temperature=settings["temperature"], final_temperature=None,
                       schedule="constant")
    else:
        sampler.update(temperature=settings["from"], final_temperature=settings["to"],
                       schedule=settings["schedule"])
    cfg["sampler"] = sampler
    train = dict(cfg.get("train") or {})
    train.update({k: copy.deepcopy(v) for k, v in (sweep_cfg.get("train") or {}).items()
                  if v is not None})
    cfg["train"] = train
    ensemble = dict(cfg.get("ensemble") or {})
    ensemble.update(copy.deepcopy(dict(sweep_cfg.get("ensemble") or {})))
    cfg["ensemble"] = ensemble
    return cfg


def point_params(config: Mapping[str, Any], experiment: str, tag: str) -> dict[str, Any]:
    """Everything one point depends on (the rule's ``params``): its eae config, the
    ``analysis`` keys its metrics use and the sweep's diagnostics settings."""
    _experiment(experiment)
    sweep_cfg = config["sweep"]
    analysis = config.get("analysis") or {}
    return {
        "experiment": experiment,
        "point": tag,
        "eae": point_config(config[experiment]["eae"], sweep_cfg, tag),
        "analysis": {k: copy.deepcopy(analysis[k]) for k in ANALYSIS_KEYS if k in analysis},
        "diagnostics": dict(sweep_cfg.get("diagnostics") or {}),
    }


def point_paths(experiment: str, tag: str, results_dir: str | os.PathLike = "results"
                ) -> dict[str, Path]:
    """Where a point's outputs and checkpoint live (the workflow's layout)."""
    r = Path(results_dir)
    base = r / "sweep" / experiment / tag
    return {
        "model": base / "model",
        "ensemble": base / "ensemble.zarr",
        "row": base / "row.csv",
        "convergence": base / "convergence.csv",
        "checkpoint": r / "checkpoints" / "sweep" / experiment / tag,
    }


def table_paths(experiment: str, results_dir: str | os.PathLike = "results") -> dict[str, Path]:
    """The sweep table stage's outputs."""
    r = Path(results_dir)
    return {
        "csv": r / "sweep" / experiment / "sweep.csv",
        "md": r / "tables" / f"sweep_{experiment}.md",
        "figure": r / "figures" / f"sweep_{experiment}.png",
        "json": r / "sweep" / experiment / "recommended.json",
    }


def sweep_targets(sweep_cfg: Mapping[str, Any]) -> list[str]:
    """The sweep's final outputs when ``sweep.enabled`` (for the default target)."""
    if not sweep_cfg.get("enabled", False):
        return []
    return [str(p) for p in table_paths(sweep_cfg["experiment"]).values()]


# --------------------------------------------------------------------------- one point


def _fixed_test_points(n_samples: int, k: int) -> np.ndarray:
    """``k`` test indices evenly spaced over the split (the same for every point)."""
    return np.unique(np.linspace(0, n_samples - 1, min(k, n_samples)).round().astype(int))


def ensemble_summary(store, test_points: int = 10, max_elements: int | None = 256
                     ) -> tuple[dict[str, Any], pd.DataFrame]:
    """Spread of the members' losses and convergence diagnostics of an ensemble store.

    Returns (row, convergence table). Row: ``n_members``, ``chains``, ``draws``,
    ``loss_mean``, ``loss_sd`` (ddof 1), ``loss_q05``, ``loss_q95``, ``loss_spread``
    (q95 − q05), ``kinetic_temperature_mean`` (over all members), and for each variable
    of :data:`CONVERGENCE_VARIABLES` in the store ``rhat_<v>`` (max over components),
    ``ess_bulk_<v>``, ``ess_tail_<v>`` (min), plus ``rhat`` / ``ess_bulk`` /
    ``ess_tail`` (worst over variables). ``latent`` is restricted to ``test_points``
    evenly spaced test samples and at most ``max_elements`` components. With fewer
    than 4 draws per chain the diagnostics are NaN.
    """
    from eae.core.diagnostics import MIN_DRAWS, convergence_table
    from eae.support.io import open_zarr

    ds = open_zarr(store)
    loss = np.asarray(ds["loss"].values, np.float64)  # (chain, draw)
    chains, draws = loss.shape
    flat = loss.ravel()
    q05, q95 = np.quantile(flat, [0.05, 0.95])
    row: dict[str, Any] = {
        "n_members": int(flat.size), "chains": int(chains), "draws": int(draws),
        "loss_mean": float(flat.mean()),
        "loss_sd": float(flat.std(ddof=1)) if flat.size > 1 else math.nan,
        "loss_q05": float(q05), "loss_q95": float(q95), "loss_spread": float(q95 - q05),
        "kinetic_temperature_mean": float(np.mean(ds["kinetic_temperature"].values)),
    }
    variables = [v for v in CONVERGENCE_VARIABLES if v in ds.data_vars]
    if "latent" in variables and "sample" in ds["latent"].dims:
        ds = ds.isel(sample=_fixed_test_points(ds.sizes["sample"], test_points))
    if draws >= MIN_DRAWS:
        table = convergence_table(ds, variables, max_elements=max_elements)
    else:
        log.warning("sweep: %d draws per chain (< %d): no R̂/ESS", draws, MIN_DRAWS)
        table = pd.DataFrame({"variable": variables})
    for rec in table.to_dict("records"):
        v = rec["variable"]
        for stat in ("rhat", "ess_bulk", "ess_tail"):
            row[f"{stat}_{v}"] = float(rec.get(stat, math.nan))
    row["rhat"] = _worst([row.get(f"rhat_{v}") for v in variables], max)
    row["ess_bulk"] = _worst([row.get(f"ess_bulk_{v}") for v in variables], min)
    row["ess_tail"] = _worst([row.get(f"ess_tail_{v}") for v in variables], min)
    return row, table


def _worst(values: Iterable[Any], pick) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(pick(finite)) if finite else math.nan


#: Columns of a point's row.csv and of sweep.csv, in order.
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


def sweep_point_stage(params: Mapping[str, Any], inputs: Mapping[str, str],
                      outputs: Mapping[str, str | os.PathLike] | None = None,
                      checkpoint_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Workflow stage ``sweep_point``: train (resuming from ``checkpoint_dir``), sample
    and score one point; writes ``row.csv`` (one row, :data:`ROW_COLUMNS`),
    ``convergence.csv`` and their provenance sidecars.

    ``params``: :func:`point_params`. ``inputs``: the experiment's input files
    (:func:`experiment_inputs`). ``outputs``: ``model``, ``ensemble``, ``row``,
    ``convergence`` (default: :func:`point_paths` under ``results/``).
    """
    from eae.experiments.images.metrics import resolve_config
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    t0 = time.perf_counter()
    experiment, tag = params["experiment"], params["point"]
    cfg = params["eae"]
    settings = parse_tag(tag)
    paths = point_paths(experiment, tag)
    paths.update({k: Path(v) for k, v in dict(outputs or {}).items()})
    ckpt = Path(checkpoint_dir) if checkpoint_dir else paths["checkpoint"]
    analysis = resolve_config(params.get("analysis"))
    diag = params.get("diagnostics") or {}
    log.info("sweep %s point %s: T = %s%s", experiment, tag, cfg["sampler"]["temperature"],
             f" -> {cfg['sampler']['final_temperature']} ({cfg['sampler']['schedule']})"
             if settings["kind"] == "annealed" else "")
    metrics = _experiment(experiment).run(cfg, inputs, paths, ckpt, analysis)
    summary, table = ensemble_summary(paths["ensemble"], int(diag.get("test_points", 10)),
                                      diag.get("max_elements", 256))
    sampler = cfg["sampler"]
    final_t = float(sampler["final_temperature"] if settings["kind"] == "annealed"
                    else sampler["temperature"])
    row = {
        "experiment": experiment, "point": tag, "kind": settings["kind"],
        "schedule": sampler["schedule"], "temperature": final_t,
        "initial_temperature": float(sampler["temperature"]),
        "decoder_updates": cfg["train"].get("decoder_updates"),
        "encoder_steps": cfg["train"].get("encoder_steps"),
        **metrics, **summary,
        "tkin_ratio": summary["kinetic_temperature_mean"] / final_t,
        **_measured_temperatures(paths["ensemble"]),
    }
    row["wall_s"] = time.perf_counter() - t0
    frame = pd.DataFrame([row]).reindex(columns=ROW_COLUMNS)
    write_csv_atomic(frame, paths["row"])
    write_csv_atomic(table, paths["convergence"])
    record = make_record("sweep_point", config=dict(params),
                         seeds={"train": cfg["train"].get("seed")},
                         inputs=[*inputs.values(), paths["model"], paths["ensemble"]],
                         started=started, modules=["eae.experiments.sweep"],
                         extra={"experiment": experiment, "point": tag})
    record_outputs(record, [paths["row"], paths["convergence"]])
    log.info("sweep %s point %s: test MSE %.5g, active %s/%s, probe %.3f, loss sd %.3g, "
             "R̂ %.3f, ESS bulk %.0f, %.0f s", experiment, tag, row["test_mse"],
             row["active_units"], row["latent_dim"], row["probe_accuracy"], row["loss_sd"],
             row["rhat"], row["ess_bulk"], row["wall_s"])
    return frame


def _measured_temperatures(store) -> dict[str, Any]:
    import xarray as xr

    with xr.open_zarr(store, consolidated=False) as ds:
        return store_temperature_columns(ds.attrs)


# --------------------------------------------------------------------------- table


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

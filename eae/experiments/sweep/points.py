"""One point of the temperature sweep: tags, settings, paths and the stage that
trains, samples and scores it (:func:`sweep_point_stage`); see :mod:`eae.experiments.sweep`."""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np
import pandas as pd

from eae.support.io import temperature_tag, write_csv_atomic
from eae.core.temperature import store_temperature_columns

from eae.experiments.sweep.table import CONVERGENCE_VARIABLES, ROW_COLUMNS

log = logging.getLogger("eae")

SCHEDULES = ("linear", "geometric")
#: Keys of the ``analysis`` config section that a point's metrics depend on (only
#: these enter the job's params, so e.g. a figure setting reruns no point).
ANALYSIS_KEYS = ("active_threshold", "relative_active_fraction", "pca_variance", "probe", "seed", "batch_size",
                 "chunk_members")


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

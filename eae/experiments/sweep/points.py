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

from eae.experiments.sweep.experiments import (code_variable, dataset_eae_config, faces_eae_config,
                                               faces_point, image_eae_config, image_point,
                                               rd_eae_config, rd_point)
from eae.experiments.sweep.table import CONVERGENCE_VARIABLES, ROW_COLUMNS

log = logging.getLogger("eae")

SCHEDULES = ("linear", "geometric")
#: What a point writes (:func:`sweep_point_stage`'s ``outputs``).
OUTPUT_KEYS = ("model", "ensemble", "row", "convergence")
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
    ``kinetic_temperature`` and a code variable, ``latent`` or ``latent_code``, see
    :data:`eae.experiments.sweep.experiments.CODE_VARIABLES`) and returns its metrics
    (:data:`eae.experiments.sweep.experiments.METRIC_KEYS` as a dict).
    ``inputs``: the names of the input files ``run`` reads (e.g. ``data``, the data store).
    ``eae_config(config, experiment, temperature)``: the experiment's eae config (model,
    sampler, train, ensemble) that a point at ``temperature`` starts from.
    """

    run: Callable[..., dict[str, Any]]
    inputs: tuple[str, ...]
    eae_config: Callable[[Mapping[str, Any], str, float], Mapping[str, Any]]


#: name -> :class:`Experiment`; the schema's ``sweep.experiment`` enum lists the same names.
EXPERIMENTS: dict[str, Experiment] = {}


def register_experiment(*names: str, inputs: Iterable[str],
                        eae_config: Callable[[Mapping[str, Any], str, float], Mapping[str, Any]]):
    """Decorator: register ``run`` and ``eae_config`` (see :class:`Experiment`) for the
    named experiments."""

    def wrap(run):
        for name in names:
            EXPERIMENTS[name] = Experiment(run=run, inputs=tuple(inputs), eae_config=eae_config)
        return run

    return wrap


#: Any other name is a ``datasets:`` entry: the image chain on its prepared store (the
#: workflow's config check makes sure the entry exists).
DATASET_EXPERIMENT = Experiment(run=image_point, inputs=("data",), eae_config=dataset_eae_config)


def _experiment(name: str, config: Mapping[str, Any] | None = None) -> Experiment:
    """The sweep experiment ``name``; with ``config``, a name that is neither built in
    nor a ``datasets:`` entry is a ValueError."""
    if name in EXPERIMENTS:
        return EXPERIMENTS[name]
    datasets = (config or {}).get("datasets") or {}
    if config is not None and name not in datasets:
        raise ValueError(f"sweep: unknown experiment {name!r}; known: "
                         f"{sorted(EXPERIMENTS) + sorted(datasets)}")
    return DATASET_EXPERIMENT


register_experiment("mnist", "frey", inputs=("data",), eae_config=image_eae_config)(image_point)
register_experiment("faces", inputs=("data",), eae_config=faces_eae_config)(faces_point)
register_experiment("rd", inputs=("data",), eae_config=rd_eae_config)(rd_point)


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
    ``train``, ``ensemble``; see :class:`Experiment`'s ``eae_config``) with the point's
    temperature (also its top-level ``temperature``, where it has one); annealed points get
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
    if "temperature" in cfg:  # a faces run config names its temperature at the top too
        cfg["temperature"] = sampler["temperature"]
    train = dict(cfg.get("train") or {})
    train.update({k: copy.deepcopy(v) for k, v in (sweep_cfg.get("train") or {}).items()
                  if v is not None})
    cfg["train"] = train
    ensemble = dict(cfg.get("ensemble") or {})
    ensemble.update(copy.deepcopy(dict(sweep_cfg.get("ensemble") or {})))
    cfg["ensemble"] = ensemble
    return cfg


def point_params(config: Mapping[str, Any], experiment: str, tag: str) -> dict[str, Any]:
    """Everything one point depends on (the rule's ``params``): its eae config (the
    experiment's, :class:`Experiment`'s ``eae_config`` at the point's initial
    temperature, through :func:`point_config`), the ``analysis`` keys its metrics use and
    the sweep's diagnostics settings. ValueError for an unknown experiment or point."""
    spec = _experiment(experiment, config)
    sweep_cfg = config["sweep"]
    settings = _point_settings(sweep_cfg, tag)
    start = settings["temperature"] if settings["kind"] == "constant" else settings["from"]
    analysis = config.get("analysis") or {}
    return {
        "experiment": experiment,
        "point": tag,
        "eae": point_config(spec.eae_config(config, experiment, float(start)), sweep_cfg, tag),
        "analysis": {k: copy.deepcopy(analysis[k]) for k in ANALYSIS_KEYS if k in analysis},
        "diagnostics": dict(sweep_cfg.get("diagnostics") or {}),
    }


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
    ``ess_tail`` (worst over variables). ``latent`` is the store's code variable
    (:func:`eae.experiments.sweep.experiments.code_variable`: ``latent``, or e.g. the
    SINDy-EAE's ``latent_code``; left out when the store has none), restricted to
    ``test_points`` evenly spaced test samples and at most ``max_elements`` components.
    With fewer than 4 draws per chain the diagnostics are NaN.
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
    code = code_variable(ds)
    if code is None:
        log.info("sweep: the ensemble store has no code variable: no latent R̂/ESS")
    elif code != "latent":
        ds = _code_as_latent(ds, code)
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
    for v in CONVERGENCE_VARIABLES:  # e.g. a store without codes: NaN, not missing
        for stat in ("rhat", "ess_bulk", "ess_tail"):
            row.setdefault(f"{stat}_{v}", math.nan)
    row["rhat"] = _worst([row.get(f"rhat_{v}") for v in variables], max)
    row["ess_bulk"] = _worst([row.get(f"ess_bulk_{v}") for v in variables], min)
    row["ess_tail"] = _worst([row.get(f"ess_tail_{v}") for v in variables], min)
    return row, table


def _code_as_latent(ds, code: str):
    """loss, kinetic_temperature and the code variable ``code`` (as ``latent``; a
    dimension of that name, the SINDy store's, is renamed ``unit``)."""
    import xarray as xr

    da = ds[code]
    if "latent" in da.dims or "latent" in da.coords:
        da = da.rename({"latent": "unit"})
    log.info("sweep: the store's codes %r enter the diagnostics as 'latent'", code)
    return xr.Dataset({"loss": ds["loss"], "kinetic_temperature": ds["kinetic_temperature"],
                       "latent": da}, attrs=ds.attrs)


def _worst(values: Iterable[Any], pick) -> float:
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    return float(pick(finite)) if finite else math.nan


#: Columns of a point's row.csv and of sweep.csv, in order.


def sweep_point_stage(params: Mapping[str, Any], inputs: Mapping[str, str],
                      outputs: Mapping[str, str | os.PathLike],
                      checkpoint_dir: str | os.PathLike | None = None) -> pd.DataFrame:
    """Workflow stage ``sweep_point``: train (resuming from ``checkpoint_dir``), sample
    and score one point; writes ``row.csv`` (one row, :data:`ROW_COLUMNS`),
    ``convergence.csv`` and their provenance sidecars.

    ``params``: :func:`point_params`. ``inputs``: the experiment's input files (the
    names its :class:`Experiment` lists). ``outputs``: ``model``, ``ensemble``, ``row``,
    ``convergence`` (the workflow's layout: :func:`eae.workflow.sweep_point_paths`).
    ``checkpoint_dir``: the running training checkpoint (None: in the model folder).
    """
    from eae.experiments.images.metrics import resolve_config
    from eae.support.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    t0 = time.perf_counter()
    experiment, tag = params["experiment"], params["point"]
    cfg = params["eae"]
    settings = parse_tag(tag)
    missing = [k for k in OUTPUT_KEYS if k not in outputs]
    if missing:
        raise ValueError(f"sweep point {tag}: outputs lacks {missing}")
    paths = {k: Path(outputs[k]) for k in OUTPUT_KEYS}
    needed = [k for k in _experiment(experiment).inputs if k not in inputs]
    if needed:
        raise ValueError(f"sweep point {tag} of {experiment}: inputs lacks {needed}")
    ckpt = Path(checkpoint_dir) if checkpoint_dir else None
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

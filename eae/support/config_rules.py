"""Cross-field config rules: what a stage would refuse at run time, checked up front.

The schema checks one value at a time; a rule relates several (``t_end`` and
``save_interval``, ensemble members and chains, a data source and its file). Every rule
is a function of the config with its schema defaults filled that yields one message per
problem, naming the key(s), the value(s) and what is allowed. :func:`rule_problems`
runs them for :func:`eae.support.config.check_config` (``eae check-config`` and the workflow);
:func:`rules_markdown` lists them in config/README.md.

Each rule mirrors a check a stage makes when it runs (named in ``enforced_by``); the
stage checks stay as a second line of defence for direct calls of the stage functions.
The arithmetic is repeated here, not imported, so that checking a config does not
import NumPy, SciPy or TensorFlow; tests/test_config_rules.py checks that both agree.

Value rules apply whether or not their experiment is enabled (its targets can still be
asked for by name). File rules apply only to the experiments that will run: enabled
ones, and the image experiment the sweep trains on. Paths are relative to the working
directory (Snakemake's ``-d``), ``~`` expanded, as the stages read them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# eae.diagnostics.MIN_DRAWS: ArviZ's minimum of draws per chain for R̂ and ESS.
MIN_DRAWS = 4
# skimage.data.lfw_subset(): its first 100 images are the faces (eae.faces.LFW_N_FACES).
LFW_N_FACES = 100
# CelebA's layout (eae.faces.CELEBA_IMAGE_DIR, CELEBA_SPLIT_FILE).
CELEBA_IMAGE_DIR = "img_align_celeba"
CELEBA_SPLIT_FILE = "list_eval_partition.txt"
# MNIST's labels: the interpolation figure needs test images of both classes.
MNIST_LABELS = range(10)
IMAGE_EXPERIMENTS = ("mnist", "frey")
# Tolerances of eae.simulate._count_intervals and eae.data.resolve_config.
_MULTIPLE_RTOL = 1e-6
_FRACTION_ATOL = 1e-6


@dataclass(frozen=True)
class Rule:
    """A named cross-field rule.

    name: short id, shown with every message (``[rule rd_split_fits]``).
    keys: the keys it relates (for the docs). description: what is allowed.
    enforced_by: the stage check it mirrors. reads: the keys (dotted prefixes) it reads;
    it is skipped while a problem lies at, under or above one of them (its input would
    be untyped, and the schema's message already names the key).
    files: reads the file system (``check_config(check_files=False)`` skips it).
    check: config with defaults -> one message per problem.
    """

    name: str
    keys: str
    description: str
    enforced_by: str
    reads: tuple[str, ...]
    check: Callable[[Mapping[str, Any]], Iterable[str]]
    files: bool = False


#: Every rule, in the order they are checked and documented.
RULES: list[Rule] = []


def rule(name: str, *, keys: str, description: str, enforced_by: str,
         reads: tuple[str, ...], files: bool = False):
    """Decorator: register ``check`` as :class:`Rule` ``name``."""

    def register(check: Callable[[Mapping[str, Any]], Iterable[str]]):
        RULES.append(Rule(name, keys, " ".join(description.split()), enforced_by,
                          reads, check, files))
        return check

    return register


def _overlaps(read: str, failed: tuple) -> bool:
    """Whether key ``read`` ('rd.data') and problem path ``failed`` lie on one branch."""
    parts = tuple(read.split("."))
    n = min(len(parts), len(failed))
    return parts[:n] == tuple(str(p) for p in failed[:n])


def rule_problems(config: Mapping[str, Any], failed: Iterable[tuple] = (),
                  check_files: bool = True) -> list[str]:
    """One line per problem of every rule, each ending in ``[rule <name>]``. ``failed``:
    key paths (tuples) with schema or finiteness problems; a rule reading one of them
    is not run."""
    failed = list(failed)
    lines = []
    for r in RULES:
        if r.files and not check_files:
            continue
        if any(_overlaps(read, path) for read in r.reads for path in failed):
            continue
        lines += [f"{message} [rule {r.name}]" for message in r.check(config)]
    return lines


def rules_markdown() -> list[str]:
    """The "Cross-field rules" section of config/README.md."""
    lines = [
        "## Cross-field rules",
        "",
        "Checked after the schema, on the config with its defaults filled, by `eae check-config`",
        "and by the workflow before it plans any job (`eae.config.check_config`, from",
        "`eae/config_rules.py`). Each mirrors a check that a stage makes when it runs (kept there",
        "as a second line of defence); a message names the key(s), the value(s), what is allowed",
        "and the rule. Value rules apply whether or not the experiment is enabled; file rules",
        "(marked *file*) only to the experiments that will run (enabled, or the one `sweep` trains",
        "on), with paths relative to the working directory. Every number anywhere must also be",
        "finite: `.nan`, `.inf` and `-.inf` are refused with their key.",
        "",
        "| rule | keys | allowed | enforced at run time by |",
        "|---|---|---|---|",
    ]
    for r in RULES:
        name = f"`{r.name}`" + (" (*file*)" if r.files else "")
        lines.append(f"| {name} | {r.keys} | {r.description} | {r.enforced_by} |")
    lines.append("")
    return lines


# --------------------------------------------------------------------------- helpers


def _g(value: float) -> str:
    """A number as short as it reads (0.05, 100, 1e-08)."""
    return f"{float(value):g}"


def temperature_tag(temperature: float) -> str:
    """``1e-05``: a temperature at 7 significant digits, as eae.faces / eae.sweep write
    it into run directories and point tags."""
    mantissa, exponent = f"{float(temperature):.6e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{exponent}"


def _relative_note(path: Path) -> str:
    """Where a relative path was looked for (the stages read it from the same place)."""
    return "" if path.is_absolute() else f" (relative to {os.getcwd()})"


def _duplicates(tags: list[str]) -> list[str]:
    return sorted({t for t in tags if tags.count(t) > 1})


def _image_sections(config: Mapping[str, Any]) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name in IMAGE_EXPERIMENTS:
        yield name, config[name]


def _will_run(config: Mapping[str, Any], experiment: str) -> bool:
    """Whether ``experiment``'s jobs are in the default target: enabled, or the image
    experiment whose data and EAE settings the enabled sweep uses."""
    sweep = config["sweep"]
    return bool(config[experiment]["enabled"]) or (
        bool(sweep["enabled"]) and sweep["experiment"] == experiment)


def _intervals(span: float, interval: float) -> int | None:
    """``span / interval`` when it is a whole number >= 0 (eae.simulate's tolerance)."""
    count = span / interval
    if count < -1e-9 or abs(count - round(count)) > _MULTIPLE_RTOL * max(1.0, abs(count)):
        return None
    return int(round(count))


def rd_snapshots(simulation: Mapping[str, Any]) -> int | None:
    """Snapshots rd.simulation saves (None when its save grid is invalid)."""
    if simulation["t_end"] <= simulation["save_start"]:
        return None
    count = _intervals(simulation["t_end"] - simulation["save_start"], simulation["save_interval"])
    return None if count is None else count + 1


# --------------------------------------------------------------------------- rd


@rule("rd_save_grid",
      reads=("rd.simulation",),
      keys="`rd.simulation.t_end`, `save_start`, `save_interval`",
      description="t_end > save_start; save_start and t_end − save_start are whole multiples of "
                  "save_interval (every saved time is save_start + k·save_interval).",
      enforced_by="`eae.simulate.params_from_config` (rule `rd_simulate`)")
def _rd_save_grid(config):
    sim = config["rd"]["simulation"]
    start, end, step = sim["save_start"], sim["t_end"], sim["save_interval"]
    if _intervals(start, step) is None:
        yield (f"rd.simulation.save_start = {_g(start)} is not a multiple of "
               f"rd.simulation.save_interval = {_g(step)}; allowed: k·{_g(step)}, e.g. "
               f"{_g(math.floor(start / step) * step)}")
    if end <= start:
        yield (f"rd.simulation.t_end = {_g(end)} must be > rd.simulation.save_start = {_g(start)}")
    elif _intervals(end - start, step) is None:
        below = start + math.floor((end - start) / step) * step
        yield (f"rd.simulation.t_end − save_start = {_g(end)} − {_g(start)} is not a multiple of "
               f"rd.simulation.save_interval = {_g(step)}; allowed: t_end = save_start + "
               f"k·save_interval, e.g. {_g(below)} or {_g(below + step)}")


@rule("rd_split_fits",
      reads=("rd.simulation", "rd.data"),
      keys="`rd.data.n_train`, `n_val`, `n_test`, `pool_fraction`; the snapshots of `rd.simulation`",
      description="With N = (t_end − save_start)/save_interval + 1 snapshots and the pool = the "
                  "first floor(pool_fraction·N): n_train + n_val ≤ pool and n_test ≤ N − pool "
                  "(the test set, the last n_test snapshots, must not overlap the pool).",
      enforced_by="`eae.rd_data.split_indices` (rule `rd_prepare`)")
def _rd_split_fits(config):
    n = rd_snapshots(config["rd"]["simulation"])
    if n is None:
        return  # rd_save_grid reports the save grid
    data = config["rd"]["data"]
    pool = math.floor(data["pool_fraction"] * n)
    origin = (f"the first floor(rd.data.pool_fraction·N) = floor({_g(data['pool_fraction'])}·{n})"
              f" = {pool} of the N = {n} snapshots rd.simulation saves")
    if data["n_test"] > n - pool:
        yield (f"rd.data.n_test = {data['n_test']} overlaps the train/val pool ({origin}); "
               f"allowed: n_test ≤ {n - pool}, or a lower pool_fraction, or a longer simulation")
    if data["n_train"] + data["n_val"] > pool:
        yield (f"rd.data.n_train + n_val = {data['n_train']} + {data['n_val']} = "
               f"{data['n_train'] + data['n_val']} exceeds the train/val pool ({origin}); "
               f"allowed: n_train + n_val ≤ {pool}")


# --------------------------------------------------------------------------- data


@rule("fractions_sum_to_one",
      reads=("mnist.data.fractions", "frey.data.fractions", "faces.data.fractions"),
      keys="`mnist.data.fractions`, `frey.data.fractions`, `faces.data.fractions`",
      description="train + val + test = 1 (within 1e-6); keys left out take their defaults.",
      enforced_by="`eae.data.resolve_config` (rules `images_prepare_mnist`, `images_prepare_frey`), "
                  "`eae.faces.resolve_data_config` (rule `faces_prepare`)")
def _fractions_sum_to_one(config):
    for section in ("mnist", "frey", "faces"):
        fr = config[section]["data"]["fractions"]
        total = fr["train"] + fr["val"] + fr["test"]
        if abs(total - 1.0) > _FRACTION_ATOL:
            yield (f"{section}.data.fractions: train + val + test = {_g(fr['train'])} + "
                   f"{_g(fr['val'])} + {_g(fr['test'])} = {_g(total)}; allowed: a sum of 1")


@rule("faces_lfw_images",
      reads=("faces.data.source", "faces.data.n_images"),
      keys="`faces.data.n_images`, `faces.data.source`",
      description=f"With source lfw, n_images ≤ {LFW_N_FACES} (lfw_subset() holds {LFW_N_FACES} faces).",
      enforced_by="`eae.faces.prepare_lfw` (rule `faces_prepare`)")
def _faces_lfw_images(config):
    data = config["faces"]["data"]
    if data["source"] == "lfw" and data["n_images"] is not None and data["n_images"] > LFW_N_FACES:
        yield (f"faces.data.n_images = {data['n_images']}: source 'lfw' has only {LFW_N_FACES} "
               f"faces; allowed: 1..{LFW_N_FACES} or null")


@rule("data_file_exists",
      reads=("mnist.enabled", "mnist.data", "frey.enabled", "frey.data", "sweep.enabled",
             "sweep.experiment"), files=True,
      keys="`mnist.data.path`, `frey.data.path` (source `file`)",
      description="An existing file, for an experiment that will run.",
      enforced_by="`eae.data.prepare_mnist`, `eae.data.prepare_frey`; Snakemake's missing-input check")
def _data_file_exists(config):
    for name, section in _image_sections(config):
        data = section["data"]
        if data["source"] != "file" or not _will_run(config, name):
            continue
        path = Path(str(data["path"])).expanduser()
        if not path.is_file():
            what = "is a folder, not a file" if path.is_dir() else "file not found"
            yield (f"{name}.data.path = {data['path']!r}: {what}{_relative_note(path)}; "
                   f"source 'file' needs an existing file")


@rule("celeba_folder_exists",
      reads=("faces.enabled", "faces.data"), files=True,
      keys="`faces.data.path` (source `celeba`)",
      description=f"A folder holding {CELEBA_IMAGE_DIR}/ and {CELEBA_SPLIT_FILE}, when faces is enabled.",
      enforced_by="`eae.faces.prepare_celeba`; Snakemake's missing-input check")
def _celeba_folder_exists(config):
    data = config["faces"]["data"]
    if data["source"] != "celeba" or not config["faces"]["enabled"]:
        return
    root = Path(str(data["path"])).expanduser()
    missing = [p for p in (CELEBA_IMAGE_DIR + "/", CELEBA_SPLIT_FILE)
               if not (root / p).exists()] if root.is_dir() else None
    if missing is None:
        yield (f"faces.data.path = {data['path']!r}: CelebA folder not found{_relative_note(root)}; "
               f"source 'celeba' needs a folder holding {CELEBA_IMAGE_DIR}/ "
               f"and {CELEBA_SPLIT_FILE}")
    elif missing:
        yield (f"faces.data.path = {data['path']!r}: lacks {' and '.join(missing)}; source "
               f"'celeba' needs a folder holding {CELEBA_IMAGE_DIR}/ and {CELEBA_SPLIT_FILE}")


# --------------------------------------------------------------------------- models, training


def _dataset_entries(config) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, entry in (config.get("datasets") or {}).items():
        yield name, entry


def _eae_blocks(config, rd: bool = True) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """(key prefix, block with train and ensemble) of every EAE that is sampled."""
    for name, section in _image_sections(config):
        yield f"{name}.eae", section["eae"]
    for name, entry in _dataset_entries(config):
        yield f"datasets.{name}.eae", entry["eae"]
    if rd:
        yield "rd.eae", config["rd"]["eae"]
    yield "faces", config["faces"]


@rule("encoder_steps_or_epochs",
      reads=("mnist.eae.train", "frey.eae.train", "faces.train", "datasets"),
      keys="`<experiment>.eae.train.encoder_steps`, `encoder_epochs`; `faces.train.…`",
      description="At least one is set (not null): Simmering steps per decoder update, or passes "
                  "over the training set per decoder update.",
      enforced_by="`eae.train.TrainSettings.steps_per_update` (rules `images_train_eae`, "
                  "`faces_train_eae`, `sweep_point`)")
def _encoder_steps_or_epochs(config):
    # rd.eae.train has encoder_steps only (an integer the schema requires).
    for prefix, block in _eae_blocks(config, rd=False):
        train = block["train"]
        if not train["encoder_steps"] and not train["encoder_epochs"]:
            yield (f"{prefix}.train.encoder_steps and encoder_epochs are both null; allowed: set "
                   f"one (an integer ≥ 1, or a number > 0)")


@rule("ensemble_draws_per_chain",
      reads=("mnist.eae.train", "mnist.eae.ensemble", "frey.eae.train",
             "frey.eae.ensemble", "rd.eae.train", "rd.eae.ensemble", "faces.train",
             "faces.ensemble", "datasets"),
      keys="`<experiment>.eae.ensemble.members`, `<experiment>.eae.train.chains`; "
           "`rd.eae.…`; `faces.ensemble.members`, `faces.train.chains`",
      description=f"Each chain contributes ceil(members / chains) draws; the convergence "
                  f"diagnostics need at least {MIN_DRAWS}: members ≥ {MIN_DRAWS - 1}·chains + 1.",
      enforced_by="`eae.diagnostics.convergence_table` (rule `diagnostics`)")
def _ensemble_draws_per_chain(config):
    for prefix, block in _eae_blocks(config):
        members, chains = block["ensemble"]["members"], block["train"]["chains"]
        draws = -(-members // chains)
        if draws < MIN_DRAWS:
            yield (f"{prefix}.ensemble.members = {members} with {prefix}.train.chains = {chains} "
                   f"gives {draws} draw(s) per chain; the diagnostics need ≥ {MIN_DRAWS}: "
                   f"allowed: members ≥ {(MIN_DRAWS - 1) * chains + 1} "
                   f"(e.g. {MIN_DRAWS * chains} = {chains} chains × {MIN_DRAWS} draws)")


@rule("vae_sigmoid_output",
      reads=("mnist.vae.model", "frey.vae.model"),
      keys="`mnist.vae.model.output_activation`, `frey.vae.model.output_activation`",
      description="sigmoid: the VAE's binary cross-entropy needs outputs in (0, 1).",
      enforced_by="`eae.baselines` trainer (rule `images_train_baseline`)")
def _vae_sigmoid_output(config):
    for name, section in _image_sections(config):
        act = section["vae"]["model"]["output_activation"]
        if act != "sigmoid":
            yield (f"{name}.vae.model.output_activation = {act!r}; allowed: 'sigmoid' (the VAE's "
                   f"binary cross-entropy needs outputs in (0, 1))")


def _model_blocks(config) -> Iterator[tuple[str, Mapping[str, Any]]]:
    for name, section in _image_sections(config):
        for model in ("eae", "vae", "ae"):
            yield f"{name}.{model}.model", section[model]["model"]
    yield "faces.model", config["faces"]["model"]
    for name, entry in _dataset_entries(config):
        yield f"datasets.{name}.model", entry["model"]


@rule("conv_decoder_layers",
      reads=(*(f"{e}.{m}.model" for e in IMAGE_EXPERIMENTS for m in ("eae", "vae", "ae")),
             "faces.model", "datasets"),
      keys="`<model>.decoder_filters`, `<model>.decoder_strides` (kind conv)",
      description="The same length: one stride per transposed-convolution layer.",
      enforced_by="`eae.models.conv_decoder` (rules `images_train_eae`, `images_train_baseline`, `faces_train_eae`)")
def _conv_decoder_layers(config):
    for prefix, model in _model_blocks(config):
        filters, strides = model["decoder_filters"], model["decoder_strides"]
        if model["kind"] == "conv" and len(filters) != len(strides):
            yield (f"{prefix}.decoder_filters = {filters} and decoder_strides = {strides} differ "
                   f"in length ({len(filters)} vs {len(strides)}); allowed: one stride per filter")


@rule("faces_temperatures_distinct",
      reads=("faces.temperatures",),
      keys="`faces.temperatures`",
      description="Distinct at 7 significant digits (each names its run directory `eae_T<T>`).",
      enforced_by="`eae.faces.temperature_tags` (the faces rules, when the DAG is built)")
def _faces_temperatures_distinct(config):
    tags = [temperature_tag(t) for t in config["faces"]["temperatures"]]
    for tag in _duplicates(tags):
        yield (f"faces.temperatures = {[float(t) for t in config['faces']['temperatures']]}: "
               f"{tag} appears {tags.count(tag)} times at 7 significant digits; allowed: "
               f"distinct temperatures")


# --------------------------------------------------------------------------- sweep


def sweep_tags(sweep: Mapping[str, Any]) -> list[str]:
    """Point tags of the sweep (eae.sweep.point_tags), without importing it."""
    temps = [float(t) for t in sweep["temperatures"]]
    tags = [f"T{temperature_tag(t)}" for t in temps]
    for run in sweep["annealed"]:
        start = max(temps) if run.get("from") is None else run["from"]
        end = min(temps) if run.get("to") is None else run["to"]
        schedule = run.get("schedule") or "geometric"
        tags.append(f"anneal_{temperature_tag(start)}_{temperature_tag(end)}_{schedule}")
    return tags


@rule("sweep_points_distinct",
      reads=("sweep.temperatures", "sweep.annealed"),
      keys="`sweep.temperatures`, `sweep.annealed`",
      description="Every point distinct: temperatures at 7 significant digits, annealed runs "
                  "by (from, to, schedule) after their nulls are resolved (from = the hottest, "
                  "to = the coldest temperature).",
      enforced_by="`eae.sweep.sweep_points` (the sweep rules, when the DAG is built)")
def _sweep_points_distinct(config):
    tags = sweep_tags(config["sweep"])
    for tag in _duplicates(tags):
        yield (f"sweep.temperatures / sweep.annealed: point {tag} is configured "
               f"{tags.count(tag)} times (temperatures are compared at 7 significant digits); "
               f"allowed: distinct points")


@rule("sweep_experiment_known",
      reads=("sweep.experiment", "datasets"),
      keys="`sweep.experiment`",
      description="A built-in experiment (mnist, frey, faces, rd) or a `datasets` entry.",
      enforced_by="`eae.experiments.sweep.point_params` (the sweep rules, when the DAG is built)")
def _sweep_experiment_known(config):
    known = ["mnist", "frey", "faces", "rd", *(config.get("datasets") or {})]
    if config["sweep"]["experiment"] not in known:
        yield (f"sweep.experiment = {config['sweep']['experiment']!r}; allowed: "
               f"{', '.join(known)}")


# --------------------------------------------------------------------------- datasets


@rule("dataset_names",
      reads=("datasets",),
      keys="`datasets.<name>`",
      description="Not a built-in experiment or config section (mnist, frey, faces, rd, sweep, "
                  "validation, analysis, diagnostics, datasets) nor a folder of results/ (data, "
                  "tables, figures, logs, benchmarks, checkpoints, provenance, report, archive).",
      enforced_by="the image rules' `{dataset}` wildcard (outputs under results/<name>/)")
def _dataset_names(config):
    from eae.experiments.datasets.names import check_name

    for name, _ in _dataset_entries(config):
        problem = check_name(name)
        if problem:
            yield f"datasets.{name}: {problem}"


@rule("dataset_sources",
      reads=("datasets", "sweep.enabled", "sweep.experiment"), files=True,
      keys="`datasets.<name>.path`, `format`, `x`",
      description="An existing file or folder of a known format (.npz, .npy, Zarr, NetCDF, a "
                  "folder of PNG/JPEG images) holding the array or variable `x`, for an entry "
                  "that will run (enabled, or the sweep's experiment).",
      enforced_by="`eae.experiments.datasets.prepare.prepare_dataset` (rule `datasets_prepare`)")
def _dataset_sources(config):
    sweep = config["sweep"]
    for name, entry in _dataset_entries(config):
        if not (entry["enabled"] or (sweep["enabled"] and sweep["experiment"] == name)):
            continue
        from eae.experiments.datasets.sources import peek  # reads NumPy / xarray: lazily

        try:
            peek(name, entry)
        except ValueError as err:
            path = Path(str(entry["path"])).expanduser()
            note = _relative_note(path) if not path.exists() else ""
            message = str(err)
            prefix = "" if message.startswith(f"datasets.{name}") else f"datasets.{name}: "
            yield f"{prefix}{message}{note}"


# --------------------------------------------------------------------------- analysis


@rule("interpolation_classes",
      reads=("analysis.interpolate",),
      keys="`analysis.interpolate.classes`",
      description="Two different MNIST digits (0–9).",
      enforced_by="`eae.metrics.resolve_config`, `eae.figures` (rule `images_interpolation`)")
def _interpolation_classes(config):
    classes = config["analysis"]["interpolate"]["classes"]
    if classes[0] == classes[1]:
        yield f"analysis.interpolate.classes = {classes}; allowed: two different labels"
    outside = [c for c in classes if c not in MNIST_LABELS]
    if outside:
        yield (f"analysis.interpolate.classes = {classes}: no MNIST image has label "
               f"{', '.join(map(str, outside))}; allowed: digits 0–9")


@rule("samples_need_a_model",
      reads=("analysis.models", "analysis.ae_samples"),
      keys="`analysis.models`, `analysis.ae_samples`",
      description="The samples figure draws from eae or vae, or from ae with ae_samples true: "
                  "models names at least one of them.",
      enforced_by="`eae.figures` samples figure (rule `images_figures`)")
def _samples_need_a_model(config):
    analysis = config["analysis"]
    models = set(analysis["models"])
    if not (models & {"eae", "vae"} or ("ae" in models and analysis["ae_samples"])):
        yield (f"analysis.models = {sorted(models)} with analysis.ae_samples = "
               f"{str(analysis['ae_samples']).lower()} leaves the samples figure nothing to draw "
               f"from; allowed: include eae or vae, or ae with ae_samples true")

"""Each cross-field rule of eae.config_rules agrees with the stage check it mirrors.

The rules repeat the stages' arithmetic (so that checking a config imports no NumPy or
TensorFlow); these tests feed the same values to both and require the same verdict,
so a stage check that changes without its rule fails here.
"""

import math
import re

import pytest

from eae import config_rules
from eae.config import ConfigError, check_config, config_problems, validate_config


def problems_of(name, overrides):
    """The messages of rule ``name`` for the schema defaults with ``overrides``."""
    filled = validate_config(overrides)
    rule = next(r for r in config_rules.RULES if r.name == name)
    return list(rule.check(filled))


# --------------------------------------------------------------------------- registry and docs


def test_every_rule_is_named_documented_and_distinct():
    names = [r.name for r in config_rules.RULES]
    assert len(names) == len(set(names)) and len(names) >= 14
    for r in config_rules.RULES:
        assert re.fullmatch(r"[a-z0-9_]+", r.name), r.name
        assert r.description and r.keys and r.enforced_by and r.reads, r.name


def test_config_readme_lists_every_rule_with_its_description(repo_root):
    readme = (repo_root / "config" / "README.md").read_text()
    section = readme.split("## Cross-field rules", 1)[1]
    for r in config_rules.RULES:
        assert f"`{r.name}`" in section and r.description in section, r.name


def test_the_schema_defaults_break_no_rule():
    _, problems = config_problems({})
    assert problems == []


def test_a_rule_is_skipped_while_its_section_fails_the_schema():
    # rd.data.n_train is text: the schema says so; rd_split_fits must not add a second,
    # confused message (nor crash comparing text with numbers)
    _, problems = config_problems({"rd": {"data": {"n_train": "many"}}})
    assert len(problems) == 1 and problems[0].startswith("rd.data.n_train: must be an integer")


def test_a_problem_elsewhere_does_not_hide_a_rule(tmp_path, monkeypatch):
    # data_file_exists reads sweep.enabled and sweep.experiment, not sweep.temperatures
    monkeypatch.chdir(tmp_path)
    _, problems = config_problems({"sweep": {"temperatures": [math.nan]},
                                   "frey": {"enabled": True, "data": {"source": "file", "path": "x.mat"}}})
    assert [p.split(":")[0].split(" ")[0] for p in problems] == ["sweep.temperatures[0]", "frey.data.path"]


def test_check_files_false_skips_only_the_file_rules():
    bad = {"frey": {"enabled": True, "data": {"source": "file", "path": "no/such.mat"}},
           "rd": {"simulation": {"t_end": 10.01}}}
    _, with_files = config_problems(bad)
    _, without = config_problems(bad, check_files=False)
    assert any("[rule data_file_exists]" in p for p in with_files)
    assert [p for p in with_files if "data_file_exists" not in p] == without
    assert any("[rule rd_save_grid]" in p for p in without)


# --------------------------------------------------------------------------- rd


@pytest.mark.parametrize("save_start, t_end, save_interval", [
    (0.0, 500.0, 0.05), (0.0, 100.0, 0.05), (0.0, 20.0, 0.05), (0.0, 100.02, 0.05),
    (0.0, 0.3, 0.1), (0.1, 0.7, 0.1), (0.05, 20.0, 0.05), (0.03, 20.0, 0.05),
    (1.0, 1.0, 0.05), (2.0, 1.0, 0.5), (0.0, 1.0, 0.3), (0.0, 7.0, 7.0),
])
def test_rd_save_grid_agrees_with_the_simulation(save_start, t_end, save_interval):
    from eae.simulate import params_from_config

    sim = {"save_start": save_start, "t_end": t_end, "save_interval": save_interval}
    refused = bool(problems_of("rd_save_grid", {"rd": {"simulation": sim}}))
    try:
        params_from_config(validate_config({"rd": {"simulation": sim}})["rd"]["simulation"])
        stage_refuses = False
    except ValueError:
        stage_refuses = True
    assert refused == stage_refuses


@pytest.mark.parametrize("t_end, n_train, n_val, n_test, pool_fraction", [
    (100.0, 1200, 300, 200, 0.9),   # config/config.yaml: 2001 snapshots, pool 1800
    (100.0, 1500, 300, 201, 0.9),   # exactly full
    (100.0, 1500, 301, 200, 0.9),   # one too many for the pool
    (100.0, 1200, 300, 202, 0.9),   # test overlaps the pool by one
    (20.0, 200, 50, 40, 0.9),       # config/test.yaml: 401 snapshots
    (20.0, 200, 50, 42, 0.9),
    (500.0, 4000, 1000, 1000, 0.9),
    (1.0, 10, 5, 3, 0.5),
])
def test_rd_split_fits_agrees_with_prepare_rd(t_end, n_train, n_val, n_test, pool_fraction):
    from eae.rd_data import data_params_from_config, split_indices

    cfg = validate_config({"rd": {"simulation": {"t_end": t_end},
                                  "data": {"n_train": n_train, "n_val": n_val, "n_test": n_test,
                                           "pool_fraction": pool_fraction}}})
    refused = bool(problems_of("rd_split_fits", cfg))
    n = config_rules.rd_snapshots(cfg["rd"]["simulation"])
    try:
        split_indices(n, data_params_from_config(cfg["rd"]["data"]))
        stage_refuses = False
    except ValueError:
        stage_refuses = True
    assert refused == stage_refuses


def test_rd_snapshots_count_the_simulations_saves():
    from eae.simulate import params_from_config

    for sim in ({"t_end": 100.0}, {"t_end": 20.0, "save_interval": 0.1}, {"save_start": 1.0, "t_end": 3.0}):
        filled = validate_config({"rd": {"simulation": sim}})["rd"]["simulation"]
        assert config_rules.rd_snapshots(filled) == params_from_config(filled).n_saves


# --------------------------------------------------------------------------- data


@pytest.mark.parametrize("fractions", [
    {"train": 0.8, "val": 0.1, "test": 0.1}, {"train": 0.7, "val": 0.1, "test": 0.2},
    {"train": 0.9}, {"train": 0.8, "val": 0.1, "test": 0.0}, {"train": 1.0, "val": 0.0, "test": 0.0},
    {"train": 0.6, "val": 0.2, "test": 0.2000001}, {"train": 0.6, "val": 0.2, "test": 0.2000000001},
])
def test_fractions_rule_agrees_with_the_data_and_faces_stages(fractions):
    from eae import data as data_mod
    from eae.faces import resolve_data_config

    cfg = validate_config({"mnist": {"data": {"fractions": fractions}},
                           "faces": {"data": {"fractions": fractions}}})
    messages = problems_of("fractions_sum_to_one", cfg)
    for section, resolve in (
        ("mnist", lambda c: data_mod.resolve_config(c, data_mod.MNIST_DEFAULTS, "mnist.data")),
        ("faces", resolve_data_config),
    ):
        try:
            resolve(cfg[section]["data"])
            stage_refuses = False
        except data_mod.DataError:
            stage_refuses = True
        assert any(m.startswith(f"{section}.data.fractions") for m in messages) == stage_refuses


def test_constants_match_the_stages():
    from eae import diagnostics, faces

    assert config_rules.MIN_DRAWS == diagnostics.MIN_DRAWS
    assert config_rules.LFW_N_FACES == faces.LFW_N_FACES
    assert config_rules.CELEBA_IMAGE_DIR == faces.CELEBA_IMAGE_DIR
    assert config_rules.CELEBA_SPLIT_FILE == faces.CELEBA_SPLIT_FILE


def test_a_swept_experiment_needs_its_data_file_even_when_disabled(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frey = {"enabled": False, "data": {"source": "file", "path": "frey.mat"}}
    swept = {"frey": frey, "sweep": {"enabled": True, "experiment": "frey"}}
    assert problems_of("data_file_exists", {"frey": frey}) == []
    (message,) = problems_of("data_file_exists", swept)
    assert "frey.data.path = 'frey.mat': file not found" in message and str(tmp_path) in message
    (tmp_path / "frey.mat").write_bytes(b"")
    assert problems_of("data_file_exists", swept) == []


def test_a_celeba_folder_needs_images_and_the_split_file(tmp_path):
    faces = {"data": {"source": "celeba", "path": str(tmp_path)}}
    (message,) = problems_of("celeba_folder_exists", {"faces": faces})
    assert "lacks img_align_celeba/ and list_eval_partition.txt" in message
    (tmp_path / "img_align_celeba").mkdir()
    (tmp_path / "list_eval_partition.txt").write_text("000001.jpg 0\n")
    assert problems_of("celeba_folder_exists", {"faces": faces}) == []
    assert problems_of("celeba_folder_exists", {"faces": {**faces, "enabled": False,
                                                          "data": {"source": "celeba", "path": "/nowhere"}}}) == []


# --------------------------------------------------------------------------- temperatures and sweep points


@pytest.mark.parametrize("t", [1e-5, 1e-8, 2.5e-7, 1.0000001e-5, 1.00000001e-5, 3.14159265, 1.0, 123456789.0])
def test_temperature_tags_match_faces_and_sweep(t):
    from eae.faces import temperature_tag
    from eae.sweep import format_temperature

    assert config_rules.temperature_tag(t) == temperature_tag(t) == format_temperature(t)


@pytest.mark.parametrize("sweep", [
    {"temperatures": [1e-9, 1e-8, 1e-7]},
    {"temperatures": [1e-8, 1e-6], "annealed": [{"from": 1e-6, "to": 1e-8, "schedule": "linear"}]},
    {"temperatures": [1e-8, 1e-8]},
    {"temperatures": [1e-8, 1.00000001e-8]},
    {"temperatures": [1e-8, 1e-6], "annealed": [{}, {"from": 1e-6, "to": 1e-8, "schedule": "geometric"}]},
    {"temperatures": [1e-8, 1e-6], "annealed": []},
])
def test_sweep_points_rule_agrees_with_the_sweep(sweep):
    from eae.sweep import point_tags

    cfg = validate_config({"sweep": sweep})
    try:
        tags = point_tags(cfg["sweep"])
        stage_refuses = False
    except ValueError:
        stage_refuses = True
    refused = bool(problems_of("sweep_points_distinct", cfg))
    assert refused == stage_refuses
    if not stage_refuses:
        assert config_rules.sweep_tags(cfg["sweep"]) == tags


@pytest.mark.parametrize("temperatures", [[1e-4, 1e-8], [1e-5, 1e-5], [1e-5, 1.00000001e-5], [1e-5, 1.000001e-5]])
def test_faces_temperatures_rule_agrees_with_the_faces_rules(temperatures):
    from eae.faces import temperature_tags

    cfg = validate_config({"faces": {"temperatures": temperatures}})
    try:
        temperature_tags(cfg["faces"])
        stage_refuses = False
    except ValueError:
        stage_refuses = True
    assert bool(problems_of("faces_temperatures_distinct", cfg)) == stage_refuses


# --------------------------------------------------------------------------- ensembles, analysis


@pytest.mark.parametrize("members, chains", [(16, 4), (13, 4), (12, 4), (4, 1), (3, 1), (4, 2), (8, 2), (7, 2)])
def test_draws_rule_agrees_with_the_diagnostics(members, chains):
    import numpy as np
    import xarray as xr

    from eae.diagnostics import convergence_table

    cfg = validate_config({"mnist": {"eae": {"train": {"chains": chains}, "ensemble": {"members": members}}}})
    draws = -(-members // chains)  # eae.ensemble.draws_per_chain (that module imports TensorFlow)
    rng = np.random.default_rng(0)
    store = xr.Dataset({"loss": (("chain", "draw"), rng.normal(size=(chains, draws)))})
    try:
        convergence_table(store, ["loss"])
        stage_refuses = False
    except ValueError:
        stage_refuses = True
    refused = any(m.startswith("mnist.eae.") for m in problems_of("ensemble_draws_per_chain", cfg))
    assert refused == stage_refuses


@pytest.mark.parametrize("classes", [[3, 8], [3, 3], [0, 9]])
def test_interpolation_rule_agrees_with_the_metrics_config(classes):
    from eae.metrics import resolve_config

    cfg = validate_config({"analysis": {"interpolate": {"classes": classes}}})
    try:
        resolve_config(cfg["analysis"])
        stage_refuses = False
    except ValueError:
        stage_refuses = True
    assert bool(problems_of("interpolation_classes", cfg)) == stage_refuses


def test_interpolation_classes_must_be_digits():
    (message,) = problems_of("interpolation_classes", {"analysis": {"interpolate": {"classes": [3, 10]}}})
    assert "label 10; allowed: digits 0–9" in message


# --------------------------------------------------------------------------- TensorFlow stages (one import)


def test_training_and_model_rules_agree_with_their_stages():
    """encoder_steps_or_epochs, conv_decoder_layers and vae_sigmoid_output against
    eae.train, eae.models and eae.baselines (these import TensorFlow: one test)."""
    from eae.baselines import _Trainer
    from eae.models import build_from_config, conv_decoder
    from eae.train import TrainSettings

    for steps, epochs in ((None, None), (5, None), (None, 1.5)):
        cfg = validate_config({"mnist": {"eae": {"train": {"encoder_steps": steps, "encoder_epochs": epochs}}}})
        try:
            TrainSettings.from_dict(cfg["mnist"]["eae"]["train"]).steps_per_update(100)
            stage_refuses = False
        except ValueError:
            stage_refuses = True
        assert bool(problems_of("encoder_steps_or_epochs", cfg)) == stage_refuses

    for filters, strides in (([4], [4]), ([4, 2], [4]), ([4], [2, 2])):
        cfg = validate_config({"faces": {"model": {"decoder_filters": filters, "decoder_strides": strides}}})
        try:
            conv_decoder(8, (16, 16, 1), filters=filters, strides=strides, base_channels=2)
            stage_refuses = False
        except ValueError:
            stage_refuses = True
        assert bool(problems_of("conv_decoder_layers", cfg)) == stage_refuses

    for activation in ("sigmoid", "relu"):
        cfg = validate_config({"mnist": {"vae": {"model": {"encoder_hidden": [4], "decoder_hidden": [4],
                                                           "latent_dim": 2, "output_activation": activation}}}})
        vae = cfg["mnist"]["vae"]
        encoder, decoder = build_from_config(vae["model"], (16,), seed=0, variational=True)
        try:
            _Trainer("vae", encoder, decoder, vae, 0, (16,))
            stage_refuses = False
        except ValueError:
            stage_refuses = True
        assert bool(problems_of("vae_sigmoid_output", cfg)) == stage_refuses


def test_every_number_must_be_finite_even_where_no_bound_applies():
    # rd.simulation.beta has no bound in the schema: only the finiteness check sees it
    with pytest.raises(ConfigError, match=r"rd\.simulation\.beta: must be a finite number, got nan"):
        check_config({"rd": {"simulation": {"beta": math.nan}}})

"""Config checks: defaults, unknown keys, wrong types, ranges, non-finite numbers,
cross-field rules, data files and unreadable files, each named by its key or file; the
same check (eae.config.check_config) in `eae check-config` and before the workflow plans."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import eae.config
from eae.cli import main
from helpers import planned_jobs, run_snakemake
from eae.config import (ConfigError, check_config, config_problems, load_config_file,
                        load_config_files, load_schema, merge_config, validate_config)


@pytest.fixture(scope="module")
def default_config(repo_root):
    return yaml.safe_load((repo_root / "config" / "config.yaml").read_text())


def test_default_config_validates_and_fills_every_section(default_config):
    filled = check_config(default_config)
    assert filled["mnist"]["eae"]["sampler"]["temperature"] == pytest.approx(1e-8)
    # keys the file omits come from the schema
    assert filled["mnist"]["eae"]["sampler"]["tau"] == 20.0
    assert filled["validation"]["tolerance"] == 0.05


def test_shipped_configs_pass_as_the_workflow_layers_them(repo_root, frey_file, monkeypatch):
    """config.yaml alone and with test.yaml or paper.yaml over it (as `--configfile`),
    and each file alone; paths relative to the repository."""
    monkeypatch.chdir(repo_root)
    cfg = repo_root / "config"
    check_config(load_config_files([cfg / "config.yaml"]))
    # test.yaml's Frey file lies beside the checkout only on CI: the tests point it at theirs
    synthetic = {"frey": {"data": {"path": str(frey_file)}}}
    for files in ([cfg / "config.yaml", cfg / "test.yaml"], [cfg / "test.yaml"]):
        config = merge_config(load_config_files(files), synthetic)
        check_config(config, check_files=False)
        check_config(config)
    for files in ([cfg / "config.yaml", cfg / "paper.yaml"], [cfg / "paper.yaml"]):
        config = load_config_files(files)
        check_config(config, check_files=False)
        # the paper's CelebA folder is a placeholder to fill in: the only thing refused
        _, problems = config_problems(config)
        assert problems == [p for p in problems if p.startswith("faces.data.path = '/path/to/celeba'")]
        assert len(problems) == 1 and "[rule celeba_folder_exists]" in problems[0]


# --------------------------------------------------------------------------- bad configs

NAN, INF = math.nan, math.inf

# (override layered over config/config.yaml, fragments that ONE problem line must hold);
# each config has exactly one problem.
BAD_CONFIGS = {
    # non-finite numbers, in several sections and inside a list
    "nan temperature": ({"mnist": {"eae": {"sampler": {"temperature": NAN}}}},
                        ["mnist.eae.sampler.temperature: must be a finite number, got nan"]),
    "inf time step": ({"validation": {"dt": INF}}, ["validation.dt: must be a finite number, got inf"]),
    "-inf unbounded beta": ({"rd": {"simulation": {"beta": -INF}}},
                            ["rd.simulation.beta: must be a finite number, got -inf"]),
    "nan in a list": ({"sweep": {"temperatures": [1e-8, NAN]}},
                      ["sweep.temperatures[1]: must be a finite number, got nan"]),
    "inf learning rate": ({"faces": {"train": {"learning_rate": INF}}},
                          ["faces.train.learning_rate: must be a finite number, got inf"]),
    "nan integer": ({"mnist": {"vae": {"epochs": NAN}}},
                    ["mnist.vae.epochs: must be a finite number, got nan"]),
    # rd simulation and split
    "t_end off the save grid": ({"rd": {"simulation": {"t_end": 100.02}}},
                                ["rd.simulation.t_end − save_start = 100.02 − 0 is not a multiple of "
                                 "rd.simulation.save_interval = 0.05", "e.g. 100 or 100.05", "[rule rd_save_grid]"]),
    "save_start off the grid": ({"rd": {"simulation": {"save_start": 0.03, "t_end": 100.03}}},
                                ["rd.simulation.save_start = 0.03 is not a multiple of "
                                 "rd.simulation.save_interval = 0.05", "[rule rd_save_grid]"]),
    "t_end before save_start": ({"rd": {"simulation": {"save_start": 50.0, "t_end": 20.0}}},
                                ["rd.simulation.t_end = 20 must be > rd.simulation.save_start = 50"]),
    "rd train+val over the pool": ({"rd": {"data": {"n_train": 1700}}},
                                   ["rd.data.n_train + n_val = 1700 + 300 = 2000 exceeds the train/val pool",
                                    "N = 2001 snapshots", "allowed: n_train + n_val ≤ 1800", "[rule rd_split_fits]"]),
    "rd test overlaps the pool": ({"rd": {"data": {"n_test": 300}}},
                                  ["rd.data.n_test = 300 overlaps the train/val pool", "allowed: n_test ≤ 201"]),
    # data
    "mnist fractions": ({"mnist": {"data": {"fractions": {"train": 0.9}}}},
                        ["mnist.data.fractions: train + val + test = 0.9 + 0.1 + 0.1 = 1.1; allowed: a sum of 1",
                         "[rule fractions_sum_to_one]"]),
    "frey fractions": ({"frey": {"data": {"fractions": {"train": 0.5, "val": 0.1, "test": 0.1}}}},
                       ["frey.data.fractions: train + val + test = 0.5 + 0.1 + 0.1 = 0.7"]),
    "faces fractions": ({"faces": {"data": {"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}}}},
                        ["faces.data.fractions: train + val + test = 0.7 + 0.2 + 0.2 = 1.1"]),
    "too many lfw faces": ({"faces": {"data": {"n_images": 150}}},
                           ["faces.data.n_images = 150: source 'lfw' has only 100 faces; allowed: 1..100 or null"]),
    # training, ensembles, models
    "no encoder steps": ({"mnist": {"eae": {"train": {"encoder_steps": None, "encoder_epochs": None}}}},
                         ["mnist.eae.train.encoder_steps and encoder_epochs are both null; allowed: set one",
                          "[rule encoder_steps_or_epochs]"]),
    "no faces encoder steps": ({"faces": {"train": {"encoder_steps": None, "encoder_epochs": None}}},
                               ["faces.train.encoder_steps and encoder_epochs are both null"]),
    "too few draws per chain": ({"mnist": {"eae": {"ensemble": {"members": 12}, "train": {"chains": 4}}}},
                                ["mnist.eae.ensemble.members = 12 with mnist.eae.train.chains = 4 gives 3 draw(s) "
                                 "per chain", "allowed: members ≥ 13", "[rule ensemble_draws_per_chain]"]),
    "too few rd members": ({"rd": {"eae": {"ensemble": {"members": 3}}}},
                           ["rd.eae.ensemble.members = 3 with rd.eae.train.chains = 1", "allowed: members ≥ 4"]),
    "too few faces draws": ({"faces": {"train": {"chains": 2}, "ensemble": {"members": 6}}},
                            ["faces.ensemble.members = 6 with faces.train.chains = 2 gives 3 draw(s)",
                             "allowed: members ≥ 7"]),
    "vae without sigmoid": ({"frey": {"vae": {"model": {"output_activation": "relu"}}}},
                            ["frey.vae.model.output_activation = 'relu'; allowed: 'sigmoid'",
                             "[rule vae_sigmoid_output]"]),
    "conv strides per filter": ({"mnist": {"eae": {"model": {"kind": "conv", "decoder_filters": [64, 32, 16]}}}},
                                ["mnist.eae.model.decoder_filters = [64, 32, 16] and decoder_strides = [4, 4] "
                                 "differ in length", "allowed: one stride per filter"]),
    # temperatures and sweep points
    "faces temperatures alike": ({"faces": {"temperatures": [1e-5, 1.00000001e-5]}},
                                 ["faces.temperatures = [1e-05, 1.00000001e-05]: 1e-05 appears 2 times at 7 "
                                  "significant digits; allowed: distinct temperatures"]),
    "sweep temperatures alike": ({"sweep": {"temperatures": [1e-8, 1e-8]}},
                                 ["point T1e-08 is configured 2 times", "allowed: distinct points",
                                  "[rule sweep_points_distinct]"]),
    "sweep annealed runs alike": ({"sweep": {"annealed": [{"from": 1e-5, "to": 1e-9},
                                                          {"from": 1e-5, "to": 1e-9, "schedule": "geometric"}]}},
                                  ["point anneal_1e-05_1e-09_geometric is configured 2 times"]),
    # analysis
    "one interpolation class": ({"analysis": {"interpolate": {"classes": [3, 3]}}},
                                ["analysis.interpolate.classes = [3, 3]; allowed: two different labels"]),
    "not a digit": ({"analysis": {"interpolate": {"classes": [3, 10]}}},
                    ["analysis.interpolate.classes = [3, 10]: no MNIST image has label 10; allowed: digits 0–9"]),
    "samples from nothing": ({"analysis": {"models": ["ae"], "ae_samples": False}},
                             ["analysis.models = ['ae'] with analysis.ae_samples = false",
                              "allowed: include eae or vae, or ae with ae_samples true"]),
    # schema: types, enums, ranges, unknown keys, conditions
    "text for an integer": ({"mnist": {"vae": {"epochs": "ten"}}},
                            ["mnist.vae.epochs: must be an integer, got a string ('ten')"]),
    "YAML 1.1 exponent as text": ({"mnist": {"eae": {"sampler": {"temperature": "1e-8"}}}},
                                  ["mnist.eae.sampler.temperature: must be a number, got a string ('1e-8')",
                                   "write the number with a dot, e.g. 1.0e-8"]),
    "section as a list": ({"rd": [1, 2]}, ["rd: must be a mapping, got a list ([1, 2])"]),
    "not in the enum": ({"mnist": {"data": {"source": "tfds"}}},
                        ["mnist.data.source: must be one of 'embedded', 'keras', 'file'; got 'tfds'"]),
    "below the minimum": ({"validation": {"temperature": -1.0}}, ["validation.temperature: must be > 0, got -1.0"]),
    "above the maximum": ({"mnist": {"eae": {"sampler": {"chain_length": 101}}}},
                          ["mnist.eae.sampler.chain_length: must be <= 100, got 101"]),
    "typo in a key": ({"mnist": {"eae": {"sampler": {"tempreature": 1.0}}}},
                      ["mnist.eae.sampler.tempreature: unknown key (did you mean 'temperature'?)",
                       "allowed keys of mnist.eae.sampler: chain_length, dt,"]),
    "unknown section": ({"bogus": 1}, ["bogus: unknown key; allowed keys of <root>: analysis, datasets, diagnostics, faces"]),
    "file source without a path": ({"mnist": {"data": {"source": "file"}}},
                                   ["mnist.data.path: must be a string when source is 'file', got null"]),
    # data files of experiments that will run (relative to the working directory)
    "missing Frey file": ({"frey": {"enabled": True, "data": {"source": "file", "path": "no/such/frey.mat"}}},
                          ["frey.data.path = 'no/such/frey.mat': file not found (relative to ",
                           "source 'file' needs an existing file", "[rule data_file_exists]"]),
    "MNIST path is a folder": ({"mnist": {"data": {"source": "file", "path": "."}}},
                               ["mnist.data.path = '.': is a folder, not a file"]),
    "missing CelebA folder": ({"faces": {"data": {"source": "celeba", "path": "no/celeba"}}},
                              ["faces.data.path = 'no/celeba': CelebA folder not found (relative to ",
                               "needs a folder holding img_align_celeba/ and list_eval_partition.txt"]),
}


@pytest.mark.parametrize("override, fragments", BAD_CONFIGS.values(), ids=BAD_CONFIGS.keys())
def test_bad_config_is_refused_with_a_clear_message(default_config, tmp_path, monkeypatch, override, fragments):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        check_config(merge_config(default_config, override))
    problems = caught.value.problems
    assert len(problems) == 1, problems
    assert all(f in problems[0] for f in fragments), problems[0]
    if "relative to " in fragments[0]:
        assert str(tmp_path) in problems[0]  # says where a relative path was looked for


def test_every_problem_is_reported_each_on_its_own_line(default_config):
    bad = merge_config(default_config, {
        "mnist": {"eae": {"sampler": {"temperature": NAN}}, "vae": {"epochs": 0}},
        "rd": {"simulation": {"t_end": 100.02}},
        "faces": {"temperatures": [1e-5, 1e-5]},
    })
    with pytest.raises(ConfigError) as caught:
        check_config(bad)
    lines = str(caught.value).splitlines()
    assert lines[0] == "Invalid configuration (4 problems):"
    assert [line.split(":")[0].split(" ")[1] for line in lines[1:]] == [
        "mnist.eae.sampler.temperature", "mnist.vae.epochs", "rd.simulation.t_end", "faces.temperatures"]


def test_a_disabled_experiment_may_name_a_missing_file(default_config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    frey = {"data": {"source": "file", "path": "frey.mat"}}
    check_config(merge_config(default_config, {"frey": {**frey, "enabled": False}}))
    with pytest.raises(ConfigError, match=r"frey\.data\.path = 'frey\.mat': file not found"):
        check_config(merge_config(default_config, {"frey": {**frey, "enabled": True}}))
    (tmp_path / "frey.mat").write_bytes(b"")
    check_config(merge_config(default_config, {"frey": {**frey, "enabled": True}}))


def test_validate_config_checks_one_section_schema_too():
    # the sub-schema use of the stage tests: schema and finite numbers, no rules
    schema = load_schema(eae.config.SCHEMA_DIR / "rd_simulation.schema.yaml")
    assert validate_config({"rd": {"simulation": {"t_end": 100.02}}}, schema)["rd"]["simulation"]["n"] == 100
    with pytest.raises(ConfigError, match=r"rd\.simulation\.t_end: must be a finite number, got nan"):
        validate_config({"rd": {"simulation": {"t_end": NAN}}}, schema)


def test_every_schema_key_has_a_description():
    missing = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}{key}")
            walk(sub, f"{path}{key}.")

    walk(load_schema(), "")
    assert missing == []


def test_every_config_object_rejects_unknown_keys():
    loose = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties", True) is not False:
                loose.append(path or "<root>")
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}" if path else key)

    walk(load_schema(), "")
    assert loose == []


def test_config_readme_is_in_sync_with_the_schema(repo_root):
    from eae.config import schema_markdown

    assert (repo_root / "config" / "README.md").read_text() == schema_markdown(), (
        "config/README.md is stale: run `eae config-docs -o config/README.md`")


# --------------------------------------------------------------------------- config files

BAD_FILES = {
    "a list at the top": ("- mnist\n- frey\n", ["the top level must be a mapping of config sections",
                                                  'got a list (["mnist", "frey"])']),
    "a scalar at the top": ("42\n", ["the top level must be a mapping of config sections",
                                      "got an integer (42)"]),
    "invalid YAML": ("mnist:\n  enabled: [true\n", ["invalid YAML:", "at line 3, column 1"]),
    "a tab indent": ("mnist:\n\tenabled: true\n", ["invalid YAML:", "at line 2, column 1"]),
    "not UTF-8": (b"mnist: {enabled: \xff}\n", ["cannot read the config file: not UTF-8 text"]),
}


def _write(path, content):
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


@pytest.mark.parametrize("content, fragments", BAD_FILES.values(), ids=BAD_FILES.keys())
def test_check_config_cli_names_a_bad_file_in_one_line(tmp_path, capsys, content, fragments):
    path = _write(tmp_path / "bad.yaml", content)
    assert main(["check-config", str(path)]) == 1
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1 and err.startswith(f"{path}: "), err
    assert all(f in err for f in fragments), err


def test_check_config_cli_on_a_missing_file_a_folder_and_an_unreadable_file(tmp_path, capsys, monkeypatch):
    assert main(["check-config", str(tmp_path / "nope.yaml")]) == 1
    assert capsys.readouterr().err == f"{tmp_path / 'nope.yaml'}: cannot read the config file: No such file or directory\n"
    assert main(["check-config", str(tmp_path)]) == 1
    assert capsys.readouterr().err == f"{tmp_path}: cannot read the config file: Is a directory\n"
    locked = _write(tmp_path / "locked.yaml", "mnist: {enabled: true}\n")

    def denied(path, *args, **kwargs):  # chmod 000 does not stop root, who runs the CI
        if str(path) == str(locked):
            raise PermissionError(13, "Permission denied", str(path))
        return open(path, *args, **kwargs)

    monkeypatch.setattr(eae.config, "open", denied, raising=False)
    assert main(["check-config", str(locked)]) == 1
    assert capsys.readouterr().err == f"{locked}: cannot read the config file: Permission denied\n"


def test_check_config_cli_reports_every_bad_file_and_layers_the_good_ones(repo_root, tmp_path, capsys):
    one = _write(tmp_path / "one.yaml", "- x\n")
    two = _write(tmp_path / "two.yaml", "rd: {data: {n_test: 300}}\n")
    assert main(["check-config", str(one), str(tmp_path / "missing.yaml")]) == 1
    assert len(capsys.readouterr().err.splitlines()) == 2
    assert main(["check-config", str(repo_root / "config" / "config.yaml"), str(two)]) == 1
    err = capsys.readouterr().err  # n_test = 300 is too many only for config.yaml's shorter run
    assert "rd.data.n_test = 300 overlaps the train/val pool" in err and "allowed: n_test ≤ 201" in err
    assert main(["check-config", str(repo_root / "config" / "config.yaml")]) == 0
    assert capsys.readouterr().out == "configuration is valid\n"


def test_an_empty_config_file_is_an_empty_mapping(tmp_path):
    assert load_config_file(_write(tmp_path / "empty.yaml", "# nothing set\n")) == {}


def test_check_config_command_prints_no_traceback(repo_root, tmp_path):
    bad = _write(tmp_path / "bad.yaml", "mnist:\n  eae:\n    sampler:\n      temperature: .nan\n")
    for args in ([str(tmp_path / "missing.yaml")], [str(bad)], ["--no-file-checks", str(bad)]):
        result = subprocess.run([sys.executable, "-m", "eae.cli", "check-config", *args],
                                capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    assert "- mnist.eae.sampler.temperature: must be a finite number, got nan" in result.stderr


# --------------------------------------------------------------------------- the workflow


def test_snakemake_refuses_a_bad_config_before_any_job(repo_root, tmp_path):
    """A dry run with values the schema, the finiteness check, a rule and a file check
    refuse: every message, each on its own line, no traceback, no job, no results/."""
    (tmp_path / "config").symlink_to(repo_root / "config")
    bad = _write(tmp_path / "bad.yaml", (
        "mnist:\n  eae:\n    sampler:\n      temperature: -0.5\n"
        "sweep:\n  temperatures: [1.0e-8, .nan]\n"
        "rd:\n  simulation:\n    t_end: 100.02\n"
        "frey:\n  enabled: true\n  data: {source: file, path: nowhere/frey.mat}\n"))
    result = run_snakemake(tmp_path, "-n", configfiles=[bad], check=False)
    log = result.stdout + result.stderr
    assert result.returncode != 0
    lines = log.splitlines()
    for start in ("- mnist.eae.sampler.temperature: must be > 0, got -0.5",
                  "- sweep.temperatures[1]: must be a finite number, got nan",
                  "- rd.simulation.t_end − save_start = 100.02 − 0 is not a multiple",
                  f"- frey.data.path = 'nowhere/frey.mat': file not found (relative to {tmp_path})"):
        assert any(line.startswith(start) for line in lines), (start, log)
    assert "Invalid configuration (4 problems):" in log
    assert "Traceback" not in log and "Job stats" not in log
    assert not any(line.startswith(("rule ", "localrule ")) for line in lines)  # no job planned
    assert not (tmp_path / "results").exists()


def test_paper_rd_runs_only_reaction_diffusion_in_its_own_directory(repo_root, tmp_path):
    """The documented paper-scale RD command (make paper-rd), as a dry run: only the RD
    chain (plus the report extras; not the sampler self-check) is planned, into the run's
    own directory."""
    makefile = (repo_root / "Makefile").read_text()
    assert ("PAPER_RD_ARGS := --directory runs/paper-rd --configfile config/paper.yaml "
            "config/paper-rd.yaml") in makefile
    (tmp_path / "config").symlink_to(repo_root / "config")
    result = run_snakemake(tmp_path, "-n",
                           configfiles=["config/paper.yaml", "config/paper-rd.yaml"])
    log = result.stdout + result.stderr

    jobs = planned_jobs(log)
    assert set(jobs) == {"all", "rd_simulate", "rd_prepare", "rd_train_eae",
                         "rd_coefficients", "rd_analysis", "diagnostics", "report_config",
                         "report_provenance"}, jobs
    assert "results/tables/table4_vs_paper.md" in log


def test_training_settings_are_declared_once():
    """sampling.schema.yaml declares every TrainSettings field; each experiment's train
    section takes its fields from there (same type and bounds, own default allowed)."""
    import dataclasses

    from eae.core.trainer import TrainSettings
    from eae.support.config import load_schema

    schemas = Path(__file__).resolve().parents[1] / "eae" / "schemas"
    shared = load_schema(schemas / "sampling.schema.yaml")["properties"]["train"]["properties"]
    assert set(shared) == {f.name for f in dataclasses.fields(TrainSettings)}
    raw = {name: yaml.safe_load((schemas / name).read_text())
           for name in ("eae.schema.yaml", "faces.schema.yaml", "rd_eae.schema.yaml")}
    sections = {
        "images": raw["eae.schema.yaml"]["properties"]["train"]["properties"],
        "faces": raw["faces.schema.yaml"]["properties"]["train"]["properties"],
        "rd": raw["rd_eae.schema.yaml"]["properties"]["rd"]["properties"]["eae"]["properties"]
                 ["train"]["properties"],
    }
    for experiment, fields in sections.items():
        for name, field in fields.items():
            if name in shared:
                assert field.get("$ref", "").endswith(f"sampling.schema.yaml#/properties/train/properties/{name}"), \
                    (experiment, name)

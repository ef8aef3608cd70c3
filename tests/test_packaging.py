"""The wheel carries the config schemas: `eae check-config` and `eae config-docs` work
from an installed package, with no source tree around."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCHEMAS = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "eae" / "schemas").glob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(repo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(repo_root)],
                   check=True, capture_output=True, text=True, timeout=600)
    (path,) = out.glob("eae-*.whl")
    return path


def test_wheel_holds_every_schema(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert len(SCHEMAS) > 10
    missing = [name for name in SCHEMAS if f"eae/schemas/{name}" not in names]
    assert missing == []


def test_installed_wheel_checks_config_and_writes_docs_outside_the_checkout(wheel, repo_root,
                                                                           tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel: unpacking installs it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "good.yaml").write_text("mnist:\n  eae:\n    sampler:\n      temperature: 1.0e-7\n")
    (elsewhere / "bad.yaml").write_text("mnist:\n  eae:\n    sampler:\n      temprature: 1.0e-7\n")
    env = {**os.environ, "PYTHONPATH": str(site)}

    def eae(*args):
        code = ("import sys, eae, eae.cli\n"
                f"assert eae.__file__.startswith({str(site)!r}), eae.__file__\n"
                "sys.exit(eae.cli.main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-c", code, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)

    good = eae("check-config", "good.yaml")
    assert good.returncode == 0, good.stderr
    bad = eae("check-config", "bad.yaml")
    assert bad.returncode == 1 and "mnist.eae.sampler.temprature" in bad.stderr, bad.stderr
    docs = eae("config-docs")
    assert docs.returncode == 0, docs.stderr
    assert docs.stdout == (repo_root / "config" / "README.md").read_text()


#: eae's public modules before the layers (issue 14) -> where they live now
MOVED = {
    "config": "support.config", "config_rules": "support.config_rules", "io": "support.io",
    "provenance": "support.provenance", "archive": "support.archive", "progress": "support.progress",
    "cli": "support.cli", "compare": "support.compare", "settings": "support.settings",
    "runtime": "support.runtime", "sampler": "core.sampler", "chains": "core.chains",
    "models": "core.models",
    "temperature": "core.temperature", "wellposed": "core.wellposed",
    "diagnostics": "core.diagnostics", "experiment": "experiments.base",
    "validation": "experiments.sampler_check", "sweep": "experiments.sweep",
    "data": "experiments.images.data", "baselines": "experiments.images.baselines",
    "metrics": "experiments.images.metrics", "figures": "experiments.images.figures",
    "faces": "experiments.faces.faces", "simulate": "experiments.rd.simulate",
    "rd_data": "experiments.rd.data", "rd_analysis": "experiments.rd.analysis",
    "identifiability": "experiments.rd.identifiability",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_module_names_are_the_moved_modules(old):
    """Imports users already write (``eae.sampler``, ``from eae import train``) stay valid:
    each old name is the moved module itself, so monkeypatching either name patches both."""
    import importlib

    new = importlib.import_module(f"eae.{MOVED[old]}")
    assert importlib.import_module(f"eae.{old}") is new
    package = importlib.import_module("eae")
    assert getattr(package, old) is new


#: old modules whose content went to two layers: each name is still importable from them
SPLIT = {
    "train": {"core.trainer": ("EAETrainer", "TrainSettings", "batch_indices", "_versioned"),
              "experiments.images.eae": ("IMAGES", "image_trainer", "train_images_stage")},
    "ensemble": {"core.ensemble": ("sample_ensemble", "ensemble_stage", "_stack"),
                 "experiments.images.eae": ("IMAGES",)},
    "sindy": {"core.sindy": ("least_squares", "sindy_library", "minimum_norm_solves"),
              "experiments.rd.eae": ("RD", "rd_trainer", "coefficients_stage", "_check_cfg",
                                     "synthetic_oscillator")},
}


@pytest.mark.parametrize("old", sorted(SPLIT))
def test_split_modules_re_export_both_halves(old):
    import importlib

    shim = importlib.import_module(f"eae.{old}")
    for new, names in SPLIT[old].items():
        module = importlib.import_module(f"eae.{new}")
        for name in names:
            assert getattr(shim, name) is getattr(module, name), (old, name)
    with pytest.raises(AttributeError, match="no attribute"):
        shim.not_a_name  # noqa: B018
    assert callable(importlib.import_module("eae.ensemble").ensemble_images_stage)


def test_core_never_imports_the_experiments_or_the_workflow():
    """The layers: the numerical core knows no experiment, no results/ path."""
    from eae.support.provenance import PACKAGE_ROOT

    for path in (PACKAGE_ROOT / "core").glob("*.py"):
        text = path.read_text()
        assert "eae.experiments" not in text, path
        assert "results/" not in text, path

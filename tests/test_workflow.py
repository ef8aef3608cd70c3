"""End to end: the whole workflow on the tiny config (config/test.yaml)."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from eae.io import open_zarr, read_provenance
from helpers import planned_jobs, run_snakemake

pytestmark = pytest.mark.slow


def snakemake(repo_root, workdir, *args, check=True, extra_configs=()):
    return run_snakemake(workdir, *args, check=check,
                         configfiles=[repo_root / "config" / "test.yaml", workdir / "local.yaml",
                                      *extra_configs])


@pytest.fixture(scope="module")
def workflow_run(repo_root, tmp_path_factory, frey_config):
    workdir = tmp_path_factory.mktemp("wf")
    (workdir / "config").symlink_to(repo_root / "config")
    (workdir / "local.yaml").write_text(frey_config)
    result = snakemake(repo_root, workdir, "--cores", "2")
    (workdir / "console.txt").write_text(result.stdout + result.stderr)
    return workdir


def test_logs_name_the_device_and_carry_no_tensorflow_startup_noise(workflow_run):
    logs = sorted((workflow_run / "results" / "logs").rglob("*.log"))
    assert len(logs) > 20
    for log in logs:
        text = log.read_text()
        first = text.splitlines()[0] if text else ""
        assert " device: CPU: " in first or " device: GPU: " in first, (log, first)
    for text in [workflow_run.joinpath("console.txt").read_text()] + [p.read_text() for p in logs]:
        for noise in ("cuInit", "absl::InitializeLog", "oneDNN custom operations",
                      "cpu_feature_guard", "Could not find cuda drivers"):
            assert noise not in text, noise


def test_every_stage_produces_its_outputs(workflow_run):
    results = workflow_run / "results"
    for path in ["validation/sampler.csv", "figures/validation_sampler.png",
                 "data/mnist.zarr", "data/frey.zarr",
                 "mnist/eae/model/encoder.keras", "mnist/eae/model/history.csv",
                 "mnist/vae/encoder.keras", "mnist/ae/decoder.keras",
                 "frey/eae/ensemble.zarr", "mnist/diagnostics.png", "frey/diagnostics.csv",
                 "rd/diagnostics.csv", "faces/eae_T1e-04/diagnostics.csv",
                 "sweep/mnist/sweep.csv", "sweep/mnist/recommended.json",
                 "tables/sweep_mnist.md", "figures/sweep_mnist.png"]:
        assert (results / path).exists(), path
    ens = open_zarr(results / "mnist" / "eae" / "ensemble.zarr")
    assert ens["latent"].dims == ("chain", "draw", "sample", "unit")
    assert ens.sizes["chain"] == 4 and ens.sizes["draw"] == 4 and ens.sizes["sample"] == 200
    diagnostics = pd.read_csv(results / "mnist" / "diagnostics.csv").set_index("variable")
    assert diagnostics.loc["loss", "chains"] == 4 and diagnostics.loc["loss", "draws"] == 4
    assert np.isfinite(diagnostics.loc["loss", ["rhat", "ess_bulk", "iat"]].astype(float)).all()
    prov = read_provenance(ens)
    assert prov["stage"] == "images_ensemble" and prov["packages"]["tensorflow"]
    for log in ["validation.log", "mnist/train_eae.log", "mnist/ensemble.log"]:
        assert (results / "logs" / log).stat().st_size > 0, log


def test_rerun_plans_nothing_when_nothing_changed(repo_root, workflow_run):
    result = snakemake(repo_root, workflow_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr


def plan_after_config_change(repo_root, workdir, yaml_text):
    change = workdir / "change.yaml"
    change.write_text(yaml_text)
    result = snakemake(repo_root, workdir, "-n", extra_configs=[change])
    return planned_jobs(result.stdout + result.stderr)


def test_config_change_reruns_only_that_stage_and_downstream(repo_root, workflow_run):
    jobs = plan_after_config_change(repo_root, workflow_run,
                                    "mnist:\n  eae:\n    ensemble:\n      members: 20\n")
    assert jobs.get("images_ensemble") == 1
    assert "images_train_eae" not in jobs and "images_train_baseline" not in jobs
    assert "images_prepare_mnist" not in jobs and "sampler_check" not in jobs

    jobs = plan_after_config_change(repo_root, workflow_run, "mnist:\n  vae:\n    epochs: 3\n")
    assert jobs.get("images_train_baseline") == 1
    assert "images_train_eae" not in jobs and "images_ensemble" not in jobs


def test_editing_a_module_reruns_the_stages_that_use_it(repo_root, workflow_run):
    import os

    # Snakemake compares checksums of inputs, so the edit must change the content
    module = repo_root / "eae" / "core" / "ensemble.py"
    original, stat = module.read_bytes(), module.stat()
    try:
        module.write_bytes(original + b"\n# an edit\n")
        jobs = planned_jobs(snakemake(repo_root, workflow_run, "-n").stdout)
    finally:
        module.write_bytes(original)
        os.utime(module, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert jobs.get("images_ensemble") == 2  # mnist and frey
    assert "images_train_eae" not in jobs and "images_train_baseline" not in jobs


def test_report_holds_tables_figures_config_and_provenance(repo_root, workflow_run):
    import zipfile

    snakemake(repo_root, workflow_run, "--report", "results/report.zip")
    names = zipfile.ZipFile(workflow_run / "results" / "report.zip").namelist()
    for expected in ("table1.csv", "mnist_interpolation.png", "validation_sampler.png",
                     "config.resolved.yaml", "provenance.json", "report.html"):
        assert any(n.endswith(expected) for n in names), expected
    records = json.loads((workflow_run / "results" / "report" / "provenance.json").read_text())
    assert any(p.endswith("table1.csv") for p in records)
    assert any(p.endswith("ensemble.zarr") for p in records)


def test_provenance_command_walks_a_table_back_to_the_data(repo_root, workflow_run):
    result = subprocess.run([sys.executable, "-m", "eae.cli", "provenance",
                             "results/tables/table1.csv"], cwd=workflow_run,
                            capture_output=True, text=True, check=True)
    for stage in ("stage images_table1", "stage images_metrics", "stage images_ensemble",
                  "stage images_train_eae", "stage images_prepare_mnist"):
        assert stage in result.stdout, (stage, result.stdout)

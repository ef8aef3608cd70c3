"""End to end: the whole workflow on the tiny config (config/test.yaml)."""

import subprocess
import sys

import pytest

from eae.io import open_zarr, read_provenance

pytestmark = pytest.mark.slow


def snakemake(repo_root, workdir, *args, check=True):
    cmd = [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"),
           "-d", str(workdir), "--configfile", str(repo_root / "config" / "test.yaml"),
           str(workdir / "local.yaml"), *args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-4000:] + result.stderr[-6000:])
    return result


@pytest.fixture(scope="module")
def workflow_run(repo_root, tmp_path_factory, frey_file):
    workdir = tmp_path_factory.mktemp("wf")
    (workdir / "config").symlink_to(repo_root / "config")
    (workdir / "local.yaml").write_text(f"frey:\n  data:\n    path: {frey_file}\n")
    snakemake(repo_root, workdir, "--cores", "2")
    return workdir


def test_every_stage_produces_its_outputs(workflow_run):
    results = workflow_run / "results"
    for path in ["validation/sampler.csv", "figures/validation_sampler.png",
                 "data/mnist.zarr", "data/frey.zarr",
                 "mnist/eae/model/encoder.keras", "mnist/eae/model/history.csv",
                 "mnist/vae/encoder.keras", "mnist/ae/decoder.keras",
                 "frey/eae/ensemble.zarr"]:
        assert (results / path).exists(), path
    ens = open_zarr(results / "mnist" / "eae" / "ensemble.zarr")
    assert ens["latent"].dims == ("member", "sample", "unit")
    assert ens.sizes["member"] == 12 and ens.sizes["sample"] == 200
    prov = read_provenance(ens)
    assert prov["stage"] == "ensemble" and prov["packages"]["tensorflow"]
    for log in ["validation.log", "mnist/train_eae.log", "mnist/ensemble.log"]:
        assert (results / "logs" / log).stat().st_size > 0, log


def test_rerun_plans_nothing_when_nothing_changed(repo_root, workflow_run):
    result = snakemake(repo_root, workflow_run, "-n")
    assert "Nothing to be done" in result.stdout + result.stderr

"""Tests of the reaction–diffusion dataset preparation (eae.rd_data)."""

from __future__ import annotations

import numpy as np
import pytest
import zarr

from eae.io import open_zarr, read_provenance
from eae.rd_data import (
    RDDataParams,
    data_params_from_config,
    load_rd_split,
    prepare_rd_dataset,
    split_indices,
)
from eae.simulate import simulate_stage

SIM_CFG = dict(n=16, t_end=10.0, save_interval=0.05)  # 201 snapshots
DATA_CFG = dict(n_train=100, n_val=40, n_test=20, pool_fraction=0.9, seed=3, chunk_samples=64)


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("rd")
    sim_path, data_path = root / "simulation.zarr", root / "dataset.zarr"
    simulate_stage(SIM_CFG, sim_path)
    prepare_rd_dataset(sim_path, DATA_CFG, data_path)
    return sim_path, data_path


def test_paper_split_sizes_and_ranges():
    idx = split_indices(10001, data_params_from_config({}))
    assert [len(idx[s]) for s in ("train", "val", "test")] == [4000, 1000, 1000]
    assert idx["train"].max() < 9000 and idx["val"].max() < 9000  # first 9000 snapshots
    np.testing.assert_array_equal(idx["test"], np.arange(9001, 10001))  # the final 1000
    assert not set(idx["train"]) & set(idx["val"])
    assert len(np.unique(idx["train"])) == 4000 and np.all(np.diff(idx["train"]) > 0)


def test_splits_are_seeded():
    p = RDDataParams(n_train=50, n_val=20, n_test=10)
    a, b = split_indices(200, p), split_indices(200, p)
    c = split_indices(200, RDDataParams(n_train=50, n_val=20, n_test=10, seed=1))
    np.testing.assert_array_equal(a["train"], b["train"])
    assert not np.array_equal(a["train"], c["train"])


def test_store_layout(stores):
    sim_path, data_path = stores
    ds = open_zarr(data_path)
    assert ds.x.dims == ("sample", "pixel") and ds.x_dot.dims == ("sample", "pixel")
    assert ds.x.dtype == np.float32 and ds.x_dot.dtype == np.float32
    assert ds.split.dtype == np.int8
    assert list(ds.split.attrs["flag_values"]) == [0, 1, 2]
    assert ds.split.attrs["flag_meanings"] == "train val test"
    assert ds.sizes == {"sample": 160, "pixel": 256}
    assert list(ds.attrs["grid_shape"]) == [16, 16]
    counts = np.bincount(ds.split.values, minlength=3)
    assert counts.tolist() == [100, 40, 20]
    assert zarr.open_group(str(data_path), mode="r")["x"].chunks == (64, 256)
    record = read_provenance(ds)
    assert record["stage"] == "rd_prepare" and record["seeds"]["split"] == 3
    assert str(sim_path) in record["inputs"]


def test_samples_are_the_flattened_simulation_snapshots(stores):
    sim_path, data_path = stores
    sim = open_zarr(sim_path)
    ds = open_zarr(data_path)
    snap = ds.snapshot.values
    np.testing.assert_array_equal(ds.x.values, sim.field.values[snap].reshape(len(snap), -1))
    np.testing.assert_array_equal(ds.x_dot.values, sim.field_dot.values[snap].reshape(len(snap), -1))
    np.testing.assert_allclose(ds.time.values, sim.time.values[snap])
    # Row-major pixel order: pixel iy * nx + ix is grid point (y[iy], x[ix]).
    np.testing.assert_array_equal(ds.x.values[0].reshape(16, 16), sim.field.values[snap[0]])


def test_load_rd_split(stores):
    _, data_path = stores
    train, val, test = (load_rd_split(data_path, s) for s in ("train", "val", "test"))
    assert train["x"].shape == (100, 256) and train["x"].dtype == np.float32
    assert train["x_dot"].shape == (100, 256) and train["x_dot"].dtype == np.float32
    assert val["x"].shape == (40, 256) and test["x"].shape == (20, 256)
    # Test = the last 20 snapshots (t = 9.05 .. 10.0); train/val from t < 0.9 * 10.05.
    np.testing.assert_allclose(test["time"], 9.05 + 0.05 * np.arange(20))
    pool_end = np.floor(0.9 * 201) * 0.05
    assert train["time"].max() < pool_end and val["time"].max() < pool_end
    assert not set(np.round(train["time"], 6)) & set(np.round(val["time"], 6))
    with pytest.raises(ValueError, match="split must be one of"):
        load_rd_split(data_path, "validation")


@pytest.mark.parametrize("cfg, match", [
    (dict(n_train=150, n_val=40, n_test=20), "exceeds the pool"),
    (dict(n_train=10, n_val=10, n_test=40), "overlaps"),
    (dict(n_train=10, n_val=10, n_test=10, pool_fraction=1.0), "pool_fraction"),
    (dict(n_train=0, n_val=10, n_test=10), ">= 1"),
    (dict(n_train=10, n_val=10, n_test=10, extra=1), "rd.data: unknown setting"),
])
def test_bad_config_raises_and_writes_nothing(stores, tmp_path, cfg, match):
    sim_path, _ = stores
    out = tmp_path / "dataset.zarr"
    with pytest.raises(ValueError, match=match):
        prepare_rd_dataset(sim_path, cfg, out)
    assert list(tmp_path.iterdir()) == []


def test_missing_simulation_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match="simulation.zarr"):
        prepare_rd_dataset(tmp_path / "simulation.zarr", DATA_CFG, tmp_path / "dataset.zarr")
    assert not (tmp_path / "dataset.zarr").exists()


def test_schema_defaults_match_rddataparams():
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    schema_path = Path(__file__).resolve().parents[1] / "workflow/schemas/rd_data.schema.yaml"
    props = yaml.safe_load(schema_path.read_text())["properties"]["rd"]["properties"]["data"]["properties"]
    defaults = asdict(RDDataParams())
    assert set(props) == set(defaults)
    for key, spec in props.items():
        assert spec["default"] == defaults[key], key


# --------------------------------------------------------------------------- workflow

ROOT = __import__("pathlib").Path(__file__).resolve().parents[1]
SCHEMAS = [ROOT / "workflow/schemas/rd_simulation.schema.yaml", ROOT / "workflow/schemas/rd_data.schema.yaml"]
CI_CONFIG = {"rd": {"simulation": {"n": 32, "t_end": 20.0},
                    "data": {"n_train": 200, "n_val": 50, "n_test": 40}}}


def test_schemas_fill_defaults_and_reject_bad_values():
    from eae.config import ConfigError, validate_config

    cfg = CI_CONFIG
    for schema in SCHEMAS:
        cfg = validate_config(cfg, schema)
    assert cfg["rd"]["simulation"]["method"] == "etdrk4" and cfg["rd"]["data"]["seed"] == 0
    for bad in ({"rd": {"simulation": {"n": 4}}}, {"rd": {"simulation": {"method": "euler"}}},
                {"rd": {"simulation": {"nn": 1}}}):
        with pytest.raises(ConfigError):
            validate_config(bad, SCHEMAS[0])
    for bad in ({"rd": {"data": {"pool_fraction": 1.0}}}, {"rd": {"data": {"n_tset": 1}}}):
        with pytest.raises(ConfigError):
            validate_config(bad, SCHEMAS[1])


@pytest.mark.slow
def test_rd_rules_run_in_snakemake(tmp_path):
    """Rules rd_simulate and rd_prepare end to end with the CI-sized config."""
    import subprocess
    import sys
    import textwrap
    from pathlib import Path

    import yaml

    (tmp_path / "config.yaml").write_text(yaml.safe_dump(CI_CONFIG))
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        configfile: "config.yaml"
        include: "{ROOT / 'workflow' / 'rules' / 'common.smk'}"
        include: "{ROOT / 'workflow' / 'rules' / 'rd.smk'}"
        rule all:
            input: "results/rd/dataset.zarr"
    """))
    snakemake = Path(sys.executable).with_name("snakemake")
    run = subprocess.run([str(snakemake), "-c2", "--quiet"], cwd=tmp_path, capture_output=True,
                         text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr
    sim = open_zarr(tmp_path / "results/rd/simulation.zarr")
    assert sim.sizes == {"time": 401, "y": 32, "x": 32}
    train = load_rd_split(tmp_path / "results/rd/dataset.zarr", "train")
    assert train["x"].shape == (200, 1024)
    assert "rd_simulate: wrote" in (tmp_path / "results/logs/rd/simulate.log").read_text()
    assert (tmp_path / "results/benchmarks/rd/prepare.tsv").exists()

"""Provenance records, sidecars, module closures and the `eae provenance` chain."""

import json

import numpy as np
import xarray as xr

from eae.cli import main
from eae.io import write_zarr
from eae.provenance import (find_record, make_record, module_closure, record_outputs,
                            sidecar_path, source_hash)


def test_record_has_everything_a_result_must_answer(tmp_path):
    inp = tmp_path / "in.txt"
    inp.write_text("data")
    rec = make_record("stage_x", config={"a": 1}, seeds={"s": 3}, inputs=[inp],
                      modules=["eae.sampler"])
    for key in ("config", "git", "eae_source_sha256", "packages", "device", "started",
                "finished", "inputs", "seeds"):
        assert key in rec
    assert rec["inputs"][str(inp)] == "3a6eb0790f39ac87c94f3856b2dd2c5d110e6811602261a9a923d3bb23adc8b7"
    assert rec["packages"]["tensorflow"] != "not installed"
    json.dumps(rec)


def test_module_closure_follows_imports_and_source_hash_depends_on_it():
    names = {p.name for p in module_closure("eae.experiments.sampler_check")}
    assert {"sampler_check.py", "sampler.py", "provenance.py"} <= names
    assert "trainer.py" not in names
    assert source_hash(["eae.experiments.sampler_check"]) != source_hash(["eae.core.trainer"])
    # an old module name is a shim that follows to the module it names
    old = {p.relative_to(p.parents[1]).as_posix() for p in module_closure("eae.validation")}
    assert {"eae/validation.py", "experiments/sampler_check.py"} <= old


def test_sidecar_mirrors_results_tree(tmp_path):
    assert sidecar_path(tmp_path / "results" / "tables" / "t.csv") == (
        tmp_path / "results" / "provenance" / "tables" / "t.csv.json")


def test_chain_walks_from_table_to_zarr_inputs(tmp_path, capsys):
    results = tmp_path / "results"
    store = results / "data" / "d.zarr"
    write_zarr(xr.Dataset({"x": ("i", np.arange(3.0))}), store,
               provenance=make_record("prepare", config={"n": 3}))
    table = results / "tables" / "t.csv"
    table.parent.mkdir(parents=True)
    table.write_text("a,b\n1,2\n")
    record_outputs(make_record("table", inputs=[store]), [table])
    assert find_record(table)["output"]["path"] == str(table)
    assert main(["provenance", str(table)]) == 0
    out = capsys.readouterr().out
    assert "stage table" in out and "stage prepare" in out
    assert out.index("stage table") < out.index("stage prepare")

"""eae compare: two results trees, tables cell by cell (timing aside), Zarr variables, figures."""

import shutil

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eae.cli import main
from eae.compare import compare_trees, is_timing_column, markdown_tables

TABLE = """# Table

| model | MSE | wall s |
|---|---|---|
| EAE | 0.0132 | 35 |
| VAE | 0.0167 | 12 |

Notes: measured.
"""


def _tree(root):
    (root / "tables").mkdir(parents=True)
    (root / "tables" / "t.md").write_text(TABLE)
    pd.DataFrame({"update": [1, 2], "loss": [0.5, 0.25], "round_seconds": [1.0, 1.1]}).to_csv(
        root / "tables" / "t.csv", index=False)
    (root / "logs").mkdir()
    (root / "logs" / "job.log").write_text("started at noon")
    ds = xr.Dataset({"latent": (("draw", "unit"), np.arange(6, dtype=np.float32).reshape(3, 2))},
                    coords={"unit": [0, 1]}, attrs={"created": "noon"})
    ds.to_zarr(root / "ens.zarr", mode="w", consolidated=False)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(1, 1))
    ax.plot([0, 1], [0, 1])
    fig.savefig(root / "fig.png", dpi=40)
    plt.close(fig)
    return root


@pytest.fixture
def trees(tmp_path):
    a = _tree(tmp_path / "a")
    b = tmp_path / "b"
    shutil.copytree(a, b)
    return a, b


def test_identical_trees_compare_equal_and_count_what_was_compared(trees):
    a, b = trees
    result = compare_trees(a, b)
    assert result.identical, result.format()
    assert result.compared == {"tables": 2, "stores": 1, "variables": 2, "figures": 1}
    assert main(["compare", str(a), str(b)]) == 0


def test_timing_columns_logs_and_attrs_are_not_compared(trees):
    a, b = trees
    (b / "tables" / "t.md").write_text(TABLE.replace("| 35 |", "| 36 |"))
    pd.DataFrame({"update": [1, 2], "loss": [0.5, 0.25], "round_seconds": [9.0, 9.1]}).to_csv(
        b / "tables" / "t.csv", index=False)
    (b / "logs" / "job.log").write_text("started at one")
    ds = xr.open_zarr(a / "ens.zarr", consolidated=False).load().assign_attrs(created="one")
    ds.to_zarr(b / "ens.zarr", mode="w", consolidated=False)
    result = compare_trees(a, b)
    assert result.identical, result.format()
    assert {"wall s", "round_seconds"} <= result.ignored_columns


def test_every_kind_of_difference_is_named(trees, capsys):
    a, b = trees
    (b / "tables" / "t.md").write_text(TABLE.replace("0.0167", "0.0168"))
    pd.DataFrame({"update": [1, 2], "loss": [0.5, 0.26], "round_seconds": [1.0, 1.1]}).to_csv(
        b / "tables" / "t.csv", index=False)
    ds = xr.open_zarr(a / "ens.zarr", consolidated=False).load()
    ds["latent"][2, 1] = 5.5
    ds.to_zarr(b / "ens.zarr", mode="w", consolidated=False)
    (b / "fig.png").unlink()
    (b / "extra.csv").write_text("a\n1\n")
    result = compare_trees(a, b)
    text = "\n".join(result.differences)
    assert "tables/t.md table 1 row 2 [MSE]: '0.0167' vs '0.0168'" in text
    assert "tables/t.csv [loss]: differs in 1 row(s), first row 1" in text
    assert "ens.zarr/latent: values differ (max |Δ| 0.5)" in text
    assert "fig.png: only in A" in text
    assert "extra.csv: only in B" in text
    assert main(["compare", str(a), str(b)]) == 1
    assert "5 difference(s)" in capsys.readouterr().out


def test_changed_pixels_are_measured(trees):
    a, b = trees
    from matplotlib import image

    pixels = image.imread(b / "fig.png")
    pixels[0, 0, :3] = 1.0 - pixels[0, 0, :3]
    image.imsave(b / "fig.png", pixels)
    diffs = compare_trees(a, b).differences
    assert len(diffs) == 1 and diffs[0].startswith("fig.png: pixels differ (max 1")


def test_a_missing_tree_is_an_error(tmp_path, capsys):
    assert main(["compare", str(tmp_path / "nope"), str(tmp_path)]) == 2
    assert "no results folder" in capsys.readouterr().err


def test_timing_headers_and_markdown_parsing():
    assert is_timing_column("wall s") and is_timing_column("round_seconds")
    assert is_timing_column("time (s)") and is_timing_column("elapsed")
    assert is_timing_column("train_s") and is_timing_column("wall_s")
    assert not is_timing_column("time") and not is_timing_column("test MSE")
    assert not is_timing_column("T_conf/T train")
    tables = markdown_tables(TABLE)
    assert tables == [[["model", "MSE", "wall s"], ["EAE", "0.0132", "35"], ["VAE", "0.0167", "12"]]]

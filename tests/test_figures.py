"""Figures: helpers (interpolation, KDE fallbacks, dimension choice), exact PNG sizes,
and the stage on tiny fake models/ensemble (labelled and unlabelled)."""

import json
import os
import struct
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from eae import figures  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from helpers import IMAGE_SHAPE, build_fake_results  # noqa: E402

SMALL_CFG = {"chunk_members": 3, "probe": {"k": 3, "folds": 3}, "interpolate": {"classes": [0, 2], "steps": 5},
             "density_members": 5, "n_samples": 6, "sample_members": 3, "dpi": 40}


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; fails on anything that is not a PNG."""
    data = Path(path).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def not_blank(path: Path) -> bool:
    import matplotlib.image

    img = matplotlib.image.imread(path)
    return float(img[..., :3].std()) > 0.01


# --------------------------------------------------------------------------- helpers


def test_interpolate_codes_and_class_mean():
    lam, z = figures.interpolate_codes(np.array([0.0, 2.0]), np.array([4.0, 2.0]), 5)
    np.testing.assert_allclose(lam, [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_allclose(z[:, 0], [0, 1, 2, 3, 4])
    np.testing.assert_allclose(z[:, 1], 2.0)
    codes = np.array([[1.0], [3.0], [10.0]])
    assert figures.class_mean(codes, np.array([5, 5, 6]), 5)[0] == 2.0
    with pytest.raises(ValueError, match="label 9"):
        figures.class_mean(codes, np.array([5, 5, 6]), 9)
    with pytest.raises(ValueError, match="2 steps"):
        figures.interpolate_codes(np.zeros(2), np.ones(2), 1)


def test_density_curve_kde_hist_and_degenerate():
    grid = np.linspace(-5, 5, 401)
    rng = np.random.default_rng(0)
    y, how = figures.density_curve(rng.standard_normal(5000), grid)
    assert how == "kde"
    assert np.trapezoid(y, grid) == pytest.approx(1.0, abs=0.01)
    assert grid[np.argmax(y)] == pytest.approx(0.0, abs=0.3)
    # Spread far below the grid spacing: a histogram that still integrates to 1.
    y, how = figures.density_curve(1.0 + 1e-6 * rng.standard_normal(100), grid)
    assert how == "hist" and np.sum(y) * (grid[1] - grid[0]) == pytest.approx(1.0)
    assert figures.density_curve(np.full(50, 2.0), grid) == (None, "constant")
    assert figures.density_curve(np.array([3.0]), grid) == (None, "constant")
    assert figures.density_curve(np.array([np.nan, np.nan]), grid) == (None, "empty")
    # Subsampling is seeded: the same rng seed gives the same curve.
    big = rng.standard_normal(3000)
    a, _ = figures.density_curve(big, grid, max_points=500, rng=np.random.default_rng(1))
    b, _ = figures.density_curve(big, grid, max_points=500, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a, b)


def test_choose_density_dims_prefers_dims_active_in_all_models():
    var = {"A": np.array([1, 1, 1, 1, 0, 1.0]), "B": np.array([1, 0, 1, 1, 1, 1.0]),
           "C": np.array([1, 1, 1, 1, 1, 1.0])}
    dims, note = figures.choose_density_dims(var, 3, 0.01, seed=0)
    assert dims["A"] == dims["B"] == dims["C"] and set(dims["A"]) <= {0, 2, 3, 5}
    assert "all models" in note
    assert figures.choose_density_dims(var, 3, 0.01, seed=0)[0] == dims  # seeded
    # Only two dims active in B: per-model choice, B filled with its most variable one.
    var["B"] = np.array([0.5, 0, 0, 0.3, 0.001, 0.002])
    dims, note = figures.choose_density_dims(var, 3, 0.01, seed=0)
    assert dims["B"] == [0, 3, 5] and "B: only 2 active" in note
    assert len(dims["A"]) == 3 and all(var["A"][d] > 0.01 for d in dims["A"])


# --------------------------------------------------------------------------- figures


def test_interpolation_figure_has_exact_size(tmp_path):
    steps, rows = 5, {"Test data": None, "EAE": None, "VAE": None, "Vanilla AE": None}
    rng = np.random.default_rng(0)
    rows = {k: rng.random((steps, 8 * 6)) for k in rows}
    path = figures.interpolation_figure(rows, (8, 6), np.linspace(0, 1, steps), tmp_path / "i.png",
                                        title="t", dpi=50, cell=0.8)
    # width (1.4 + 5·0.8·6/8 + 0.1) in, height (0.6 + 0.3 + 4·0.8 + 0.1) in, at 50 dpi.
    assert png_size(path) == (225, 210)
    assert not_blank(path)
    with pytest.raises(ValueError, match="λ values"):
        figures.interpolation_figure({"x": rng.random((3, 48))}, (8, 6), [0, 1], tmp_path / "j.png")
    assert not (tmp_path / "j.png").exists()


def test_density_figure_survives_degenerate_dimensions(tmp_path):
    rng = np.random.default_rng(1)
    labels = np.repeat(np.arange(3), 40)
    good = rng.standard_normal((120, 2)) + labels[:, None]
    degenerate = np.column_stack([np.full(120, 0.5), np.where(labels == 0, 1.0, rng.standard_normal(120))])
    rows = [
        figures.DensityRow("EAE", good, [3, 7], labels),
        figures.DensityRow("VAE", degenerate, [0, 1], labels, note="collapsed"),
        figures.DensityRow("AE", rng.standard_normal((120, 1)), [5], None),  # no labels, one dim
    ]
    path = figures.latent_density_figure(rows, tmp_path / "d.png", title="t", dpi=40)
    # width 2·3.0 + 1.2 in, height 3·2.6 + 0.6 in, at 40 dpi.
    assert png_size(path) == (288, 336)
    assert not_blank(path)
    with pytest.raises(ValueError, match="values must be"):
        figures.latent_density_figure([figures.DensityRow("x", good, [1, 2, 3], labels)], tmp_path / "e.png")


def test_samples_figure_has_exact_size(tmp_path):
    rng = np.random.default_rng(2)
    blocks = {"a": rng.random((16, 48)), "b": (rng.random((10, 48)), 5)}
    path = figures.samples_figure(blocks, (8, 6), tmp_path / "s.png", title="t", dpi=50, cell=0.6, ncols=8)
    # width max(6, 8·0.6·6/8 + 0.4) in; height 0.6 + (0.45 + 2·0.6) + (0.45 + 2·0.6) in.
    assert png_size(path) == (300, 195)
    # A title too long for one line wraps and adds LINE_H per extra line.
    long = {"a" * 30 + " " + "b" * 30 + " " + "c" * 30: rng.random((4, 48))}
    path = figures.samples_figure(long, (8, 6), tmp_path / "t.png", dpi=50, cell=0.6, ncols=4)
    assert png_size(path) == (300, round(50 * (0.6 + 0.45 + 0.17 + 0.6)))  # 2 lines of <= 72 chars
    assert not_blank(path)


# --------------------------------------------------------------------------- the stage


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return build_fake_results(tmp_path_factory.mktemp("fakefig"))


def test_figures_stage_labelled(fake):
    figdir = fake["results"] / "figures"
    outputs = {"interpolation": figdir / "mnist_interpolation.png",
               "densities": figdir / "mnist_latent_densities.png",
               "samples": figdir / "mnist_samples.png"}
    written = figures.figures_stage("mnist", SMALL_CFG, outputs, paths=fake["paths"])
    assert set(written) == set(outputs)
    rows, cols = IMAGE_SHAPE
    # Interpolation: 4 rows (test data, EAE, VAE, AE) × 5 steps of 0.8·6/8-inch cells at 40 dpi.
    assert png_size(outputs["interpolation"]) == (round(40 * (1.4 + 5 * 0.6 + 0.1)), round(40 * (1.0 + 4 * 0.8)))
    # Densities: 3 model rows × 3 dims.
    assert png_size(outputs["densities"]) == (round(40 * (3 * 3.0 + 1.2)), round(40 * (3 * 2.6 + 0.6)))
    # Samples: EAE draws (6 in one row), EAE members (2 rows of 2 + 3), VAE and AE (6 each).
    w, h = png_size(outputs["samples"])
    assert w == round(40 * max(6.0, 6 * 0.6 * cols / rows + 0.4))
    assert h == round(40 * (0.6 + 4 * 0.45 + 0.6 * (1 + 2 + 1 + 1)))
    for out in outputs.values():
        assert not_blank(out)
        rec = json.loads((fake["results"] / "provenance" / "figures" / (out.name + ".json")).read_text())
        assert rec["stage"] == "images_figures_mnist" and rec["output"]["path"] == str(out)
        assert rec["config"]["seed"] == 0


def test_figures_stage_is_seeded(fake, tmp_path):
    a = figures.figures_stage("mnist", SMALL_CFG, {"samples": tmp_path / "a.png"}, paths=fake["paths"])
    b = figures.figures_stage("mnist", SMALL_CFG, {"samples": tmp_path / "b.png"}, paths=fake["paths"])
    assert a["samples"].read_bytes() == b["samples"].read_bytes()
    c = figures.figures_stage("mnist", {**SMALL_CFG, "seed": 1}, {"samples": tmp_path / "c.png"},
                              paths=fake["paths"])
    assert c["samples"].read_bytes() != a["samples"].read_bytes()


def test_figures_stage_unlabelled(tmp_path):
    fake = build_fake_results(tmp_path, labelled=False, dataset="frey")
    figdir = fake["results"] / "figures"
    outputs = {"densities": figdir / "frey_latent_densities.png", "samples": figdir / "frey_samples.png"}
    cfg = {**SMALL_CFG, "models": ["eae", "vae"]}
    figures.figures_stage("frey", cfg, outputs, paths=fake["paths"])
    assert png_size(outputs["densities"])[1] == round(40 * (2 * 2.6 + 0.6))
    assert all(not_blank(p) for p in outputs.values())
    # No labels: the interpolation figure is refused, and nothing is left behind.
    bad = {"densities": figdir / "x.png", "interpolation": figdir / "y.png"}
    with pytest.raises(ValueError, match="needs class labels"):
        figures.figures_stage("frey", cfg, bad, paths=fake["paths"])
    assert not (figdir / "x.png").exists() and not (figdir / "y.png").exists()
    with pytest.raises(ValueError, match="unknown figure kind"):
        figures.figures_stage("frey", cfg, {"fig9": figdir / "z.png"}, paths=fake["paths"])


def test_interpolation_rejects_missing_class(fake, tmp_path):
    cfg = {**SMALL_CFG, "interpolate": {"classes": [0, 7], "steps": 3}}
    with pytest.raises(ValueError, match="interpolate.classes"):
        figures.figures_stage("mnist", cfg, {"interpolation": tmp_path / "i.png"}, paths=fake["paths"])

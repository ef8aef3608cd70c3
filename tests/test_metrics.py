"""Table 1 metrics: activity, PCs, probes, streaming moments, PCA reference, the stage
on tiny fake models/ensemble, Table 1 layout, and the config."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from eae import metrics  # noqa: E402
from eae.temperature import TEMPERATURE_COLUMNS  # noqa: E402
from eae.workflow import image_paths  # noqa: E402

from helpers import N_MEMBERS, build_fake_results  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    return build_fake_results(tmp_path_factory.mktemp("fake"))


SMALL_CFG = {"chunk_members": 3, "probe": {"k": 3, "folds": 3}}


# --------------------------------------------------------------------------- activity / PCs


def test_active_units_counts_dimensions_with_known_variances():
    rng = np.random.default_rng(1)
    var = np.array([0.5, 0.02, 0.005, 0.0, 2.0])
    codes = rng.standard_normal((40000, 5)) * np.sqrt(var) + 3.0
    assert metrics.active_units(codes, 0.01) == 3
    assert metrics.active_units(codes, 0.03) == 2
    assert metrics.active_units(codes, 0.0) == 4  # the constant dimension never counts
    np.testing.assert_allclose(metrics.code_variances(codes), var, rtol=0.03, atol=1e-4)
    with pytest.raises(ValueError, match="2-D"):
        metrics.active_units(codes[:, 0])


def test_relative_activity_is_scale_free_where_the_fixed_threshold_is_not():
    rng = np.random.default_rng(2)
    var = np.array([1.0, 0.5, 0.004, 0.0])  # mean 0.376: 1 % of it is 0.00376
    codes = rng.standard_normal((40000, 4)) * np.sqrt(var)
    units, scale = metrics.relative_active_units(codes, 0.01)
    assert units == 3 and scale == pytest.approx(var.mean(), rel=0.03)
    assert metrics.active_units(codes, 0.01) == 2
    big = 1000.0 * codes  # the scale of an EAE's codes: every unit passes 0.01, even the weak one
    assert metrics.active_units(big, 0.01) == 3
    assert metrics.relative_active_units(big, 0.01) == (3, pytest.approx(1e6 * scale))
    assert metrics.relative_active_units(codes, 0.5) == (2, pytest.approx(scale))
    assert metrics.relative_active_units(np.zeros((10, 3)), 0.01) == (0, 0.0)


def test_pcs_for_variance_on_data_of_known_rank():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((500, 3)) @ rng.standard_normal((3, 12))
    assert metrics.pcs_for_variance(x, 0.99) == 3
    assert metrics.pcs_for_variance(x, 1.0) == 3
    # Independent dimensions with variances 100, 1, 0.001: 99 % needs only the first.
    y = rng.standard_normal((20000, 3)) * np.sqrt([100.0, 1.0, 1e-3])
    assert metrics.pcs_for_variance(y, 0.98) == 1
    assert metrics.pcs_for_variance(y, 0.999) == 2
    assert metrics.pcs_for_variance(np.zeros((10, 4)), 0.99) == 0
    # Scale-free: a global rescaling does not change the count (the 0.01 threshold does).
    assert metrics.pcs_for_variance(1e-3 * x, 0.99) == 3
    assert metrics.active_units(1e-3 * x) < metrics.active_units(x)


def test_streaming_moments_match_numpy_with_large_offset():
    rng = np.random.default_rng(3)
    x = 1e6 + rng.standard_normal((1000, 4)) @ rng.standard_normal((4, 4))
    mom = metrics.StreamingMoments(4)
    for part in np.array_split(x, [1, 10, 400, 401]):  # uneven blocks, one of size 1
        mom.update(part)
    np.testing.assert_allclose(mom.mean, x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(mom.covariance, np.cov(x, rowvar=False, ddof=0), rtol=1e-8, atol=1e-8)


# --------------------------------------------------------------------------- probes


def _clusters(n=600, seed=4, sep=6.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centres = sep * rng.standard_normal((3, 5))
    return centres[y] + rng.standard_normal((n, 5)), y


@pytest.mark.parametrize("kind", ["knn", "logistic"])
def test_probe_separable_vs_random_labels(kind):
    x, y = _clusters()
    acc = metrics.probe_accuracy(x[:400], y[:400], x[400:], y[400:], kind=kind, k=5)
    assert acc > 0.97
    shuffled = np.random.default_rng(5).permutation(y)
    acc_random = metrics.probe_accuracy(x[:400], shuffled[:400], x[400:], shuffled[400:], kind=kind, k=5)
    assert acc_random < 0.5  # chance is ~1/3
    cv = metrics.cross_validated_probe(x, y, folds=4, seed=0, kind=kind, k=5)
    assert cv > 0.97
    assert cv == metrics.cross_validated_probe(x, y, folds=4, seed=0, kind=kind, k=5)


def test_knn_vote_and_tie_break():
    train = np.array([[0.0], [1.0], [10.0], [11.0], [12.0]])
    labels = np.array([7, 7, 3, 3, 3])
    assert list(metrics.knn_predict(train, labels, np.array([[0.4], [11.2]]), k=3)) == [7, 3]
    # k=2 at 0.9: neighbours 1.0 and 0.0 (both 7) -> 7. At 5.8 the two nearest are 10.0
    # (label 3, distance 4.2) and 1.0 (label 7, 4.8): a 1-1 tie, won by the nearest -> 3;
    # at 5.2 the order flips (1.0 at 4.2, 10.0 at 4.8) -> 7.
    assert list(metrics.knn_predict(train, labels, np.array([[0.9], [5.8]]), k=2)) == [7, 3]
    assert list(metrics.knn_predict(train, labels, np.array([[5.2]]), k=2)) == [7]
    # k larger than the training set uses all of it.
    assert list(metrics.knn_predict(train, labels, np.array([[0.0]]), k=50)) == [3]


# --------------------------------------------------------------------------- PCA


def test_pca_reference_mse_equals_discarded_variance():
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((300, 3)) * [3.0, 1.0, 0.3]) @ np.linalg.qr(rng.standard_normal((10, 10)))[0][:3]
    x = x + 0.5
    full = metrics.pca_reference(x, x, 3)
    assert full["test_mse"] < 1e-20
    assert full["pcs_99"] <= 3 and full["active_units"] == 3
    one = metrics.pca_reference(x, x, 1)
    eig = np.sort(np.linalg.eigvalsh(np.cov(x, rowvar=False, ddof=0)))[::-1]
    assert one["test_mse"] == pytest.approx(eig[1:].sum() / x.shape[1], rel=1e-9)
    assert one["label"] == "PCA-1" and one["latent_dim"] == 1
    fit = metrics.pca_fit(x, 2)
    np.testing.assert_allclose(fit["components"] @ fit["components"].T, np.eye(2), atol=1e-12)


# --------------------------------------------------------------------------- ensemble


def test_ensemble_statistics_streams_members_exactly(fake):
    z = fake["z"].astype(np.float64)
    stats = metrics.ensemble_statistics(fake["paths"]["ensemble"], threshold=0.01, chunk_members=3)
    flat = z.reshape(-1, z.shape[-1])
    np.testing.assert_allclose(stats["variance"], flat.var(0), rtol=1e-10, atol=1e-14)
    np.testing.assert_allclose(stats["covariance"], np.cov(flat, rowvar=False, ddof=0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(stats["latent_mean"], z.mean(0), rtol=1e-12)
    assert stats["n_members"] == N_MEMBERS
    assert list(stats["member_active"]) == [2] * N_MEMBERS  # dims 0 and 3
    assert metrics.active_units_from_variance(stats["variance"]) == 3  # dims 0, 1, 3
    assert metrics.active_units(z.mean(0)) == 2  # dims 0 and 3; the offsets average out


def test_ensemble_statistics_rejects_inconsistent_mean(tmp_path):
    from eae.io import write_zarr

    z = np.random.default_rng(0).standard_normal((4, 5, 2)).astype(np.float32)
    ds = xr.Dataset({"latent": (("member", "sample", "unit"), z),
                     "latent_mean": (("sample", "unit"), z.mean(0) + 1.0)})
    write_zarr(ds, tmp_path / "e.zarr")
    with pytest.raises(ValueError, match="latent_mean"):
        metrics.ensemble_statistics(tmp_path / "e.zarr")


# --------------------------------------------------------------------------- the stage


def test_model_metrics_on_fake_results(fake):
    import keras

    frame = metrics.model_metrics("mnist", fake["paths"], SMALL_CFG)
    assert list(frame["model"]) == ["eae", "vae", "ae", "pca"]
    assert list(frame.columns) == metrics.COLUMNS + TEMPERATURE_COLUMNS
    rows = frame.set_index("model")
    eae = rows.loc["eae"]
    # the store's measured temperatures reach the EAE row, flagged; baselines have none
    assert eae["T_conf/T train"] == 40.0 and eae["T_kin/T ensemble"] == 0.99
    assert eae["T flag"] == "FLAGGED: train"
    assert rows.loc[["vae", "ae", "pca"], "T_kin/T train"].isna().all()
    md = metrics.table1_markdown(metrics.table1([frame]), [frame])
    assert "MNIST EAE temperature (measured, ratio to the target T): T_kin/T train 1.01, T_conf/T train 40" in md
    assert "**FLAGGED: train**" in md
    assert eae["improper"] == "IMPROPER: ensemble" and eae["θ growth ensemble"] == 0.48
    assert "θ growth train 0.05, θ growth ensemble 0.48; **IMPROPER: ensemble**" in md
    assert eae["active_units"] == 2 and eae["active_units_all_samples"] == 3
    assert eae["active_units_member_mean"] == 2.0 and eae["n_members"] == N_MEMBERS
    # one chain in the fake store: its own mean code is the pooled one
    assert eae["test_mse_chain_min"] == pytest.approx(eae["test_mse"], rel=1e-6)
    assert eae["test_mse_chain_max"] == pytest.approx(eae["test_mse"], rel=1e-6)
    assert "MNIST EAE per chain: the decoder of each chain's own mean code" in md
    for model in ("eae", "vae", "ae", "pca"):  # the same rule on every model's codes
        assert rows.loc[model, "code_scale"] > 0
        assert 0 <= rows.loc[model, "active_units_relative"] <= rows.loc[model, "latent_dim"]
    assert "active (relative)" in md and "code scale, the mean per-unit variance: MNIST: EAE" in md
    assert eae["probe_accuracy"] == 1.0  # dim 0 encodes the class
    assert eae["probe_chance"] == pytest.approx(1 / 3)
    # EAE MSE: the decoder of the ensemble-mean code, computed independently here.
    dec = keras.saving.load_model(fake["paths"]["eae"] / "decoder.keras", compile=False)
    recon = np.asarray(dec(fake["z"].astype(np.float64).mean(0).astype(np.float32)))
    assert eae["test_mse"] == pytest.approx(np.mean((recon - fake["x_test"]) ** 2), rel=1e-5)
    # VAE MSE: sigmoid output for the posterior mean (no sampling).
    enc = keras.saving.load_model(fake["paths"]["vae"] / "encoder.keras", compile=False)
    dec = keras.saving.load_model(fake["paths"]["vae"] / "decoder.keras", compile=False)
    mu = np.asarray(enc(fake["x_test"])[0])
    recon = np.asarray(dec(mu))
    assert 0 < recon.min() and recon.max() < 1
    assert rows.loc["vae", "test_mse"] == pytest.approx(np.mean((recon - fake["x_test"]) ** 2), rel=1e-5)
    assert rows.loc["vae", "active_units"] == metrics.active_units(mu)
    assert "sigmoid" in rows.loc["vae", "mse_of"] and "posterior mean" in rows.loc["vae", "mse_of"]
    # PCA-4 on three noisy prototypes: reconstructs far better than the untrained nets.
    assert rows.loc["pca", "label"] == "PCA-4" and rows.loc["pca", "latent_dim"] == 4
    assert rows.loc["pca", "test_mse"] < 0.5 * rows.loc["ae", "test_mse"]
    assert rows.loc["pca", "probe_accuracy"] == 1.0
    for model in ("vae", "ae", "pca"):
        assert np.isnan(rows.loc[model, "active_units_all_samples"])


def test_metrics_stage_without_labels_and_sidecar(tmp_path):
    fake = build_fake_results(tmp_path, labelled=False, dataset="frey")
    out = fake["results"] / "frey" / "metrics.csv"
    frame = metrics.metrics_stage("frey", {**SMALL_CFG, "models": ["eae", "ae"]}, out,
                                  paths=fake["paths"])
    assert list(frame["model"]) == ["eae", "ae", "pca"]
    assert frame["probe_accuracy"].isna().all() and (frame["probe"] == "no labels").all()
    assert pd.read_csv(out).shape == frame.shape
    sidecar = fake["results"] / "provenance" / "frey" / "metrics.csv.json"
    assert sidecar.is_file()
    import json

    rec = json.loads(sidecar.read_text())
    assert rec["stage"] == "images_metrics_frey" and rec["config"]["active_threshold"] == 0.01
    assert any(k.endswith("ensemble.zarr") for k in rec["inputs"])


def test_stage_rejects_mismatched_ensemble(tmp_path, fake):
    import shutil

    from eae.io import write_zarr

    root = tmp_path / "results"
    shutil.copytree(fake["results"], root)
    z = fake["z"][:, :-1]  # one test image short
    write_zarr(xr.Dataset({"latent": (("member", "sample", "unit"), z)}), root / "mnist" / "eae" / "ensemble.zarr")
    with pytest.raises(ValueError, match="different data"):
        metrics.model_metrics("mnist", image_paths("mnist", root), SMALL_CFG)
    shutil.rmtree(root / "mnist" / "vae")
    with pytest.raises(FileNotFoundError, match="encoder.keras"):
        metrics.model_metrics("mnist", image_paths("mnist", root), {**SMALL_CFG, "models": ["vae"]})


def test_config_errors_name_the_key():
    from eae.config import ConfigError

    with pytest.raises(ConfigError, match=r"analysis\.threshold: unknown key \(did you mean 'active_threshold'\?\)"):
        metrics.resolve_config({"threshold": 0.1})
    with pytest.raises(ConfigError, match=r"analysis\.probe\.kk: unknown key"):
        metrics.resolve_config({"probe": {"kk": 3}})
    with pytest.raises(ValueError, match=r"analysis\.probe\.kind: must be one of"):
        metrics.resolve_config({"probe": {"kind": "svm"}})
    with pytest.raises(ValueError, match=r"analysis\.models\[1\]"):
        metrics.resolve_config({"models": ["eae", "gan"]})
    with pytest.raises(ValueError, match="interpolate.classes must be two different labels"):
        metrics.resolve_config({"interpolate": {"classes": [1, 1]}})


def test_config_defaults_fill_omitted_keys():
    cfg = metrics.resolve_config({"probe": {"k": 3}, "models": ("eae",)})
    assert cfg["probe"] == {"kind": "knn", "k": 3, "folds": 5, "l2": 0.001, "max_iter": 300}
    assert cfg["models"] == ["eae"] and cfg["active_threshold"] == 0.01 and cfg["dpi"] == 120
    assert metrics.resolve_config(cfg) == cfg  # a complete section (the workflow's) is kept as is


# --------------------------------------------------------------------------- Table 1


def _metrics_frame(dataset, labelled):
    rows = []
    for model, label, mse, act in (("eae", "EAE", 0.026, 64), ("vae", "VAE", 0.016, 16),
                                   ("ae", "Vanilla AE", 0.010, 53), ("pca", "PCA-64", 0.005, 64)):
        rows.append({
            "dataset": dataset, "model": model, "label": label, "latent_dim": 64, "n_test": 100,
            "n_members": 5000 if model == "eae" else np.nan, "test_mse": mse, "mse_of": "x",
            "test_mse_chain_min": mse if model == "eae" else np.nan,
            "test_mse_chain_max": mse if model == "eae" else np.nan,
            "active_threshold": 0.01, "active_units": act, "active_of": "x",
            "active_units_all_samples": 64 if model == "eae" else np.nan,
            "active_units_member_mean": 61.5 if model == "eae" else np.nan,
            "relative_active_fraction": 0.01, "active_units_relative": act - 1,
            "code_scale": 260.0 if model in ("eae", "ae") else 0.8,
            "pca_variance": 0.99, "pcs_99": 30, "pcs_99_all_samples": 50 if model == "eae" else np.nan,
            "probe": "k-NN (k=10), 5-fold CV on test codes" if labelled else "no labels",
            "probe_accuracy": 0.95 if labelled else np.nan, "probe_chance": 0.11 if labelled else np.nan,
        })
    return pd.DataFrame(rows)[metrics.COLUMNS]


def test_table1_layout_and_provenance(tmp_path):
    results = tmp_path / "results"
    csvs = []
    for dataset, labelled in (("frey", False), ("mnist", True)):
        path = results / dataset / "metrics.csv"
        path.parent.mkdir(parents=True)
        _metrics_frame(dataset, labelled).iloc[::-1].to_csv(path, index=False)  # order is restored
        csvs.append(path)
    out_csv, out_md = results / "tables" / "table1.csv", results / "tables" / "table1.md"
    out_csv.parent.mkdir(parents=True)
    wide = metrics.table1_stage(csvs, out_csv, out_md)
    assert list(wide["label"]) == ["EAE", "VAE", "Vanilla AE", "PCA"]
    assert wide.loc[1, "mnist/active_units"] == 16 and wide.loc[0, "frey/test_mse"] == 0.026
    assert list(wide.columns[:4]) == ["model", "label", "frey/test_mse", "frey/active_units"]
    assert pd.read_csv(out_csv).shape == wide.shape
    md = out_md.read_text()
    lines = md.splitlines()
    assert lines[0].startswith("| Model | Frey Faces test MSE | Frey Faces active units |")
    assert lines[0].endswith("| MNIST PCs 99 % | MNIST probe acc. |")
    assert lines[2].startswith("| EAE | 0.0260 | 64/64 | 64/64 | 63/64 | 30 | — | 0.0260 | 64/64 | 64/64 | 63/64 | 30 | 95.0 % |")
    assert lines[3].startswith("| VAE | 0.0160 | 16/64 | — | 15/64 | 30 | — |")  # Frey has no labels
    assert lines[5].startswith("| PCA-64 | 0.0050 |")
    assert "sigmoid" in md and "posterior mean" in md
    assert "probe acc.: k-NN (k=10), 5-fold CV" in md and "MNIST probe chance level (most frequent class): 11.0 %" in md
    assert "0.00092" in metrics._fmt(0.00092, "mse")
    for out in (out_csv, out_md):
        assert (results / "provenance" / "tables" / (out.name + ".json")).is_file()
    with pytest.raises(FileNotFoundError, match="metrics table not found"):
        metrics.table1_stage([results / "nope.csv"], out_csv, out_md)


# --------------------------------------------------------------------------- workflow rules

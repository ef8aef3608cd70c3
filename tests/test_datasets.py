"""Your own data (the datasets: section): the readers, the checks that refuse bad data
with a message naming the file and the problem, the prepared store, the automatic model
choices, the Gaussian VAE, and the workflow chain on scikit-learn's digits."""

import os
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import xarray as xr  # noqa: E402

from eae.core.models import resolve_model  # noqa: E402
from eae.experiments.datasets.examples import write_example  # noqa: E402
from eae.experiments.datasets.prepare import prepare_dataset  # noqa: E402
from eae.experiments.datasets.sources import peek  # noqa: E402
from eae.experiments.images.data import DataError, load_split  # noqa: E402
from eae.support.config import ConfigError, check_config, section  # noqa: E402
from eae.support.io import open_zarr  # noqa: E402

from helpers import planned_jobs, run_snakemake  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _png_folder(root: Path, sizes, mode="L", labelled=True) -> Path:
    from PIL import Image

    rng = np.random.default_rng(0)
    for i, size in enumerate(sizes):
        folder = root / (f"class_{i % 2}" if labelled else "")
        folder.mkdir(parents=True, exist_ok=True)
        shape = (size[1], size[0]) + ((3,) if mode == "RGB" else ())
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(folder / f"{i:03d}.png")
    return root


def _prepare(tmp_path, name="toy", **entry):
    out = tmp_path / "results" / "data" / f"{name}.zarr"
    prepare_dataset(name, entry, out, base_dir=tmp_path)
    return open_zarr(out)


# --------------------------------------------------------------------------- formats


def test_npz_vectors_are_split_stratified_and_minmax_scaled(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.normal(5.0, 2.0, (100, 7))
    np.savez(tmp_path / "v.npz", x=x, y=np.repeat([0, 1], 50))
    ds = _prepare(tmp_path, path="v.npz")
    assert ds.attrs["data_kind"] == "vector" and "x" in ds and ds["x"].dims == ("sample", "feature")
    train = ds["split"].values == 0
    assert ds["x"].values[train].min() == 0.0 and ds["x"].values[train].max() == 1.0
    assert ds.attrs["unit_interval"]  # val/test clipped to the training range
    labels = ds["labels"].values
    for code in (0, 1, 2):  # each split holds both classes equally
        counts = np.bincount(labels[ds["split"].values == code], minlength=2)
        assert counts[0] == counts[1]
    x_train, y_train = load_split(tmp_path / "results/data/toy.zarr", "train")
    assert x_train.shape == (70, 7) and y_train.shape == (70,)


def test_standardize_uses_training_statistics_and_is_not_unit_interval(tmp_path):
    np.save(tmp_path / "v.npy", np.random.default_rng(2).normal(3.0, 4.0, (80, 5)))
    ds = _prepare(tmp_path, path="v.npy", scaling="standardize")
    train = ds["x"].values[ds["split"].values == 0]
    np.testing.assert_allclose(train.mean(0), 0.0, atol=1e-5)
    np.testing.assert_allclose(train.std(0), 1.0, atol=1e-4)
    assert not ds.attrs["unit_interval"] and "labels" not in ds
    assert ds["scaling_mean"].shape == (5,)


@pytest.mark.parametrize("fmt", ["zarr", "netcdf"])
def test_xarray_sources_with_string_labels(tmp_path, fmt):
    imgs = np.random.default_rng(3).random((40, 6, 5)).astype(np.float32)
    src = xr.Dataset({"pixels": (("n", "r", "c"), imgs),
                      "kind": (("n",), np.array(["cat", "dog"] * 20))})
    path = tmp_path / ("src.zarr" if fmt == "zarr" else "src.nc")
    src.to_zarr(path) if fmt == "zarr" else src.to_netcdf(path)
    entry = {"path": path.name, "x": "pixels", "y": "kind", "scaling": "none"}
    assert peek("toy", section("datasets.toy", entry), tmp_path).format == fmt
    ds = _prepare(tmp_path, **entry)
    assert ds.attrs["data_kind"] == "grey" and ds["images"].shape == (40, 6, 5)
    assert ds.attrs["label_names"] == ["cat", "dog"]
    np.testing.assert_allclose(np.sort(ds["images"].values.ravel()), np.sort(imgs.ravel()))


def test_image_folder_labels_from_subfolders_and_rgb(tmp_path):
    _png_folder(tmp_path / "imgs", [(6, 4)] * 20, mode="RGB")
    ds = _prepare(tmp_path, path="imgs")
    assert ds.attrs["data_kind"] == "rgb" and ds["images"].shape == (20, 4, 6, 3)
    assert ds.attrs["label_names"] == ["class_0", "class_1"]
    assert sorted(np.unique(ds["labels"].values)) == [0, 1]


def test_image_folder_of_mixed_sizes_is_refused_unless_resized(tmp_path):
    _png_folder(tmp_path / "imgs", [(6, 4), (5, 5)] * 10, labelled=False)
    with pytest.raises(DataError, match=r"imgs: images of 2 different sizes .*images.resize"):
        _prepare(tmp_path, path="imgs")
    assert not (tmp_path / "results").exists()
    ds = _prepare(tmp_path, path="imgs", images={"resize": [4, 4]})
    assert ds["images"].shape == (20, 4, 4) and "labels" not in ds


# --------------------------------------------------------------------------- bad data


def _bad_sources(tmp_path):
    np.savez(tmp_path / "strings.npz", x=np.array([["a", "b"]] * 30))
    nan = np.ones((30, 3))
    nan[[4, 9]] = np.nan
    np.savez(tmp_path / "nan.npz", x=nan)
    np.savez(tmp_path / "few.npz", x=np.ones((3, 4)))
    np.savez(tmp_path / "labels.npz", x=np.ones((30, 4)), y=np.arange(29))
    np.savez(tmp_path / "shape.npz", x=np.ones((30, 2, 2, 2, 2)))
    (tmp_path / "broken.npz").write_bytes(b"PK\x03\x04 not really a zip")
    return {
        "not numeric": ("strings.npz", "strings.npz: the samples are not numeric"),
        "non-finite": ("nan.npz", "nan.npz: 2 sample(s) hold non-finite values (NaN or inf), e.g. sample(s) [4, 9]"),
        "too few samples": ("few.npz", "few.npz: 3 samples are too few for the split"),
        "labels of another length": ("labels.npz", "labels.npz: 29 labels for 30 samples"),
        "unknown sample shape": ("shape.npz", "shape.npz: samples of shape [30, 2, 2, 2, 2]"),
        "unreadable content": ("broken.npz", "broken.npz: unreadable npz file"),
    }


BAD = ["not numeric", "non-finite", "too few samples", "labels of another length",
       "unknown sample shape", "unreadable content"]


@pytest.mark.parametrize("case", BAD)
def test_bad_content_is_refused_naming_the_file_and_writes_nothing(tmp_path, case):
    path, message = _bad_sources(tmp_path)[case]
    with pytest.raises(DataError) as caught:
        _prepare(tmp_path, path=path)
    assert message in str(caught.value)
    assert not (tmp_path / "results").exists()


def _config_with(entries):
    return {"mnist": {"enabled": False}, "rd": {"enabled": False}, "faces": {"enabled": False},
            "sweep": {"enabled": False}, "datasets": entries}


@pytest.mark.parametrize("entries, fragment", [
    ({"toy": {"path": "missing.npz"}}, "datasets.toy.path: missing.npz does not exist (relative to"),
    ({"toy": {"path": "data.csv"}}, "data.csv: unknown data format (suffix '.csv')"),
    ({"tables": {"path": "v.npz"}}, "datasets.tables: 'tables' is a folder of results/"),
    ({"mnist": {"path": "v.npz"}}, "datasets.mnist: 'mnist' is a built-in experiment"),
    ({"toy": {"path": "v.npz", "x": "pixels"}}, "v.npz: no array 'pixels' (the entry's x); arrays: ['x']"),
    ({"Toy": {"path": "v.npz"}}, "datasets: must match"),
])
def test_the_config_check_refuses_bad_entries_before_any_job(tmp_path, monkeypatch, entries, fragment):
    monkeypatch.chdir(tmp_path)
    np.savez(tmp_path / "v.npz", x=np.ones((30, 4)))
    (tmp_path / "data.csv").write_text("1,2\n")
    with pytest.raises(ConfigError) as caught:
        check_config(_config_with(entries))
    assert fragment in str(caught.value), str(caught.value)


def test_sweep_experiment_must_be_known(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = {**_config_with({}), "sweep": {"enabled": False, "experiment": "digitz"}}
    with pytest.raises(ConfigError, match="sweep.experiment = 'digitz'; allowed: mnist, frey, faces, rd"):
        check_config(config)


# --------------------------------------------------------------------------- models


def test_auto_model_follows_the_data():
    block = section("datasets.x.model", {})
    assert resolve_model(block, (64,), True)["kind"] == "mlp"
    assert resolve_model(block, (8, 8), True)["output_activation"] == "sigmoid"
    big = resolve_model(block, (32, 40, 3), False)
    assert big["kind"] == "conv" and big["output_activation"] == "linear"
    with pytest.raises(ValueError, match="conv needs images"):
        resolve_model({**block, "kind": "conv"}, (64,), True)


def test_gaussian_vae_trains_on_standardized_data(tmp_path):
    from eae.experiments.images.baselines import train_baseline_stage
    from eae.experiments.images.metrics import load_model

    np.save(tmp_path / "v.npy", np.random.default_rng(4).normal(2.0, 3.0, (120, 6)))
    _prepare(tmp_path, path="v.npy", scaling="standardize")
    entry = section("datasets.toy", {"path": "v.npy", "model": {"latent_dim": 2, "encoder_hidden": [8],
                                                                 "decoder_hidden": [8]}, "vae": {"epochs": 2}})
    cfg = {**entry["vae"], "model": entry["model"]}
    out = train_baseline_stage("vae", tmp_path / "results/data/toy.zarr", cfg, tmp_path / "vae")
    assert out["complete"] and np.isfinite(out["final"]["train_loss"])
    decoder = load_model(tmp_path / "vae" / "decoder.keras")
    assert decoder.layers[-1].get_config()["activation"] == "linear"
    record = (tmp_path / "vae" / "history.csv").read_text()
    assert "train_recon" in record


def test_digits_example_from_python():
    """README "Your own data", the Python route, at tiny settings."""
    import warnings

    import eae
    from sklearn.datasets import load_digits

    x = (load_digits().images / 16.0).astype("float32")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", eae.api.EAEWarning)  # 3 updates reach no equilibrium
        model = eae.fit(x[:300], latent_dim=4, temperature=1e-7, dt=1.0, decoder_updates=3,
                        encoder_steps=5, chains=2, seed=0, progress=False)
        z = model.encode(x[1500:1520])
    assert z.shape == (20, 4) and model.last_members == 100
    assert model.decode(z).shape == (20, 8, 8)


# --------------------------------------------------------------------------- workflow


TINY = """
datasets:
  digits:
    eae:
      train: {decoder_updates: 3, encoder_steps: 5, chains: 2}
      ensemble: {members: 8, thin: 1}
    vae: {epochs: 2}
    ae: {epochs: 2}
sweep:
  temperatures: [1.0e-7, 1.0e-5]
  train: {decoder_updates: 3, chains: 2}
  ensemble: {members: 8, thin: 1}
"""


@pytest.mark.slow
def test_digits_example_runs_the_whole_image_chain_and_the_sweep(tmp_path):
    """README "Your own data": config/digits.yaml in a tiny configuration."""
    write_example("digits", tmp_path / "data" / "digits.npz")
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY)
    configs = [ROOT / "config" / "digits.yaml", tiny]
    dry = run_snakemake(tmp_path, "-n", configfiles=configs)
    jobs = planned_jobs(dry.stdout)
    assert jobs["datasets_prepare"] == 1 and jobs["images_interpolation"] == 1
    assert jobs["sweep_point"] == 2 and jobs["images_train_baseline"] == 2
    assert "images_prepare_mnist" not in jobs and "rd_simulate" not in jobs
    run_snakemake(tmp_path, "--cores", "2", configfiles=configs)
    results = tmp_path / "results"
    table = (results / "tables" / "table1.md").read_text()
    assert "| EAE |" in table and "digits probe acc." in table
    for path in ("figures/digits_interpolation.png", "figures/digits_samples.png",
                 "digits/diagnostics.csv", "tables/sweep_digits.md", "digits/eae/ensemble.zarr"):
        assert (results / path).exists(), path
    store = open_zarr(results / "data" / "digits.zarr")
    assert store.attrs["data_kind"] == "grey" and store["images"].shape[1:] == (8, 8)


@pytest.mark.slow
def test_bad_data_fails_its_preparation_and_nothing_downstream_runs(tmp_path):
    x = np.random.default_rng(5).random((60, 4, 4))
    x[7, 1, 1] = np.inf
    (tmp_path / "data").mkdir()
    np.savez(tmp_path / "data" / "digits.npz", x=x)
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text(TINY + "  enabled: false\n")
    result = run_snakemake(tmp_path, "--cores", "2", configfiles=[ROOT / "config" / "digits.yaml", tiny],
                           check=False)
    assert result.returncode != 0
    log = (tmp_path / "results" / "logs" / "data" / "prepare_digits.log").read_text()
    assert "digits.npz: 1 sample(s) hold non-finite values (NaN or inf), e.g. sample(s) [7]" in log
    assert not (tmp_path / "results" / "data" / "digits.zarr").exists()
    assert not (tmp_path / "results" / "digits").exists()

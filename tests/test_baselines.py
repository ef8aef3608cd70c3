"""Baseline VAE / AE training: learning, outputs, resume equality (also after SIGKILL), NaN handling."""

import csv
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from eae import baselines  # noqa: E402
from eae.experiments.images import baseline_training  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TINY_MODEL = {
    "kind": "mlp",
    "encoder_hidden": [16],
    "latent_dim": 4,
    "decoder_hidden": [16],
}


def synthetic_images(n: int = 200, seed: int = 0) -> np.ndarray:
    """n 8×8 images in [0, 1]: noisy mixtures of 3 prototypes (learnable, unlike white noise)."""
    rng = np.random.default_rng(seed)
    protos = rng.random((3, 64))
    weights = rng.dirichlet(np.ones(3), size=n)
    x = weights @ protos + 0.02 * rng.normal(size=(n, 64))
    return np.clip(x, 0.0, 1.0).astype(np.float32)


@pytest.fixture(scope="module")
def data():
    x = synthetic_images(240)
    return x[:200], x[200:]


def tiny_cfg(**over):
    cfg = {
        "epochs": 3,
        "batch_size": 32,
        "learning_rate": 3e-3,
        "model": dict(TINY_MODEL),
    }
    cfg.update(over)
    return cfg


def model_weights(out_dir: Path) -> list[np.ndarray]:
    enc, dec = baselines.load_models(out_dir)
    return enc.get_weights() + dec.get_weights()


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_training_learns_and_writes_outputs(kind, data, tmp_path):
    x, xv = data
    res = baselines.train_baseline(
        kind, x, xv, tiny_cfg(epochs=4), tmp_path / kind, seed=0
    )
    assert res["complete"] and res["epochs_done"] == 4
    hist = res["history"]
    assert hist[-1]["train_loss"] < hist[0]["train_loss"]
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    for name in ("encoder.keras", "decoder.keras", "history.csv", "provenance.json"):
        assert (tmp_path / kind / name).is_file()
    with open(tmp_path / kind / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["epoch"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[-1]["val_mse"]) == pytest.approx(hist[-1]["val_mse"], rel=1e-12)
    if kind == "vae":
        assert {"train_recon", "train_kl", "val_recon", "val_kl"} <= set(rows[0])
        assert hist[-1]["train_loss"] == pytest.approx(
            hist[-1]["train_recon"] + hist[-1]["train_kl"], rel=1e-6
        )

    enc, dec = baselines.load_models(tmp_path / kind)
    codes = baselines.encode(kind, enc, xv)
    assert codes.shape == (40, 4) and codes.dtype == np.float32
    if kind == "vae":
        assert len(enc.outputs) == 2  # [z_mean, z_log_var]
        np.testing.assert_allclose(
            codes, keras.ops.convert_to_numpy(enc(xv)[0]), rtol=1e-6
        )
    recon = baselines.reconstruct(kind, enc, dec, xv)
    # The history's val_mse is the MSE of the (posterior-mean) reconstruction.
    assert np.mean((recon - xv) ** 2) == pytest.approx(hist[-1]["val_mse"], rel=1e-4)


def test_vae_loss_decreases_over_epochs(data, tmp_path):
    x, xv = data
    res = baselines.train_baseline("vae", x, xv, tiny_cfg(epochs=5), tmp_path, seed=3)
    losses = [h["train_loss"] for h in res["history"]]
    assert losses[-1] < 0.98 * losses[0], losses


def test_same_seed_same_weights_and_seed_matters(data, tmp_path):
    x, xv = data
    baselines.train_baseline("ae", x, xv, tiny_cfg(epochs=2), tmp_path / "a", seed=5)
    baselines.train_baseline("ae", x, xv, tiny_cfg(epochs=2), tmp_path / "b", seed=5)
    baselines.train_baseline("ae", x, xv, tiny_cfg(epochs=2), tmp_path / "c", seed=6)
    wa, wb, wc = (model_weights(tmp_path / k) for k in "abc")
    assert all(np.array_equal(p, q) for p, q in zip(wa, wb))
    assert not all(np.array_equal(p, q) for p, q in zip(wa, wc))


@pytest.mark.parametrize("kind", ["vae", "ae"])
def test_interrupted_and_resumed_equals_uninterrupted(kind, data, tmp_path):
    x, xv = data
    cfg = tiny_cfg(epochs=3)
    full = baselines.train_baseline(kind, x, xv, cfg, tmp_path / "full", seed=2)

    part = baselines.train_baseline(
        kind, x, xv, cfg, tmp_path / "split", seed=2, max_epochs_this_run=1
    )
    assert not part["complete"] and part["epochs_done"] == 1
    assert not (tmp_path / "split" / "encoder.keras").exists()
    meta = baselines.load_checkpoint_meta(tmp_path / "split" / "checkpoint")
    assert (
        meta["epochs_done"] == 1 and meta["step"] == 7
    )  # ceil(200 / 32) steps per epoch

    # A new call builds fresh models, as a rerun process would, and must resume.
    rest = baselines.train_baseline(kind, x, xv, cfg, tmp_path / "split", seed=2)
    assert rest["complete"] and rest["resumed_from"] == 1
    for p, q in zip(
        model_weights(tmp_path / "full"), model_weights(tmp_path / "split")
    ):
        np.testing.assert_array_equal(p, q)
    strip = [{k: v for k, v in h.items() if k != "seconds"} for h in full["history"]]
    assert strip == [
        {k: v for k, v in h.items() if k != "seconds"} for h in rest["history"]
    ]

    # A job killed after its last checkpoint but before saving the models only re-saves them.
    (tmp_path / "split" / "encoder.keras").unlink()
    again = baselines.train_baseline(kind, x, xv, cfg, tmp_path / "split", seed=2)
    assert (
        again["complete"] and again["resumed_from"] == 3 and len(again["history"]) == 3
    )
    for p, q in zip(
        model_weights(tmp_path / "full"), model_weights(tmp_path / "split")
    ):
        np.testing.assert_array_equal(p, q)


_KILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    import numpy as np
    sys.path.insert(0, {tests!r})
    from test_baselines import synthetic_images, tiny_cfg
    from eae import baselines
    x = synthetic_images(240)
    kill_at = int(sys.argv[2])
    def hook(epoch, row):
        if epoch == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
    baselines.train_baseline("vae", x[:200], x[200:], tiny_cfg(epochs=4), sys.argv[1], seed=4, on_epoch_end=hook)
""")


def test_sigkill_then_rerun_matches_uninterrupted(tmp_path):
    """A real SIGKILL after epoch 2 (in a child process), a rerun, and an uninterrupted run agree bit for bit."""
    script = tmp_path / "job.py"
    script.write_text(_KILL_SCRIPT.format(tests=str(ROOT / "tests")))
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    out = tmp_path / "job"
    killed = subprocess.run(
        [sys.executable, str(script), str(out), "2"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    assert baselines.load_checkpoint_meta(out / "checkpoint")["epochs_done"] == 2
    assert not (out / "encoder.keras").exists()
    rerun = subprocess.run(
        [sys.executable, str(script), str(out), "0"],
        env=env,
        capture_output=True,
        timeout=120,
    )
    assert rerun.returncode == 0, rerun.stderr.decode()[-2000:]

    x = synthetic_images(240)
    baselines.train_baseline(
        "vae", x[:200], x[200:], tiny_cfg(epochs=4), tmp_path / "ref", seed=4
    )
    for p, q in zip(model_weights(tmp_path / "ref"), model_weights(out)):
        np.testing.assert_array_equal(p, q)


def test_nan_raises_and_keeps_last_good_checkpoint(data, tmp_path, monkeypatch):
    x, xv = data
    real_run_epoch = baselines._run_epoch
    calls = {"n": 0}

    def poisoned(trainer, *args):
        # Fault injection: a weight turns NaN during epoch 3, so the real step produces NaN losses.
        calls["n"] += 1
        if calls["n"] == 3:
            v = trainer.trainable[0]
            v.assign(np.full(v.shape, np.nan, np.float32))
        return real_run_epoch(trainer, *args)

    # the training loop lives in eae.experiments.images.baseline_training: patch it there
    monkeypatch.setattr(baseline_training, "_run_epoch", poisoned)
    ckpt = tmp_path / "ckpt"
    digests = {}

    def remember(epoch, row):
        digests[epoch] = hashlib.sha256((ckpt / "state.npz").read_bytes()).hexdigest()

    with pytest.raises(FloatingPointError, match=r"diverged in epoch 3.*epoch 2"):
        baselines.train_baseline(
            "vae",
            x,
            xv,
            tiny_cfg(epochs=4),
            tmp_path / "out",
            seed=0,
            checkpoint_dir=ckpt,
            on_epoch_end=remember,
        )
    assert hashlib.sha256((ckpt / "state.npz").read_bytes()).hexdigest() == digests[2]
    assert baselines.load_checkpoint_meta(ckpt)["epochs_done"] == 2
    assert not (tmp_path / "out" / "encoder.keras").exists()
    assert not list(ckpt.glob(".*tmp*"))
    # Once the fault is gone the rerun resumes from the good checkpoint.
    monkeypatch.setattr(baseline_training, "_run_epoch", real_run_epoch)
    res = baselines.train_baseline(
        "vae", x, xv, tiny_cfg(epochs=4), tmp_path / "out", seed=0, checkpoint_dir=ckpt
    )
    assert res["complete"] and res["resumed_from"] == 2


def test_real_divergence_raises_clear_error(data, tmp_path):
    # 10 is the largest rate the schema allows (mnist.vae.learning_rate), enough to diverge
    x, xv = data
    with pytest.raises(FloatingPointError, match="learning_rate"):
        baselines.train_baseline(
            "vae", x, xv, tiny_cfg(learning_rate=10.0), tmp_path, seed=0
        )
    assert not (tmp_path / "encoder.keras").exists()


def test_stale_checkpoint_from_other_seed_is_not_resumed(data, tmp_path):
    x, xv = data
    baselines.train_baseline(
        "ae", x, xv, tiny_cfg(epochs=2), tmp_path, seed=1, max_epochs_this_run=1
    )
    res = baselines.train_baseline("ae", x, xv, tiny_cfg(epochs=2), tmp_path, seed=9)
    assert res["resumed_from"] == 0 and res["complete"]


def test_full_batch_and_checkpoint_every(data, tmp_path):
    x, xv = data
    res = baselines.train_baseline(
        "ae",
        x,
        None,
        tiny_cfg(epochs=5, batch_size=0, checkpoint_every=2),
        tmp_path,
        seed=0,
        max_epochs_this_run=3,
    )
    meta = baselines.load_checkpoint_meta(tmp_path / "checkpoint")
    assert (
        meta["epochs_done"] == 3 and meta["step"] == 3
    )  # one full-batch step per epoch
    assert "val_mse" not in res["history"][0]
    res = baselines.train_baseline(
        "ae",
        x,
        None,
        tiny_cfg(epochs=5, batch_size=0, checkpoint_every=2),
        tmp_path,
        seed=0,
    )
    assert res["complete"] and res["resumed_from"] == 3
    assert baselines.load_checkpoint_meta(tmp_path / "checkpoint")["step"] == 5


def test_conv_models_train(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 1), dtype=np.float32)
    model = {
        "kind": "conv",
        "filters": [4, 8],
        "latent_dim": 3,
        "decoder_filters": [4, 4],
        "decoder_strides": [2, 2],
        "output_activation": "sigmoid",
    }
    for kind in ("vae", "ae"):
        res = baselines.train_baseline(
            kind,
            x[:32],
            x[32:],
            {"epochs": 1, "batch_size": 16, "model": model},
            tmp_path / kind,
            seed=0,
        )
        enc, dec = baselines.load_models(tmp_path / kind)
        assert baselines.reconstruct(kind, enc, dec, x[32:]).shape == (8, 8, 8, 1)
        assert np.isfinite(res["final"]["val_mse"])


@pytest.mark.parametrize(
    "kind, cfg, x_bad, match",
    [
        ("ae", {"epoch": 3}, None, r"mnist\.ae\.epoch: unknown key \(did you mean 'epochs'\?\)"),
        ("ae", {"batch_size": -1}, None, r"mnist\.ae\.batch_size: must be >= 0"),
        ("vae", {"learning_rate": 0}, None, r"mnist\.vae\.learning_rate: must be > 0"),
        ("vae", {"beta": -1.0}, None, r"mnist\.vae\.beta: must be >= 0"),
        (
            "vae",
            {"model": {**TINY_MODEL, "output_activation": "linear"}},
            None,
            "sigmoid",
        ),
        ("vae", {}, "above_one", r"\[0, 1\]"),
        ("ae", {}, "nan", "non-finite"),
        ("gan", {}, None, "kind"),
    ],
)
def test_bad_input_raises(kind, cfg, x_bad, match, data, tmp_path):
    x, xv = data
    x = x.copy()
    if x_bad == "above_one":
        x[0, 0] = 1.5
    elif x_bad == "nan":
        x[0, 0] = np.nan
    with pytest.raises(ValueError, match=match):
        baselines.train_baseline(
            kind, x, xv, {**tiny_cfg(), **cfg}, tmp_path / "out", seed=0
        )
    assert not (tmp_path / "out" / "checkpoint").exists()


def test_encode_checks_kind_against_encoder():
    from eae.models import vae_encoder

    enc = vae_encoder(6, hidden=(4,), latent_dim=2)
    with pytest.raises(ValueError, match="does not fit"):
        baselines.encode("ae", enc, np.zeros((2, 6), np.float32))


def test_config_takes_the_schema_defaults_of_its_dataset():
    """Omitted keys take the defaults of the schema section <dataset>.<kind> (MNIST when
    the caller does not say); the model block those of its own kind."""
    vae = baselines.resolve_config("vae", {"epochs": 3})
    assert vae["epochs"] == 3 and vae["batch_size"] == 32 and vae["beta"] == 1.0
    assert vae["model"] == {"kind": "mlp", "encoder_hidden": [512, 256], "latent_dim": 64,
                            "decoder_hidden": [256, 512], "activation": "relu",
                            "output_activation": "sigmoid"}
    assert baselines.resolve_config("ae", None)["epochs"] == 140
    frey = baselines.resolve_config("ae", None, "frey")
    assert frey["batch_size"] == 0 and frey["epochs"] == 4000 and frey["checkpoint_every"] == 100
    conv = baselines.resolve_config("ae", {"model": {"kind": "conv"}})["model"]
    assert conv["latent_dim"] == 256 and "encoder_hidden" not in conv
    assert baselines.resolve_config("vae", vae) == vae  # a complete block is kept as is
    with pytest.raises(ValueError, match=r"frey\.vae\.model\.latent_dim: must be >= 1"):
        baselines.resolve_config("vae", {"model": {"latent_dim": 0}}, "frey")
    with pytest.raises(ValueError, match="dataset"):
        baselines.resolve_config("vae", None, "celeba")


def test_stage_reads_a_prepared_store(tmp_path):
    """train_baseline_stage on a store laid out like eae.data's (images, split; no labels)."""
    import xarray as xr

    from eae.io import write_zarr

    images = synthetic_images(60).reshape(60, 8, 8)
    split = np.array([0] * 40 + [1] * 10 + [2] * 10, dtype=np.int8)
    ds = xr.Dataset(
        {"images": (("sample", "row", "col"), images), "split": (("sample",), split)}
    )
    store = write_zarr(ds, tmp_path / "toy.zarr", provenance={"stage": "test"})
    res = baselines.train_baseline_stage(
        "vae",
        store,
        tiny_cfg(epochs=2),
        tmp_path / "vae",
        checkpoint_dir=tmp_path / "ckpt",
    )
    assert res["complete"] and (tmp_path / "ckpt" / "state.npz").exists()
    assert not (tmp_path / "vae" / "checkpoint").exists()
    import json

    prov = json.loads((tmp_path / "vae" / "provenance.json").read_text())
    assert (
        prov["n_train"] == 40 and prov["n_val"] == 10 and str(store) in prov["inputs"]
    )
    conv = {
        "kind": "conv",
        "filters": [4],
        "latent_dim": 3,
        "decoder_filters": [4],
        "decoder_strides": [8],
        "output_activation": "sigmoid",
    }
    res = baselines.train_baseline_stage(
        "ae", store, {"epochs": 1, "model": conv}, tmp_path / "conv"
    )
    enc, _ = baselines.load_models(tmp_path / "conv")
    assert enc.input_shape == (None, 8, 8, 1)

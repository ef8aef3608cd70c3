"""Model builders: shapes, parameter counts of the paper's layers, seeding, config handling."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from eae import models  # noqa: E402


def _weights_equal(a: keras.Model, b: keras.Model) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(np.array_equal(x, y) for x, y in zip(wa, wb))


def test_mlp_paper_layers_and_shapes():
    enc = models.mlp_encoder(784)
    dec = models.mlp_decoder(64, output_dim=784)
    # SPEC §3.2: 784 → 512 → 256 → 64 and 64 → 256 → 512 → 784.
    assert enc.count_params() == 784 * 512 + 512 + 512 * 256 + 256 + 256 * 64 + 64
    assert dec.count_params() == 64 * 256 + 256 + 256 * 512 + 512 + 512 * 784 + 784
    x = np.random.default_rng(0).random((5, 784), dtype=np.float32)
    z = enc(x)
    assert z.shape == (5, 64)
    out = keras.ops.convert_to_numpy(dec(z))
    assert out.shape == (5, 784)
    assert np.all((out > 0) & (out < 1))  # sigmoid output


def test_vae_encoder_has_mean_and_log_var_outputs():
    enc = models.vae_encoder(560, hidden=(16,), latent_dim=3)
    mean, log_var = enc(np.zeros((4, 560), np.float32))
    assert mean.shape == (4, 3) and log_var.shape == (4, 3)
    assert [t.shape for t in enc.outputs] == [(None, 3), (None, 3)]


def test_same_seed_same_weights_different_seed_different():
    a = models.mlp_encoder(20, hidden=(8, 6), latent_dim=3, seed=7)
    b = models.mlp_encoder(20, hidden=(8, 6), latent_dim=3, seed=7)
    c = models.mlp_encoder(20, hidden=(8, 6), latent_dim=3, seed=8)
    assert _weights_equal(a, b)
    assert not _weights_equal(a, c)
    # Same-shaped layers of different models built with one seed must not coincide.
    d1 = models.mlp_decoder(5, hidden=(5,), output_dim=5, seed=1, name="decoder")
    e1 = models.mlp_encoder(5, hidden=(5,), latent_dim=5, seed=1, name="encoder")
    assert not np.array_equal(d1.get_weights()[0], e1.get_weights()[0])
    # Layers within one model get distinct seeds too.
    sq = models.mlp_encoder(6, hidden=(6, 6), latent_dim=6, seed=3)
    kernels = [w for w in sq.get_weights() if w.ndim == 2]
    assert not np.array_equal(kernels[0], kernels[1])


def test_conv_paper_architecture_64x64x3():
    enc = models.conv_encoder((64, 64, 3), latent_dim=256, seed=0)
    dec = models.conv_decoder(256, (64, 64, 3), seed=0)
    assert [enc.get_layer(f"conv_{i}").output.shape[1:] for i in range(4)] == [
        (32, 32, 32),
        (16, 16, 64),
        (8, 8, 128),
        (4, 4, 256),
    ]
    assert enc.output_shape == (None, 256)
    assert dec.get_layer("dense").units == 1024
    assert dec.get_layer("reshape").output.shape[1:] == (4, 4, 64)
    assert dec.get_layer("deconv_0").output.shape[1:] == (16, 16, 64)
    assert dec.get_layer("deconv_1").output.shape[1:] == (64, 64, 32)
    assert dec.output_shape == (None, 64, 64, 3)
    out = keras.ops.convert_to_numpy(
        dec(np.random.default_rng(0).normal(size=(2, 256)).astype("f4"))
    )
    assert out.min() >= 0.0  # ReLU output, as in the paper


@pytest.mark.parametrize("shape", [(25, 25, 1), (8, 8, 1), (28, 20, 1), (64, 48, 3)])
def test_conv_decoder_produces_requested_size(shape):
    enc, dec = models.build_from_config(
        {"kind": "conv", "filters": [4, 8], "latent_dim": 5, "decoder_filters": [4, 4]},
        shape,
        seed=0,
    )
    x = np.zeros((2,) + shape, np.float32)
    assert enc(x).shape == (2, 5)
    assert dec(enc(x)).shape == (2,) + shape


def test_logits_model_matches_decoder_output():
    dec = models.mlp_decoder(3, hidden=(4,), output_dim=6, seed=2)
    z = np.random.default_rng(1).normal(size=(7, 3)).astype(np.float32)
    logits = keras.ops.convert_to_numpy(models.decoder_logits_model(dec)(z))
    np.testing.assert_allclose(
        1 / (1 + np.exp(-logits)),
        keras.ops.convert_to_numpy(dec(z)),
        rtol=1e-5,
        atol=1e-6,
    )
    assert models.output_activation_of(dec) == "sigmoid"


def test_build_from_config_mlp_flattens_image_shape_and_variational():
    cfg = {"kind": "mlp", "encoder_hidden": [8], "latent_dim": 2, "decoder_hidden": [8]}
    enc, dec = models.build_from_config(cfg, (28, 20), seed=0, variational=True)
    assert enc.input_shape == (None, 560)
    assert len(enc.outputs) == 2
    assert dec.output_shape == (None, 560)
    e2, d2 = models.build_from_config(cfg, 560, seed=0, variational=True)
    assert _weights_equal(enc, e2) and _weights_equal(dec, d2)


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"kind": "rnn"}, "kind"),
        ({"kind": "mlp", "filterz": [3]}, r"model\.filterz: unknown key \(did you mean 'filters'\?\)"),
        ({"kind": "mlp", "latent_dim": 0}, "latent_dim"),
        ({"kind": "mlp", "activation": "swishy"}, r"model\.activation: must be one of"),
        (
            {"kind": "conv", "decoder_filters": [4], "decoder_strides": [4, 4]},
            "differ in length",
        ),
    ],
)
def test_bad_model_config_raises(bad, match):
    with pytest.raises(ValueError, match=match):
        models.build_from_config(bad, (8, 8, 1), seed=0)


def test_each_kind_takes_its_schema_defaults():
    """mlp: the image experiments' block (SPEC §3.2); conv: the faces block (SPEC §3.3)."""
    assert models.validate_model_config({}) == {
        "kind": "mlp", "encoder_hidden": [512, 256], "latent_dim": 64,
        "decoder_hidden": [256, 512], "activation": "relu", "output_activation": "sigmoid"}
    conv = models.validate_model_config({"kind": "conv", "latent_dim": 8})
    assert conv == {"kind": "conv", "filters": [32, 64, 128, 256], "kernel": 4, "latent_dim": 8,
                    "decoder_base_channels": 64, "decoder_filters": [64, 32],
                    "decoder_strides": [4, 4], "decoder_kernel": 4, "activation": "relu",
                    "output_activation": "relu"}
    assert models.validate_model_config(conv) == conv
    assert models.validate_model_config({"encoder_hidden": (4,)})["encoder_hidden"] == [4]


def test_other_kind_keys_are_dropped():
    cfg = models.validate_model_config({"kind": "mlp", "filters": [3], "latent_dim": 5})
    assert (
        "filters" not in cfg
        and cfg["latent_dim"] == 5
        and cfg["encoder_hidden"] == [512, 256]
    )
    conv = models.validate_model_config({"kind": "conv", "encoder_hidden": [3]})
    assert "encoder_hidden" not in conv and conv["filters"] == [32, 64, 128, 256]


def test_reshape_for_model():
    x = np.arange(2 * 12, dtype=np.float64).reshape(2, 12)
    assert models.reshape_for_model(x, {"kind": "mlp"}, (3, 4)).shape == (2, 12)
    y = models.reshape_for_model(x, {"kind": "conv"}, (3, 4))
    assert y.shape == (2, 3, 4, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(y[1, 2, 3, 0], x[1, 11])


def test_saved_model_round_trip(tmp_path):
    enc = models.vae_encoder(10, hidden=(4,), latent_dim=2, seed=3)
    path = tmp_path / "enc.keras"
    enc.save(path)
    loaded = keras.models.load_model(path, compile=False)
    x = np.random.default_rng(0).random((3, 10), dtype=np.float32)
    for a, b in zip(enc(x), loaded(x)):
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(a), keras.ops.convert_to_numpy(b)
        )

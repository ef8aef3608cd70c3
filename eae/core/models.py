"""Seeded Keras 3 builders for the encoders and decoders of SPEC §3.2–3.3.

Every builder takes an explicit ``seed``. Each layer gets its own initializer seed,
derived from ``(seed, model name, layer name)``, so building the same model twice
with the same seed gives bit-identical weights, and an encoder and a decoder built
with the same seed still start from unrelated weights.

Layer naming convention shared by all decoders: the last affine layer is called
``logits`` (linear) and is followed by an ``Activation`` layer called ``output``.
The VAE trainer uses the ``logits`` tensor for a numerically stable binary
cross-entropy (see :func:`decoder_logits_model`).

Variational encoders (``variational=True``, and :func:`vae_encoder`) are models with
**two outputs**, ``[z_mean, z_log_var]``, each of shape ``(batch, latent_dim)``; this
is the paper's "2 × latent" encoder written as two heads on a shared trunk (one
Dense(2·latent) split in half is the same function class).
"""

from __future__ import annotations

import math
import zlib
from typing import Any, Mapping, Sequence

import numpy as np

from eae.support.runtime import keras

layers = keras.layers

__all__ = [
    "mlp_encoder",
    "mlp_decoder",
    "vae_encoder",
    "conv_encoder",
    "conv_decoder",
    "build_from_config",
    "validate_model_config",
    "model_input_shape",
    "reshape_for_model",
    "decoder_logits_model",
    "output_activation_of",
    "layer_seed",
    "KIND_KEYS",
    "KIND_SECTIONS",
    "CONV_MIN_SIDE",
    "resolve_model",
]

#: The keys of an architecture block that each kind uses. The schema lists both kinds'
#: keys in one block (a config may switch kinds) and cannot say which ones a kind
#: ignores; their defaults live in the schema sections of :data:`KIND_SECTIONS`.
KIND_KEYS: dict[str, tuple[str, ...]] = {
    "mlp": ("kind", "encoder_hidden", "latent_dim", "decoder_hidden", "activation",
            "output_activation"),
    "conv": ("kind", "filters", "kernel", "latent_dim", "decoder_base_channels",
             "decoder_filters", "decoder_strides", "decoder_kernel", "activation",
             "output_activation"),
}

#: Where each kind's defaults live: the image experiments' block (SPEC §3.2:
#: 784 → 512 → 256 → 64 → 256 → 512 → 784, sigmoid output) for mlp, the faces
#: experiment's block (SPEC §3.3: latent 256, every transposed convolution ReLU) for conv.
KIND_SECTIONS = {"mlp": "mnist.vae.model", "conv": "faces.model"}

#: The smallest image side from which ``kind: auto`` picks the conv architecture.
CONV_MIN_SIDE = 32

#: The block that holds the keys of both kinds (types, ranges and unknown keys are
#: checked against it).
_BLOCK_SECTION = "mnist.vae.model"

_ACTIVATIONS = {
    "relu",
    "elu",
    "tanh",
    "sigmoid",
    "linear",
    "softplus",
    "gelu",
    "selu",
    "leaky_relu",
}


def layer_seed(seed: int, *names: str) -> int:
    """A 31-bit initializer seed for one layer, derived from ``seed`` and its names.

    SeedSequence mixes the base seed with a CRC of the names, so neighbouring base
    seeds and same-shaped layers in different models do not share initial weights.
    """
    key = zlib.crc32("/".join(names).encode())
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, key]).generate_state(1)[0]
    return int(state) & 0x7FFFFFFF


def _kernel_init(seed: int, *names: str) -> keras.initializers.Initializer:
    # Keras' default kernel initializer, made reproducible.
    return keras.initializers.GlorotUniform(seed=layer_seed(seed, *names))


def _dense(
    units: int, activation: str | None, seed: int, model: str, name: str
) -> layers.Dense:
    return layers.Dense(
        int(units),
        activation=activation,
        kernel_initializer=_kernel_init(seed, model, name),
        bias_initializer="zeros",
        name=name,
    )


def _check_activation(name: str, value: str) -> None:
    if value not in _ACTIVATIONS:
        raise ValueError(
            f"unknown activation {name}={value!r}; choose one of {sorted(_ACTIVATIONS)}"
        )


def _latent_heads(h, latent_dim: int, variational: bool, seed: int, name: str):
    """Linear latent layer(s): one code, or a (mean, log-variance) pair."""
    if not variational:
        return _dense(latent_dim, None, seed, name, "z")(h)
    z_mean = _dense(latent_dim, None, seed, name, "z_mean")(h)
    z_log_var = _dense(latent_dim, None, seed, name, "z_log_var")(h)
    return [z_mean, z_log_var]


def mlp_encoder(
    input_dim: int,
    hidden: Sequence[int] = (512, 256),
    latent_dim: int = 64,
    activation: str = "relu",
    seed: int = 0,
    name: str = "encoder",
    variational: bool = False,
) -> keras.Model:
    """Dense encoder ``input_dim → hidden… → latent_dim`` (hidden: ``activation``, output linear).

    With ``variational=True`` the model has two outputs ``[z_mean, z_log_var]``.
    """
    _check_activation("activation", activation)
    inputs = keras.Input(shape=(int(input_dim),), name=f"{name}_input")
    h = inputs
    for i, units in enumerate(hidden):
        h = _dense(units, activation, seed, name, f"hidden_{i}")(h)
    outputs = _latent_heads(h, int(latent_dim), variational, seed, name)
    return keras.Model(inputs, outputs, name=name)


def vae_encoder(
    input_dim: int,
    hidden: Sequence[int] = (512, 256),
    latent_dim: int = 64,
    activation: str = "relu",
    seed: int = 0,
    name: str = "encoder",
) -> keras.Model:
    """MLP VAE encoder: a model with **two outputs** ``[z_mean, z_log_var]`` (each ``latent_dim``)."""
    return mlp_encoder(
        input_dim, hidden, latent_dim, activation, seed, name, variational=True
    )


def mlp_decoder(
    latent_dim: int,
    hidden: Sequence[int] = (256, 512),
    output_dim: int | None = None,
    activation: str = "relu",
    output_activation: str = "sigmoid",
    seed: int = 0,
    name: str = "decoder",
) -> keras.Model:
    """Dense decoder ``latent_dim → hidden… → output_dim``.

    The output is a linear layer ``logits`` followed by ``Activation(output_activation)``.
    """
    if output_dim is None:
        raise ValueError("mlp_decoder needs output_dim (the number of pixels)")
    _check_activation("activation", activation)
    _check_activation("output_activation", output_activation)
    inputs = keras.Input(shape=(int(latent_dim),), name=f"{name}_input")
    h = inputs
    for i, units in enumerate(hidden):
        h = _dense(units, activation, seed, name, f"hidden_{i}")(h)
    logits = _dense(output_dim, None, seed, name, "logits")(h)
    outputs = layers.Activation(output_activation, name="output")(logits)
    return keras.Model(inputs, outputs, name=name)


def conv_encoder(
    input_shape: Sequence[int] = (64, 64, 3),
    filters: Sequence[int] = (32, 64, 128, 256),
    kernel: int = 4,
    latent_dim: int = 256,
    seed: int = 0,
    activation: str = "relu",
    name: str = "encoder",
    variational: bool = False,
) -> keras.Model:
    """SPEC §3.3 encoder: Conv2D(f, kernel, stride 2, same, ReLU) per ``filters`` → flatten → Dense latent (linear).

    Works for any input size (stride-2 "same" convolutions round up).
    With ``variational=True`` the model has two outputs ``[z_mean, z_log_var]``.
    """
    _check_activation("activation", activation)
    shape = tuple(int(s) for s in input_shape)
    if len(shape) != 3:
        raise ValueError(
            f"conv_encoder input_shape must be (rows, cols, channels), got {input_shape}"
        )
    inputs = keras.Input(shape=shape, name=f"{name}_input")
    h = inputs
    for i, f in enumerate(filters):
        h = layers.Conv2D(
            int(f),
            int(kernel),
            strides=2,
            padding="same",
            activation=activation,
            kernel_initializer=_kernel_init(seed, name, f"conv_{i}"),
            bias_initializer="zeros",
            name=f"conv_{i}",
        )(h)
    h = layers.Flatten(name="flatten")(h)
    outputs = _latent_heads(h, int(latent_dim), variational, seed, name)
    return keras.Model(inputs, outputs, name=name)


def conv_decoder(
    latent_dim: int = 256,
    output_shape: Sequence[int] = (64, 64, 3),
    seed: int = 0,
    base_channels: int = 64,
    filters: Sequence[int] = (64, 32),
    strides: Sequence[int] = (4, 4),
    kernel: int = 4,
    activation: str = "relu",
    output_activation: str = "relu",
    name: str = "decoder",
) -> keras.Model:
    """SPEC §3.3 decoder: Dense(ReLU) → reshape grid × ``base_channels`` →
    Conv2DTranspose(f, stride s, same, ReLU) per ``filters``/``strides`` →
    Conv2DTranspose(channels, stride 1) ``logits`` → [centre crop] → ``output_activation``.

    Output size: the transposed convolutions upsample by ``U = prod(strides)`` (16 by
    default), so the reshape grid is ``(ceil(rows/U), ceil(cols/U))`` and the Dense layer
    has ``grid_rows·grid_cols·base_channels`` units. For 64 × 64 this is exactly the
    paper's Dense 1024 → 4 × 4 × 64 → 16 × 16 → 64 × 64; for other sizes the
    ``16·grid`` image is centre-cropped to the requested size (e.g. 25 × 25 from a
    2 × 2 grid: 32 × 32 → crop 25 × 25), keeping every layer type of the paper.
    Channels follow ``output_shape`` (1 for grayscale).
    """
    _check_activation("activation", activation)
    _check_activation("output_activation", output_activation)
    rows, cols, channels = (int(s) for s in output_shape)
    if len(filters) != len(strides):
        raise ValueError(
            f"conv_decoder: filters {list(filters)} and strides {list(strides)} differ in length"
        )
    up = int(np.prod([int(s) for s in strides])) if len(strides) else 1
    grid_r, grid_c = math.ceil(rows / up), math.ceil(cols / up)
    inputs = keras.Input(shape=(int(latent_dim),), name=f"{name}_input")
    h = _dense(grid_r * grid_c * base_channels, activation, seed, name, "dense")(inputs)
    h = layers.Reshape((grid_r, grid_c, int(base_channels)), name="reshape")(h)
    for i, (f, s) in enumerate(zip(filters, strides)):
        h = layers.Conv2DTranspose(
            int(f),
            int(kernel),
            strides=int(s),
            padding="same",
            activation=activation,
            kernel_initializer=_kernel_init(seed, name, f"deconv_{i}"),
            bias_initializer="zeros",
            name=f"deconv_{i}",
        )(h)
    h = layers.Conv2DTranspose(
        channels,
        int(kernel),
        strides=1,
        padding="same",
        activation=None,
        kernel_initializer=_kernel_init(seed, name, "logits"),
        bias_initializer="zeros",
        name="logits",
    )(h)
    extra_r, extra_c = grid_r * up - rows, grid_c * up - cols
    if extra_r or extra_c:
        h = layers.Cropping2D(
            (
                (extra_r // 2, extra_r - extra_r // 2),
                (extra_c // 2, extra_c - extra_c // 2),
            ),
            name="crop",
        )(h)
    outputs = layers.Activation(output_activation, name="output")(h)
    return keras.Model(inputs, outputs, name=name)


def decoder_logits_model(decoder: keras.Model) -> keras.Model:
    """A model sharing ``decoder``'s weights that returns the pre-activation output.

    Requires the builders' convention: last layer ``Activation`` named ``output``.
    """
    last = decoder.layers[-1]
    if not isinstance(last, layers.Activation):
        raise ValueError(
            f"decoder {decoder.name!r} does not end in an Activation layer; cannot get logits"
        )
    return keras.Model(decoder.input, last.input, name=f"{decoder.name}_logits")


def output_activation_of(decoder: keras.Model) -> str:
    """Name of the decoder's output activation (e.g. ``'sigmoid'``), or ``'unknown'``."""
    last = decoder.layers[-1]
    if isinstance(last, layers.Activation):
        return getattr(last.activation, "__name__", "unknown")
    return "unknown"


def validate_model_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Fill defaults into an architecture block and reject unknown keys or bad values.

    The block is checked against the schema's architecture block (keys of both kinds;
    a :class:`eae.support.config.ConfigError` names ``model.<key>``); keys that belong
    to the other kind (e.g. ``filters`` in an ``mlp`` block) are dropped, and the
    missing keys of the block's kind take that kind's defaults (:data:`KIND_SECTIONS`).
    The workflow passes complete blocks, so for it only the dropping happens.
    """
    from eae.support.config import section

    cfg = dict(cfg or {})
    section(_BLOCK_SECTION, cfg, where="model")  # types, ranges, unknown keys, kind
    kind = cfg.get("kind", "mlp")
    keys = KIND_KEYS[kind]
    filled = section(KIND_SECTIONS[kind], {k: v for k, v in cfg.items() if k in keys},
                     where="model")
    return {k: filled[k] for k in keys}


def is_image_shape(sample_shape: Sequence[int]) -> bool:
    """Whether a sample of this shape is an image: (rows, cols) or (rows, cols, 1 | 3)."""
    shape = tuple(int(s) for s in sample_shape)
    return len(shape) == 2 or (len(shape) == 3 and shape[2] in (1, 3))


def resolve_model(cfg: Mapping[str, Any], sample_shape: Sequence[int],
                  unit_interval: bool) -> dict[str, Any]:
    """A concrete architecture block for one whose ``kind`` or ``output_activation`` may
    be ``auto`` (a ``datasets:`` entry, :func:`eae.fit`), for samples of ``sample_shape``.

    ``kind: auto`` is conv for images (:func:`is_image_shape`) whose smaller side is at
    least :data:`CONV_MIN_SIDE`, mlp otherwise (vectors, small images);
    ``output_activation: auto`` is sigmoid when the data lie in [0, 1]
    (``unit_interval``), linear otherwise, so the decoder can reach every value. Keys of
    the other kind are dropped; a conv block for non-image samples is an error.
    """
    c = dict(cfg)
    shape = tuple(int(s) for s in sample_shape)
    if c.get("kind", "auto") == "auto":
        big_image = is_image_shape(shape) and min(shape[:2]) >= CONV_MIN_SIDE
        c["kind"] = "conv" if big_image else "mlp"
    if c["kind"] == "conv" and not is_image_shape(shape):
        raise ValueError(f"model.kind conv needs images (rows, cols[, 1 or 3 channels]); "
                         f"the samples have shape {shape}")
    if c.get("output_activation", "auto") == "auto":
        c["output_activation"] = "sigmoid" if unit_interval else "linear"
    return {k: c[k] for k in KIND_KEYS[c["kind"]] if k in c}


def model_input_shape(
    cfg: Mapping[str, Any], image_shape: Sequence[int]
) -> tuple[int, ...]:
    """What the model takes for images of ``image_shape`` = (rows, cols[, channels]).

    mlp → ``(rows·cols·channels,)``; conv → ``(rows, cols, channels)`` (channels 1 if absent).
    A 1-element ``image_shape`` (already flat) is only valid for mlp.
    """
    kind = dict(cfg or {}).get("kind", "mlp")
    shape = tuple(int(s) for s in image_shape)
    if kind == "mlp":
        return (int(np.prod(shape)),)
    if len(shape) == 2:
        shape = shape + (1,)
    if len(shape) != 3:
        raise ValueError(
            f"conv models need image_shape (rows, cols[, channels]), got {image_shape}"
        )
    return shape


def reshape_for_model(
    x: np.ndarray, cfg: Mapping[str, Any], image_shape: Sequence[int]
) -> np.ndarray:
    """Reshape a batch of images (flat or not) to the model's input layout, as float32."""
    shape = model_input_shape(cfg, image_shape)
    x = np.asarray(x, dtype=np.float32)
    return x.reshape((x.shape[0],) + shape)


def build_from_config(
    cfg: Mapping[str, Any],
    input_shape: int | Sequence[int],
    seed: int = 0,
    variational: bool = False,
) -> tuple[keras.Model, keras.Model]:
    """(encoder, decoder) for an architecture block and the model's input shape.

    ``input_shape``: mlp → ``d`` or ``(d,)`` (or an image shape, flattened);
    conv → ``(rows, cols, channels)``. ``variational=True`` gives the two-output
    ``[z_mean, z_log_var]`` encoder. Example block::

        {"kind": "mlp", "encoder_hidden": [512, 256], "latent_dim": 64,
         "decoder_hidden": [256, 512], "activation": "relu", "output_activation": "sigmoid"}
    """
    c = validate_model_config(cfg)
    shape = (
        (int(input_shape),)
        if isinstance(input_shape, (int, np.integer))
        else tuple(int(s) for s in input_shape)
    )
    if c["kind"] == "mlp":
        dim = int(np.prod(shape))
        enc = mlp_encoder(
            dim,
            c["encoder_hidden"],
            c["latent_dim"],
            c["activation"],
            seed,
            "encoder",
            variational,
        )
        dec = mlp_decoder(
            c["latent_dim"],
            c["decoder_hidden"],
            dim,
            c["activation"],
            c["output_activation"],
            seed,
            "decoder",
        )
        return enc, dec
    shape = model_input_shape(c, shape)
    enc = conv_encoder(
        shape,
        c["filters"],
        c["kernel"],
        c["latent_dim"],
        seed,
        c["activation"],
        "encoder",
        variational,
    )
    dec = conv_decoder(
        c["latent_dim"],
        shape,
        seed,
        c["decoder_base_channels"],
        c["decoder_filters"],
        c["decoder_strides"],
        c["decoder_kernel"],
        c["activation"],
        c["output_activation"],
        "decoder",
    )
    return enc, dec

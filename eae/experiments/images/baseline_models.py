"""The baseline autoencoders of SPEC §3.2 as models: a β-VAE (binary cross-entropy on
sigmoid outputs + β·KL, single-sample ELBO; for data outside [0, 1] of the ``datasets:``
section, a unit-variance Gaussian likelihood instead) and a vanilla (MSE) autoencoder — their
losses and compiled train / eval steps (:class:`_Trainer`), one epoch of training, and
encoding / decoding with trained models. The training loop, its checkpoints and the
config are in :mod:`eae.experiments.images.baseline_training`.

No random state is carried from step to step; everything random is a pure function of
``(seed, counter)``: the shuffle of epoch ``e`` is ``numpy.random.default_rng([seed, 1, e])``
(:func:`epoch_permutation`); the VAE's reparameterisation noise at optimizer step ``s`` is
``tf.random.stateless_normal(seed=[noise_seed, s])`` with ``noise_seed`` derived from
``seed``; validation noise uses a second derived seed and the batch index.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from eae.core.models import decoder_logits_model, output_activation_of
from eae.support.runtime import keras, tf

__all__ = ["KINDS", "epoch_permutation", "encode", "decode", "reconstruct", "load_models"]

log = logging.getLogger("eae")

KINDS = ("vae", "ae")

# Salts that separate the independent random streams derived from one seed.
_SHUFFLE_STREAM = 1
_NOISE_STREAM = 2
_VAL_NOISE_STREAM = 3


def _derived_seed(seed: int, stream: int) -> int:
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0] & 0x7FFFFFFF)


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The sample order of (0-based) ``epoch``: a pure function of ``(seed, epoch)``."""
    return np.random.default_rng([int(seed), _SHUFFLE_STREAM, int(epoch)]).permutation(
        n
    )


# --------------------------------------------------------------------------- trainer


class _Trainer:
    """Holds the models, the optimizer and the compiled train / eval steps."""

    def __init__(
        self,
        kind: str,
        encoder: keras.Model,
        decoder: keras.Model,
        cfg: Mapping[str, Any],
        seed: int,
        sample_shape: tuple[int, ...],
    ):
        self.kind = kind
        self.encoder = encoder
        self.decoder = decoder
        self.beta = float(cfg.get("beta", 0.0))
        self.optimizer = keras.optimizers.Adam(learning_rate=cfg["learning_rate"])
        self.trainable = list(encoder.trainable_variables) + list(
            decoder.trainable_variables
        )
        # Build the Adam slots now so they exist before tracing and can be restored.
        self.optimizer.build(self.trainable)
        self.noise_seed = _derived_seed(seed, _NOISE_STREAM)
        self.val_noise_seed = _derived_seed(seed, _VAL_NOISE_STREAM)
        # Bernoulli: BCE on sigmoid outputs (data in [0, 1]); gaussian: unit variance.
        self.likelihood = cfg.get("likelihood", "bernoulli")
        if kind == "vae" and self.likelihood == "bernoulli":
            act = output_activation_of(decoder)
            if act != "sigmoid":
                raise ValueError(
                    f"the VAE's binary cross-entropy needs sigmoid decoder outputs; model.output_activation is {act!r}"
                )
            self.logits_model = decoder_logits_model(decoder)
        # float64 running sums (loss, recon, kl, samples): exact enough over 50k samples.
        self.acc = tf.Variable(tf.zeros(4, tf.float64), trainable=False)
        # Fixed signatures: one trace each, whatever the (last, partial) batch size.
        x_spec = tf.TensorSpec((None,) + tuple(sample_shape), tf.float32)
        self.train_step = tf.function(
            self._train_step, input_signature=[x_spec, tf.TensorSpec([None], tf.int32)]
        )
        self.eval_step = tf.function(
            self._eval_step, input_signature=[x_spec, tf.TensorSpec([], tf.int64)]
        )

    # Losses are per-batch means of per-sample sums (VAE) or of per-pixel errors (AE).
    def _losses(self, x, noise_seed_pair, training: bool):
        flat_x = tf.reshape(x, [tf.shape(x)[0], -1])
        if self.kind == "ae":
            x_hat = self.decoder(self.encoder(x, training=training), training=training)
            mse = tf.reduce_mean(
                tf.square(flat_x - tf.reshape(x_hat, tf.shape(flat_x)))
            )
            return mse, mse, tf.zeros_like(mse)
        z_mean, z_log_var = self.encoder(x, training=training)
        eps = tf.random.stateless_normal(
            tf.shape(z_mean), seed=noise_seed_pair, dtype=z_mean.dtype
        )
        # Reparameterisation trick, one sample per data point (single-sample ELBO).
        z = z_mean + tf.exp(0.5 * z_log_var) * eps
        if self.likelihood == "gaussian":
            # -log N(x; x_hat, 1) up to its constant: half the squared error per sample.
            x_hat = tf.reshape(self.decoder(z, training=training), tf.shape(flat_x))
            recon = 0.5 * tf.reduce_sum(tf.square(flat_x - x_hat), axis=1)
        else:
            logits = tf.reshape(self.logits_model(z, training=training), tf.shape(flat_x))
            recon = tf.reduce_sum(
                tf.nn.sigmoid_cross_entropy_with_logits(labels=flat_x, logits=logits),
                axis=1,
            )
        kl = -0.5 * tf.reduce_sum(
            1.0 + z_log_var - tf.square(z_mean) - tf.exp(z_log_var), axis=1
        )
        recon, kl = tf.reduce_mean(recon), tf.reduce_mean(kl)
        return recon + self.beta * kl, recon, kl

    def _train_step(self, x_all, idx):
        x = tf.gather(x_all, idx)
        seed_pair = tf.stack(
            [
                tf.constant(self.noise_seed, tf.int64),
                tf.cast(self.optimizer.iterations, tf.int64),
            ]
        )
        with tf.GradientTape() as tape:
            loss, recon, kl = self._losses(x, seed_pair, training=True)
        grads = tape.gradient(loss, self.trainable)
        self.optimizer.apply_gradients(zip(grads, self.trainable))
        b = tf.cast(tf.shape(x)[0], tf.float64)
        self.acc.assign_add(
            tf.stack(
                [
                    tf.cast(loss, tf.float64) * b,
                    tf.cast(recon, tf.float64) * b,
                    tf.cast(kl, tf.float64) * b,
                    b,
                ]
            )
        )

    def _eval_step(self, x, batch_index):
        """Sums over the batch of (loss, recon, kl, squared error of the mean reconstruction, samples)."""
        seed_pair = tf.stack(
            [tf.constant(self.val_noise_seed, tf.int64), tf.cast(batch_index, tf.int64)]
        )
        loss, recon, kl = self._losses(x, seed_pair, training=False)
        code = self.encoder(x, training=False)
        if self.kind == "vae":
            code = code[0]  # posterior mean
        x_hat = self.decoder(code, training=False)
        flat_x = tf.reshape(x, [tf.shape(x)[0], -1])
        sq = tf.reduce_sum(
            tf.square(
                tf.cast(flat_x, tf.float64)
                - tf.cast(tf.reshape(x_hat, tf.shape(flat_x)), tf.float64)
            )
        )
        b = tf.cast(tf.shape(x)[0], tf.float64)
        return tf.stack(
            [
                tf.cast(loss, tf.float64) * b,
                tf.cast(recon, tf.float64) * b,
                tf.cast(kl, tf.float64) * b,
                sq,
                b,
            ]
        )

    def evaluate(self, x: np.ndarray, batch_size: int) -> dict[str, float]:
        total = np.zeros(5)
        for k, start in enumerate(range(0, x.shape[0], batch_size)):
            batch = tf.convert_to_tensor(x[start : start + batch_size])
            total += self.eval_step(batch, tf.constant(k, tf.int64)).numpy()
        n, pixels = total[4], int(np.prod(x.shape[1:]))
        out = {
            "val_loss": float(total[0] / n),
            "val_mse": float(total[3] / (n * pixels)),
        }
        if self.kind == "vae":
            out.update(val_recon=float(total[1] / n), val_kl=float(total[2] / n))
        return out

    def weights_finite(self) -> bool:
        return all(bool(np.all(np.isfinite(v.numpy()))) for v in self.trainable)

    def state_arrays(self) -> dict[str, np.ndarray]:
        arrays = {}
        for prefix, variables in (
            ("enc", self.encoder.weights),
            ("dec", self.decoder.weights),
            ("opt", self.optimizer.variables),
        ):
            for i, v in enumerate(variables):
                arrays[f"{prefix}_{i:04d}"] = np.asarray(v.numpy())
        return arrays

    def restore_arrays(self, arrays: Mapping[str, np.ndarray], source: Path) -> None:
        for prefix, variables in (
            ("enc", self.encoder.weights),
            ("dec", self.decoder.weights),
            ("opt", self.optimizer.variables),
        ):
            keys = sorted(k for k in arrays if k.startswith(prefix + "_"))
            if len(keys) != len(variables):
                raise ValueError(
                    f"checkpoint {source}: {len(keys)} '{prefix}' arrays, model has {len(variables)}"
                )
            for key, v in zip(keys, variables):
                if tuple(arrays[key].shape) != tuple(v.shape):
                    raise ValueError(
                        f"checkpoint {source}: {key} has shape {arrays[key].shape}, expected {v.shape}"
                    )
                v.assign(arrays[key])


def _run_epoch(
    trainer: _Trainer, x_all: tf.Tensor, order: np.ndarray, batch_size: int
) -> dict[str, float]:
    """One pass over the training data in ``order``; returns the sample-weighted mean losses."""
    trainer.acc.assign(tf.zeros(4, tf.float64))
    for start in range(0, order.shape[0], batch_size):
        trainer.train_step(
            x_all, tf.constant(order[start : start + batch_size], tf.int32)
        )
    loss_sum, recon_sum, kl_sum, n = trainer.acc.numpy()
    out = {"train_loss": float(loss_sum / n)}
    if trainer.kind == "vae":
        out.update(train_recon=float(recon_sum / n), train_kl=float(kl_sum / n))
    return out


def encode(
    kind: str, encoder: keras.Model, x: np.ndarray, batch_size: int = 1024
) -> np.ndarray:
    """Latent codes of ``x`` as float32 ``[n, latent]``; for the VAE, the posterior mean."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    two_outputs = len(encoder.outputs) == 2
    if two_outputs != (kind == "vae"):
        raise ValueError(
            f"encoder {encoder.name!r} has {len(encoder.outputs)} output(s), which does not fit {kind!r}"
        )
    x = np.asarray(x, dtype=np.float32)
    parts = []
    for start in range(0, x.shape[0], batch_size):
        out = encoder(x[start : start + batch_size], training=False)
        parts.append(keras.ops.convert_to_numpy(out[0] if two_outputs else out))
    return (
        np.concatenate(parts, axis=0)
        if parts
        else np.zeros((0,) + tuple(encoder.outputs[0].shape[1:]), "f4")
    )


def decode(decoder: keras.Model, z: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """Decoder outputs for codes ``z`` (float32, the decoder's output layout)."""
    z = np.asarray(z, dtype=np.float32)
    parts = [
        keras.ops.convert_to_numpy(decoder(z[s : s + batch_size], training=False))
        for s in range(0, z.shape[0], batch_size)
    ]
    return np.concatenate(parts, axis=0)


def reconstruct(
    kind: str,
    encoder: keras.Model,
    decoder: keras.Model,
    x: np.ndarray,
    batch_size: int = 1024,
) -> np.ndarray:
    """``decoder(encode(x))``; for the VAE the posterior mean is decoded (no sampling)."""
    return decode(decoder, encode(kind, encoder, x, batch_size), batch_size)


def load_models(out_dir: str | os.PathLike) -> tuple[keras.Model, keras.Model]:
    """(encoder, decoder) saved by :func:`train_baseline` in ``out_dir``."""
    out_dir = Path(out_dir)
    models = []
    for name in ("encoder.keras", "decoder.keras"):
        path = out_dir / name
        if not path.exists():
            raise FileNotFoundError(f"baseline model not found: {path}")
        models.append(keras.models.load_model(path, compile=False))
    return models[0], models[1]

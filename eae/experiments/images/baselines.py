"""Baseline autoencoders of SPEC §3.2: a β-VAE and a vanilla (MSE) autoencoder.

Training is a custom loop with a ``tf.function`` train step, checkpointed every
``checkpoint_every`` epochs so that a job killed at any moment (even by SIGKILL) and
rerun resumes where it stopped and, on CPU with the same seed, ends with the same
weights as an uninterrupted run.

Reproducibility design: no random state is carried from step to step. Everything
random is a pure function of ``(seed, counter)``:

* initial weights: per-layer seeds derived from ``seed`` (:mod:`eae.core.models`);
* the shuffle of epoch ``e``: ``numpy.random.default_rng([seed, 1, e])``;
* the VAE's reparameterisation noise at optimizer step ``s``:
  ``tf.random.stateless_normal(seed=[noise_seed, s])`` with ``noise_seed`` derived from
  ``seed``; validation noise uses a second derived seed and the batch index.

A checkpoint therefore only needs the weights, the Adam state (its ``iterations``
counter is the step ``s``), the number of finished epochs and the history. It is one
``.npz`` file written to a temporary name and moved into place with ``os.replace``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import numpy as np

from eae.support.runtime import keras, tf

from eae.core.models import (
    MLP_DEFAULTS,
    build_from_config,
    decoder_logits_model,
    output_activation_of,
    reshape_for_model,
    validate_model_config,
)
from eae.support.io import atomic_path
from eae.support.progress import Progress
from eae.support.provenance import make_record, now_iso, write_sidecar

__all__ = [
    "DEFAULTS",
    "KINDS",
    "resolve_config",
    "train_baseline",
    "encode",
    "decode",
    "reconstruct",
    "load_models",
    "load_checkpoint_meta",
    "train_baseline_stage",
]

log = logging.getLogger("eae")

KINDS = ("vae", "ae")
CHECKPOINT_FILE = "state.npz"
CHECKPOINT_VERSION = 1

_ARCH = dict(MLP_DEFAULTS)  # SPEC §3.2: 784 → 512 → 256 → 64 → 256 → 512 → 784

#: Paper-scale defaults (SPEC §3.2, MNIST). ``batch_size: 0`` means full batch.
DEFAULTS: dict[str, dict[str, Any]] = {
    "vae": {
        "epochs": 70,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "beta": 1.0,
        "seed": 0,
        "checkpoint_every": 1,
        "eval_batch_size": 1024,
        "log_every_s": 5.0,
        "deterministic_ops": False,
        "model": dict(_ARCH),
    },
    "ae": {
        "epochs": 140,
        "batch_size": 32,
        "learning_rate": 1e-3,
        "seed": 0,
        "checkpoint_every": 1,
        "eval_batch_size": 1024,
        "log_every_s": 5.0,
        "deterministic_ops": False,
        "model": dict(_ARCH),
    },
}

# Keys that do not change the trajectory: a checkpoint stays valid if they change.
_NON_TRAJECTORY_KEYS = (
    "epochs",
    "checkpoint_every",
    "eval_batch_size",
    "log_every_s",
    "deterministic_ops",
)

# Salts that separate the independent random streams derived from one seed.
_SHUFFLE_STREAM = 1
_NOISE_STREAM = 2
_VAL_NOISE_STREAM = 3


# --------------------------------------------------------------------------- config


def _check_int(name: str, value: Any, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_float(name: str, value: Any, minimum: float, strict: bool) -> float:
    ok = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(
        value, bool
    )
    if ok:
        value = float(value)
        ok = math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        raise ValueError(
            f"{name} must be a finite number {'>' if strict else '>='} {minimum}, got {value!r}"
        )
    return value


def resolve_config(kind: str, cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` merged over :data:`DEFAULTS` for ``kind``, validated (clear errors on bad keys/values)."""
    if kind not in KINDS:
        raise ValueError(f"baseline kind must be one of {KINDS}, got {kind!r}")
    cfg = dict(cfg or {})
    defaults = DEFAULTS[kind]
    unknown = sorted(set(cfg) - set(defaults))
    if unknown:
        raise ValueError(
            f"unknown config key(s) for baseline {kind!r}: {unknown}; allowed: {sorted(defaults)}"
        )
    out = {**defaults, **cfg}
    # validate_model_config fills the defaults of the block's own kind (mlp or conv).
    out["model"] = validate_model_config(cfg.get("model") or {})
    out["epochs"] = _check_int(f"{kind}.epochs", out["epochs"], 1)
    out["batch_size"] = _check_int(f"{kind}.batch_size", out["batch_size"], 0)
    out["seed"] = _check_int(f"{kind}.seed", out["seed"], 0)
    out["checkpoint_every"] = _check_int(
        f"{kind}.checkpoint_every", out["checkpoint_every"], 1
    )
    out["eval_batch_size"] = _check_int(
        f"{kind}.eval_batch_size", out["eval_batch_size"], 1
    )
    out["learning_rate"] = _check_float(
        f"{kind}.learning_rate", out["learning_rate"], 0.0, strict=True
    )
    out["log_every_s"] = _check_float(
        f"{kind}.log_every_s", out["log_every_s"], 0.0, strict=False
    )
    if not isinstance(out["deterministic_ops"], bool):
        raise ValueError(
            f"{kind}.deterministic_ops must be true or false, got {out['deterministic_ops']!r}"
        )
    if kind == "vae":
        out["beta"] = _check_float("vae.beta", out["beta"], 0.0, strict=False)
    return out


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
        if kind == "vae":
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


# --------------------------------------------------------------------------- files


def _atomic_write_bytes(path: Path, write: Callable[[Any], None]) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        write(fh)
        fh.flush()
        os.fsync(fh.fileno())


def _history_columns(kind: str) -> list[str]:
    cols = ["epoch", "train_loss"]
    if kind == "vae":
        cols += ["train_recon", "train_kl"]
    cols += ["val_loss", "val_mse"]
    if kind == "vae":
        cols += ["val_recon", "val_kl"]
    return cols + ["seconds"]


def _write_history(path: Path, kind: str, history: list[dict[str, Any]]) -> None:
    cols = _history_columns(kind)

    def write(fh):
        buf = io.StringIO()
        writer = csv.DictWriter(
            buf, fieldnames=cols, extrasaction="ignore", lineterminator="\n"
        )
        writer.writeheader()
        for row in history:
            writer.writerow(
                {
                    k: repr(float(v)) if isinstance(v, float) else v
                    for k, v in row.items()
                }
            )
        fh.write(buf.getvalue().encode())

    _atomic_write_bytes(path, write)


def _save_checkpoint(
    ckpt_dir: Path, trainer: _Trainer, meta: Mapping[str, Any]
) -> None:
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    arrays = trainer.state_arrays()
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    _atomic_write_bytes(ckpt_dir / CHECKPOINT_FILE, lambda fh: np.savez(fh, **arrays))


def load_checkpoint_meta(ckpt_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The metadata of the checkpoint in ``ckpt_dir`` (epochs done, step, history…), or None."""
    path = Path(ckpt_dir) / CHECKPOINT_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return json.loads(str(data["meta"]))
    except Exception as exc:  # a hand-edited or foreign file: say which, do not guess
        raise ValueError(
            f"checkpoint {path} is unreadable ({exc}); delete it to start training over"
        ) from exc


def _save_model(model: keras.Model, path: Path) -> None:
    # Keras insists on the .keras suffix, which atomic_path's temporary name keeps.
    with atomic_path(path) as tmp:
        model.save(tmp)


def _fingerprint(
    kind: str, cfg: Mapping[str, Any], x_train: np.ndarray, x_val: np.ndarray | None
) -> str:
    """What determines the training trajectory (config, seed, data, code):
    :func:`eae.support.provenance.fingerprint`."""
    from eae.support.provenance import fingerprint

    relevant = {k: v for k, v in cfg.items() if k not in _NON_TRAJECTORY_KEYS}
    return fingerprint({"kind": kind, "cfg": relevant, "version": CHECKPOINT_VERSION},
                       [x_train, x_val], ["eae.experiments.images.baselines"])


def _check_data(
    name: str, x: Any, kind: str, allow_none: bool = False
) -> np.ndarray | None:
    if x is None:
        if allow_none:
            return None
        raise ValueError(f"{name} is required")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim not in (2, 4) or x.shape[0] == 0:
        raise ValueError(
            f"{name} must be [n, pixels] or [n, rows, cols, channels] with n > 0, got shape {x.shape}"
        )
    if not np.all(np.isfinite(x)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if kind == "vae" and (x.min() < 0.0 or x.max() > 1.0):
        raise ValueError(
            f"{name} must lie in [0, 1] for the VAE's binary cross-entropy "
            f"(found [{x.min():.4g}, {x.max():.4g}])"
        )
    return x


# --------------------------------------------------------------------------- public API


def train_baseline(
    kind: str,
    x_train: np.ndarray,
    x_val: np.ndarray | None,
    cfg: Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    seed: int | None = None,
    *,
    checkpoint_dir: str | os.PathLike | None = None,
    max_epochs_this_run: int | None = None,
    inputs: Iterable[str | os.PathLike] = (),
    on_epoch_end: Callable[[int, dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Train a baseline (``"vae"`` or ``"ae"``), resuming from its checkpoint if there is one.

    ``x_train`` / ``x_val``: float32 arrays laid out as the model expects
    (``[n, pixels]`` for ``model.kind: mlp``, ``[n, rows, cols, channels]`` for conv);
    ``x_val`` may be None. ``cfg``: the ``vae`` / ``ae`` config block (see
    :data:`DEFAULTS`); ``seed`` overrides ``cfg["seed"]`` when given.

    Writes ``out_dir/encoder.keras`` (VAE: two outputs ``[z_mean, z_log_var]``),
    ``out_dir/decoder.keras``, ``out_dir/history.csv`` (one row per epoch) and
    ``out_dir/provenance.json``. The checkpoint lives in ``checkpoint_dir``
    (default ``out_dir/checkpoint``); keep it outside a Snakemake ``directory()``
    output, which Snakemake deletes before rerunning a failed job.

    ``max_epochs_this_run`` stops after that many epochs in this call (a checkpoint
    is written at the stop; the final models are not) — the hook that tests and
    time-limited jobs use. ``on_epoch_end(epoch, row)`` is called after each epoch's
    checkpoint (if one is due). A non-finite training loss or weight raises
    ``FloatingPointError`` and leaves the last good checkpoint untouched.

    Returns ``{"kind", "complete", "epochs_done", "history", "final", "out_dir",
    "checkpoint_dir", "resumed_from"}`` plus the output paths once complete.
    """
    started = now_iso()
    cfg = resolve_config(kind, cfg)
    if seed is not None:
        cfg["seed"] = _check_int("seed", seed, 0)
    seed = cfg["seed"]
    x_train = _check_data("x_train", x_train, kind)
    x_val = _check_data("x_val", x_val, kind, allow_none=True)
    if x_val is not None and x_val.shape[1:] != x_train.shape[1:]:
        raise ValueError(
            f"x_val shape {x_val.shape[1:]} differs from x_train shape {x_train.shape[1:]}"
        )
    if max_epochs_this_run is not None:
        max_epochs_this_run = _check_int("max_epochs_this_run", max_epochs_this_run, 1)
    out_dir = Path(out_dir)
    ckpt_dir = (
        Path(checkpoint_dir) if checkpoint_dir is not None else out_dir / "checkpoint"
    )
    out_dir.mkdir(parents=True, exist_ok=True)

    n_train = x_train.shape[0]
    batch_size = n_train if cfg["batch_size"] == 0 else min(cfg["batch_size"], n_train)
    encoder, decoder = build_from_config(
        cfg["model"], x_train.shape[1:], seed=seed, variational=(kind == "vae")
    )
    trainer = _Trainer(kind, encoder, decoder, cfg, seed, x_train.shape[1:])
    fingerprint = _fingerprint(kind, cfg, x_train, x_val)

    epochs_done, history = _maybe_resume(trainer, ckpt_dir, fingerprint, cfg["epochs"])
    resumed_from = epochs_done
    x_all = tf.convert_to_tensor(x_train)
    progress = Progress(
        cfg["epochs"],
        f"train {kind}",
        logger=log,
        every_s=cfg["log_every_s"],
        start=epochs_done,
    )
    log.info(
        "%s: %d train / %s val samples, batch %d, %d epochs, seed %d, %s",
        kind,
        n_train,
        "no" if x_val is None else x_val.shape[0],
        batch_size,
        cfg["epochs"],
        seed,
        f"resuming after epoch {epochs_done}" if epochs_done else "fresh start",
    )

    ran = 0
    while epochs_done < cfg["epochs"]:
        if max_epochs_this_run is not None and ran >= max_epochs_this_run:
            break
        t0 = time.monotonic()
        row: dict[str, Any] = {"epoch": epochs_done + 1}
        row.update(
            _run_epoch(
                trainer,
                x_all,
                epoch_permutation(seed, epochs_done, n_train),
                batch_size,
            )
        )
        if not math.isfinite(row["train_loss"]) or not trainer.weights_finite():
            last = load_checkpoint_meta(ckpt_dir)
            kept = f"epoch {last['epochs_done']}" if last else "none yet"
            raise FloatingPointError(
                f"{kind} training diverged in epoch {epochs_done + 1}: train_loss={row['train_loss']} "
                f"(or non-finite weights). Last good checkpoint kept in {ckpt_dir} ({kept}); "
                f"try a smaller learning_rate (now {cfg['learning_rate']}) or check the input data."
            )
        if x_val is not None:
            row.update(trainer.evaluate(x_val, cfg["eval_batch_size"]))
        row["seconds"] = time.monotonic() - t0
        history.append(row)
        epochs_done += 1
        ran += 1
        stopping = max_epochs_this_run is not None and ran >= max_epochs_this_run
        if (
            epochs_done % cfg["checkpoint_every"] == 0
            or epochs_done == cfg["epochs"]
            or stopping
        ):
            meta = {
                "version": CHECKPOINT_VERSION,
                "kind": kind,
                "fingerprint": fingerprint,
                "seed": seed,
                "epochs_done": epochs_done,
                "step": int(trainer.optimizer.iterations.numpy()),
                "rng": {
                    "scheme": "counter-based: shuffle rng([seed,1,epoch]); noise stateless([noise_seed, step])",
                    "next_epoch": epochs_done,
                    "noise_seed": trainer.noise_seed,
                },
                "history": history,
                "saved": now_iso(),
            }
            _save_checkpoint(ckpt_dir, trainer, meta)
            _write_history(out_dir / "history.csv", kind, history)
        msg = " ".join(
            f"{k}={v:.5g}" for k, v in row.items() if k not in ("epoch", "seconds")
        )
        progress.update(epochs_done, msg, force=epochs_done == cfg["epochs"])
        if on_epoch_end is not None:
            on_epoch_end(epochs_done, row)

    result: dict[str, Any] = {
        "kind": kind,
        "complete": epochs_done >= cfg["epochs"],
        "epochs_done": epochs_done,
        "history": history,
        "final": history[-1] if history else None,
        "out_dir": str(out_dir),
        "checkpoint_dir": str(ckpt_dir),
        "resumed_from": resumed_from,
    }
    if not result["complete"]:
        log.info(
            "%s: stopped after epoch %d of %d (checkpoint in %s)",
            kind,
            epochs_done,
            cfg["epochs"],
            ckpt_dir,
        )
        return result

    _write_history(out_dir / "history.csv", kind, history)
    _save_model(encoder, out_dir / "encoder.keras")
    _save_model(decoder, out_dir / "decoder.keras")
    record = make_record(
        f"train_baseline_{kind}",
        config=cfg,
        seeds={
            "seed": seed,
            "noise_seed": trainer.noise_seed,
            "val_noise_seed": trainer.val_noise_seed,
        },
        inputs=inputs,
        started=started,
        extra={
            "epochs_done": epochs_done,
            "resumed_from_epoch": resumed_from,
            "final": history[-1],
            "n_train": n_train,
            "n_val": 0 if x_val is None else int(x_val.shape[0]),
            "batch_size": batch_size,
        },
    )
    write_sidecar(record, out_dir / "provenance.json")
    result.update(
        encoder_path=str(out_dir / "encoder.keras"),
        decoder_path=str(out_dir / "decoder.keras"),
        history_path=str(out_dir / "history.csv"),
        provenance_path=str(out_dir / "provenance.json"),
    )
    log.info(
        "%s: done, %s",
        kind,
        " ".join(f"{k}={v:.5g}" for k, v in history[-1].items() if k != "epoch"),
    )
    return result


def _maybe_resume(
    trainer: _Trainer, ckpt_dir: Path, fingerprint: str, epochs: int
) -> tuple[int, list]:
    """Restore the checkpoint if it belongs to this run; return (epochs done, history)."""
    meta = load_checkpoint_meta(ckpt_dir)
    if meta is None:
        return 0, []
    path = ckpt_dir / CHECKPOINT_FILE
    if (
        meta.get("version") != CHECKPOINT_VERSION
        or meta.get("fingerprint") != fingerprint
    ):
        log.warning(
            "checkpoint %s was made with another config, seed or data set; starting fresh "
            "(it is overwritten at the first checkpoint)",
            path,
        )
        return 0, []
    if meta["epochs_done"] > epochs:
        log.warning(
            "checkpoint %s is past the requested %d epochs (%d done); starting fresh",
            path,
            epochs,
            meta["epochs_done"],
        )
        return 0, []
    with np.load(path, allow_pickle=False) as data:
        trainer.restore_arrays({k: data[k] for k in data.files if k != "meta"}, path)
    if int(trainer.optimizer.iterations.numpy()) != meta["step"]:
        raise ValueError(
            f"checkpoint {path}: optimizer step {int(trainer.optimizer.iterations.numpy())} "
            f"!= recorded step {meta['step']}"
        )
    return int(meta["epochs_done"]), list(meta["history"])


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


def train_baseline_stage(
    kind: str,
    data_path: str | os.PathLike,
    cfg: Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Workflow stage: train baseline ``kind`` on a prepared dataset store.

    Reads the train and val splits with :func:`eae.experiments.images.data.load_split`, lays them out
    for ``cfg["model"]["kind"]`` (flat for mlp, ``rows × cols × 1`` for conv) and
    calls :func:`train_baseline`, recording the store's checksum in the provenance.
    ``deterministic_ops: true`` turns on TensorFlow's op determinism for the whole
    process (needed for bit-reproducible GPU runs; CPU runs are reproducible anyway).
    """
    from eae.experiments.images.data import load_split  # the data module is only needed by this stage
    from eae.support.io import open_zarr

    cfg = resolve_config(kind, cfg)
    if cfg["deterministic_ops"]:
        tf.config.experimental.enable_op_determinism()
    image_shape = tuple(int(s) for s in open_zarr(data_path)["images"].shape[1:])
    x_train, _ = load_split(data_path, "train")
    x_val, _ = load_split(data_path, "val")
    if x_train.shape[0] == 0:
        raise ValueError(f"{data_path} has no training samples")
    x_train = reshape_for_model(x_train, cfg["model"], image_shape)
    x_val = (
        reshape_for_model(x_val, cfg["model"], image_shape) if x_val.shape[0] else None
    )
    log.info(
        "%s: data %s, images %s, train %s, val %s",
        kind,
        data_path,
        image_shape,
        x_train.shape,
        None if x_val is None else x_val.shape,
    )
    return train_baseline(
        kind,
        x_train,
        x_val,
        cfg,
        out_dir,
        checkpoint_dir=checkpoint_dir,
        inputs=[data_path],
    )

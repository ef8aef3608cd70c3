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

This module holds the loop, the checkpoints and the config of a baseline; the models,
losses and train steps are in :mod:`eae.experiments.images.baseline_models`, the workflow
stage in :mod:`eae.experiments.images.baselines`.
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

from eae.core.models import build_from_config, validate_model_config
from eae.experiments.images.baseline_models import (
    KINDS,
    _Trainer,
    _run_epoch,
    epoch_permutation,
)
from eae.support.io import atomic_path
from eae.support.progress import Progress
from eae.support.provenance import make_record, now_iso, write_sidecar
from eae.support.runtime import keras, tf

__all__ = ["DATASETS", "resolve_config", "train_baseline", "load_checkpoint_meta"]

log = logging.getLogger("eae")

#: The datasets whose config sections (``<dataset>.vae``, ``<dataset>.ae``) hold a
#: baseline's defaults.
DATASETS = ("mnist", "frey")
CHECKPOINT_FILE = "state.npz"
CHECKPOINT_VERSION = 1

# Keys that do not change the trajectory: a checkpoint stays valid if they change.
_NON_TRAJECTORY_KEYS = (
    "epochs",
    "checkpoint_every",
    "eval_batch_size",
    "log_every_s",
    "deterministic_ops",
)


# --------------------------------------------------------------------------- config


def _check_int(name: str, value: Any, minimum: int) -> int:
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, np.integer))
        or value < minimum
    ):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def resolve_config(kind: str, cfg: Mapping[str, Any] | None, dataset: str = "mnist") -> dict[str, Any]:
    """``cfg`` as the config section ``<dataset>.<kind>`` (``mnist.vae``, ``frey.ae``):
    filled with that section's schema defaults (``eae/schemas/baselines.schema.yaml``)
    and checked against it; a :class:`eae.support.config.ConfigError` (a ValueError)
    names the key. The workflow passes complete blocks, so ``dataset`` only picks the
    defaults of a direct call (and the key the messages name); callers that do not know
    the dataset get MNIST's, the paper's settings (Frey: full batch, more epochs). The
    ``model`` block takes the defaults of its own kind
    (:func:`eae.core.models.validate_model_config`: mlp or conv). Any other ``dataset``
    is an entry of the ``datasets:`` section (``datasets.<dataset>.<kind>``, whose VAE
    has a ``likelihood``)."""
    from eae.support.config import section

    if kind not in KINDS:
        raise ValueError(f"baseline kind must be one of {KINDS}, got {kind!r}")
    if dataset not in DATASETS:  # a dataset of the datasets: section; its model block is shared
        cfg = dict(cfg or {})
        model = cfg.pop("model", None) or {}
        out = section(f"datasets.{dataset}.{kind}", cfg)
        if out.get("likelihood") == "auto":
            raise ValueError(f"datasets.{dataset}.{kind}.likelihood: 'auto' must be resolved "
                             f"from the data first (train_baseline_stage does)")
        out["model"] = validate_model_config(model)
        return out
    out = section(f"{dataset}.{kind}", cfg)
    # the section's model block carries the keys of both kinds; keep the block's own kind's
    out["model"] = validate_model_config(dict(cfg or {}).get("model") or {})
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
    name: str, x: Any, kind: str, allow_none: bool = False, likelihood: str = "bernoulli"
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
    if kind == "vae" and likelihood == "bernoulli" and (x.min() < 0.0 or x.max() > 1.0):
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
    dataset: str = "mnist",
) -> dict[str, Any]:
    """Train a baseline (``"vae"`` or ``"ae"``), resuming from its checkpoint if there is one.

    ``x_train`` / ``x_val``: float32 arrays laid out as the model expects
    (``[n, pixels]`` for ``model.kind: mlp``, ``[n, rows, cols, channels]`` for conv);
    ``x_val`` may be None. ``cfg``: the ``vae`` / ``ae`` config block, its missing keys
    taken from the schema section ``<dataset>.<kind>`` (:func:`resolve_config`; MNIST's
    unless ``dataset`` says otherwise); ``seed`` overrides ``cfg["seed"]`` when given.

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
    cfg = resolve_config(kind, cfg, dataset)
    if seed is not None:
        cfg["seed"] = _check_int("seed", seed, 0)
    seed = cfg["seed"]
    likelihood = cfg.get("likelihood", "bernoulli")
    x_train = _check_data("x_train", x_train, kind, likelihood=likelihood)
    x_val = _check_data("x_val", x_val, kind, allow_none=True, likelihood=likelihood)
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
        f"images_train_baseline_{kind}",
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

"""Baseline autoencoders of SPEC §3.2: a β-VAE and a vanilla (MSE) autoencoder.

Three modules: :mod:`eae.experiments.images.baseline_models` (the models, their losses
and train steps, encoding and decoding), :mod:`eae.experiments.images.baseline_training`
(the config, the checkpointed training loop that a killed job resumes, bit-identical on
CPU) and this one, the workflow stage :func:`train_baseline_stage`, which re-exports the
other two (the names this module had before the split).
"""

from __future__ import annotations

import logging
import os
from typing import Any, Mapping

from eae.experiments.images.baseline_models import (  # noqa: F401 (re-exported)
    _NOISE_STREAM,
    _SHUFFLE_STREAM,
    _VAL_NOISE_STREAM,
    KINDS,
    _derived_seed,
    _run_epoch,
    _Trainer,
    decode,
    encode,
    epoch_permutation,
    load_models,
    reconstruct,
)
from eae.experiments.images.baseline_training import (  # noqa: F401 (re-exported)
    _NON_TRAJECTORY_KEYS,
    CHECKPOINT_FILE,
    CHECKPOINT_VERSION,
    DATASETS,
    _atomic_write_bytes,
    _check_data,
    _check_int,
    _fingerprint,
    _history_columns,
    _maybe_resume,
    _save_checkpoint,
    _save_model,
    _write_history,
    load_checkpoint_meta,
    resolve_config,
    train_baseline,
)
from eae.core.models import (  # noqa: F401 (re-exported: imported here before the split)
    build_from_config,
    decoder_logits_model,
    output_activation_of,
    reshape_for_model,
    validate_model_config,
)
from eae.support.runtime import keras, tf  # noqa: F401 (re-exported)

__all__ = [
    "KINDS",
    "DATASETS",
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


def resolved_for_data(kind: str, cfg: Mapping[str, Any], image_shape, unit_interval: bool
                      ) -> dict[str, Any]:
    """A ``datasets:`` entry's baseline block with its ``auto`` settings decided by the
    data: the architecture (:func:`eae.core.models.resolve_model`) and the VAE's
    likelihood (Bernoulli for data in [0, 1], Gaussian otherwise)."""
    from eae.core.models import resolve_model

    out = dict(cfg)
    out["model"] = resolve_model(out.get("model") or {}, image_shape, unit_interval)
    if kind == "vae" and out.get("likelihood", "auto") == "auto":
        out["likelihood"] = "bernoulli" if unit_interval else "gaussian"
    return out


def train_baseline_stage(
    kind: str,
    data_path: str | os.PathLike,
    cfg: Mapping[str, Any] | None,
    out_dir: str | os.PathLike,
    checkpoint_dir: str | os.PathLike | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Workflow stage: train baseline ``kind`` on a prepared dataset store.

    Reads the train and val splits with :func:`eae.experiments.images.data.load_split`, lays them out
    for ``cfg["model"]["kind"]`` (flat for mlp, ``rows × cols × 1`` for conv) and
    calls :func:`train_baseline`, recording the store's checksum in the provenance.
    ``deterministic_ops: true`` turns on TensorFlow's op determinism for the whole
    process (needed for bit-reproducible GPU runs; CPU runs are reproducible anyway).
    ``dataset`` (default: the store's ``dataset`` attribute, MNIST if it names neither
    mnist nor frey) picks the schema section whose defaults fill ``cfg``
    (:func:`resolve_config`); the workflow passes complete blocks.
    """
    from eae.experiments.images.data import load_split, sample_shape
    from eae.support.io import open_zarr

    store = open_zarr(data_path)
    if dataset is None:
        dataset = store.attrs.get("dataset")
        if dataset not in DATASETS and "data_kind" not in store.attrs:
            dataset = "mnist"  # a store of neither built-in set nor a datasets: entry
    image_shape = sample_shape(store)
    if dataset not in DATASETS:
        cfg = resolved_for_data(kind, cfg, image_shape, bool(store.attrs.get("unit_interval", True)))
    cfg = resolve_config(kind, cfg, dataset)
    if cfg["deterministic_ops"]:
        tf.config.experimental.enable_op_determinism()
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
        dataset=dataset,
    )

"""The faces EAE (SPEC §3.3) on the experiment scaffold: one convolutional EAE per
temperature of ``faces.temperatures``, trained on uint8 images scaled on the fly
(:func:`uint8_mse_loss`); :data:`FACES` is its :class:`eae.experiments.base.ExperimentSpec`.
Stages :func:`train_faces_stage` and :func:`ensemble_faces_stage` (test-face latents of
M encoder samples, decoder frozen, streamed to Zarr).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
import pandas as pd
import xarray as xr

from eae.experiments.faces.data import load_faces, to_float
from eae.experiments.images.data import DataError
from eae.support.io import temperature_tag

log = logging.getLogger("eae")

# --------------------------------------------------------------------------- training


def temperature_from_tag(tag: str, temperatures: Iterable[float]) -> float:
    """The configured temperature whose :func:`temperature_tag` is ``tag``."""
    temperatures = [float(t) for t in temperatures]
    tags = temperature_tags({"temperatures": temperatures})
    if tag not in tags:
        raise ValueError(f"temperature {tag!r} is not in faces.temperatures {tags}")
    return temperatures[tags.index(tag)]


def temperature_tags(cfg: Mapping[str, Any]) -> list[str]:
    """Path tags of ``faces.temperatures`` (checked to be distinct)."""
    temperatures = [float(t) for t in cfg["temperatures"]]
    tags = [temperature_tag(t) for t in temperatures]
    if len(set(tags)) != len(tags):
        raise ValueError(f"faces.temperatures {temperatures} are not distinct at 7 significant digits")
    return tags


def train_config(cfg: Mapping[str, Any], temperature: float) -> dict[str, Any]:
    """What one EAE's training depends on: model, sampler (with this temperature), train.

    The other temperatures are left out, so adding one to the list retrains nothing."""
    sampler = {**dict(cfg.get("sampler", {})), "temperature": float(temperature)}
    factor = sampler.pop("final_temperature_factor", None)
    if factor is not None:
        sampler["final_temperature"] = float(temperature) * float(factor)
    return {
        "temperature": float(temperature),
        "model": {**dict(cfg.get("model", {})), "kind": "conv"},
        "sampler": sampler,
        "train": dict(cfg.get("train", {})),
    }


def ensemble_config(cfg: Mapping[str, Any], temperature: float) -> dict[str, Any]:
    """:func:`train_config` plus the ``ensemble`` block."""
    return {**train_config(cfg, temperature), "ensemble": dict(cfg.get("ensemble", {}))}


def uint8_mse_loss(encoder, decoder, batch):
    """Mean squared error per pixel of uint8 images, scaled to [0, 1] on the fly."""
    from eae.support.runtime import tf

    from eae.core.chains import chain_mean, chains_of

    x = tf.cast(batch[0], tf.float32) * (1.0 / 255.0)
    err = tf.square(decoder(encoder(x, training=False), training=False) - x)
    return chain_mean(err, chains_of(encoder))


def faces_trainer(run_cfg: Mapping[str, Any], data_path):
    """An :class:`eae.core.trainer.EAETrainer` of the SPEC §3.3 conv EAE for one temperature
    (``run_cfg`` from :func:`train_config`); channels and size follow the data."""
    from eae.core.models import build_from_config
    from eae.core.sampler import SimmeringConfig
    from eae.core.trainer import EAETrainer, TrainSettings, build_chain_encoder

    train = load_faces(data_path, "train")
    if len(train) == 0:
        raise DataError(f"{data_path}: no training images")
    n_val = run_cfg["train"].get("val_images", 256)
    val = load_faces(data_path, "val", limit=n_val) if n_val else None
    seed = int(run_cfg["train"].get("seed", 0))
    shape = train.images.shape[1:]
    _, decoder = build_from_config(run_cfg["model"], shape, seed=seed)
    encoder = build_chain_encoder(lambda s: build_from_config(run_cfg["model"], shape, seed=s)[0],
                                  int(run_cfg["train"].get("chains", 1)), seed)
    trainer = EAETrainer(
        encoder, decoder, [train.images],
        SimmeringConfig.from_dict(run_cfg["sampler"], "faces.sampler"),
        TrainSettings.from_dict(run_cfg["train"], "faces.train", ignore=("val_images",)),
        loss_fn=uint8_mse_loss,
        val_arrays=[val.images] if val is not None and len(val) else None,
    )
    return trainer


def _faces_trainer(run_cfg: Mapping[str, Any], data_path):
    return faces_trainer(run_cfg, data_path), None


def _describe(trainer, splits, run_cfg) -> str:
    return (f"faces EAE T = {run_cfg['temperature']:g}: {trainer.n_train} training images "
            f"{tuple(trainer.train[0].shape[1:])}, {trainer.steps_per_update} encoder steps per "
            f"decoder update, N_f = {trainer.sampler.n_dof}")


def train_faces_stage(run_cfg: Mapping[str, Any], data_path, out_dir, checkpoint_dir=None) -> pd.DataFrame:
    """Stage ``train_faces_eae``: train one temperature's EAE (``run_cfg`` from
    :func:`train_config`, resuming from ``checkpoint_dir``) and save encoder.keras,
    decoder.keras, final_state.npz and history.csv (per decoder update: member-loss
    mean, min, max and quantiles) — :func:`eae.experiments.base.train_stage` of :data:`FACES`."""
    from eae.experiments.base import train_stage

    return train_stage(FACES, run_cfg, data_path, out_dir, checkpoint_dir)


def _recording(trainer, splits, run_cfg, data_path):
    """Latents of the first ``ensemble.n_test`` test faces per member, with a divergence
    guard; per sample ``store_index`` / ``source_index`` of the face."""
    from eae.support.runtime import tf

    from eae.experiments.base import Recording
    from eae.core.trainer import TrainingDiverged

    ens = run_cfg["ensemble"]
    test = load_faces(data_path, "test", limit=ens["n_test"])
    if len(test) == 0:
        raise DataError(f"{data_path}: no test images")
    x_test = tf.constant(to_float(test.images))
    batch = int(ens["batch_size"])
    encode_batch = tf.function(lambda x: trainer.encoder.encode_each(x))  # [C, n, latent]
    weights_finite = tf.function(lambda: tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(v)) for v in trainer.enc_vars]))

    def record():
        z = np.concatenate([encode_batch(x_test[s : s + batch]).numpy()
                            for s in range(0, len(test), batch)], axis=1)
        # ReLU maps NaN to 0 on CPU, so NaN weights can hide behind finite codes: check all
        if not (np.all(np.isfinite(z)) and bool(weights_finite())
                and np.all(np.isfinite(trainer.state.ke2.numpy()))):
            # sample_ensemble has no divergence guard of its own; raising here aborts the
            # store, so a diverged chain never leaves NaN codes behind as a result
            raise TrainingDiverged(
                f"non-finite encoder weights or latent codes while sampling the ensemble at T = {run_cfg['temperature']:g} "
                "(the chain diverged with the decoder frozen); lower the temperature or dt, "
                "or raise the mass")
        return {"latent": (("sample", "unit"), z)}

    static = xr.Dataset(
        {"store_index": ("sample", test.store_index.astype(np.int64)),
         "source_index": ("sample", test.source_index)},
        coords={"sample": np.arange(len(test)),
                "unit": np.arange(int(trainer.encoder.output_shape[-1]))},
    )
    return Recording(record, static, ("latent",))


def ensemble_faces_stage(run_cfg: Mapping[str, Any], data_path, model_dir, out_path) -> Path:
    """Stage ``faces_ensemble``: latents of the first ``ensemble.n_test`` test faces
    under M encoder samples (decoder frozen, continuing the training chain), streamed
    to Zarr: latent (member, sample, unit), latent_mean (sample, unit), and per sample
    ``store_index`` / ``source_index`` of the face — :func:`eae.core.ensemble.ensemble_stage`
    of :data:`FACES`."""
    from eae.core.ensemble import ensemble_stage

    return ensemble_stage(FACES, run_cfg, data_path, model_dir, out_path)


def _spec():
    from eae.experiments.base import ExperimentSpec

    return ExperimentSpec(name="faces", module="eae.experiments.faces.eae", trainer=_faces_trainer,
                          recording=_recording, train_name="faces_train_eae",
                          ensemble_name="faces_ensemble", describe=_describe)


#: One temperature's faces EAE as an :class:`eae.experiments.base.ExperimentSpec`.
FACES = _spec()



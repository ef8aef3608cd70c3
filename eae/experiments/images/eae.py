"""The image experiments' EAE (MNIST, Frey Faces) on the experiment scaffold.

:data:`IMAGES` is their :class:`eae.experiments.base.ExperimentSpec`: an MLP or conv
EAE (:func:`eae.core.models.build_from_config`) with the plain reconstruction MSE on a
prepared dataset store, each ensemble member recording the test-set latents of every
chain. Stage ``train_eae`` is :func:`train_images_stage`; stage ``ensemble`` is
:func:`eae.core.ensemble.ensemble_stage` of :data:`IMAGES` (kept out of this module, so
that editing the ensemble code reruns no training).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from eae.core import sampler as simmering
from eae.core.trainer import EAETrainer, TrainSettings, build_chain_encoder, mse_loss
from eae.support.runtime import tf


def image_trainer(cfg: dict, data_path) -> tuple[EAETrainer, dict]:
    """An :class:`EAETrainer` for an image dataset store and an EAE config block
    (``model``, ``sampler``, ``train`` sections). Also returns the loaded splits."""
    from eae.experiments.images.data import load_split, sample_shape
    from eae.core.models import build_from_config, reshape_for_model, resolve_model
    from eae.support.io import open_zarr

    store = open_zarr(data_path)
    shape = sample_shape(store)
    # kind / output activation 'auto' (datasets: entries) follow the data; concrete
    # blocks (MNIST, Frey) pass unchanged.
    model = resolve_model(cfg["model"], shape, bool(store.attrs.get("unit_interval", True)))
    splits = {}
    for name in ("train", "val", "test"):
        x, labels = load_split(data_path, name)
        splits[name] = (reshape_for_model(x, model, shape), labels)
    x_train = splits["train"][0]
    seed = cfg["train"]["seed"]
    _, decoder = build_from_config(model, x_train.shape[1:], seed=seed)
    encoder = build_chain_encoder(
        lambda s: build_from_config(model, x_train.shape[1:], seed=s)[0],
        cfg["train"].get("chains", 1), seed)
    trainer = EAETrainer(
        encoder, decoder, [x_train],
        simmering.SimmeringConfig.from_dict(cfg["sampler"]),
        TrainSettings.from_dict(cfg["train"]),
        loss_fn=mse_loss,
        val_arrays=[splits["val"][0]] if len(splits["val"][0]) else None,
    )
    return trainer, splits


def _describe_images(trainer, splits, cfg) -> str:
    return (f"EAE: {trainer.n_train} training samples, {trainer.steps_per_update} encoder "
            f"steps per decoder update, N_f = {trainer.sampler.n_dof}")


def _image_recording(trainer, splits, cfg, data_path):
    """Test-set latents [C, n, unit] of every chain per member; labels when the data
    has them."""
    import xarray as xr

    from eae.experiments.base import Recording

    x_test, labels = splits["test"]
    x_test_t = tf.constant(x_test)
    encode = tf.function(lambda: trainer.encoder.encode_each(x_test_t))
    static = xr.Dataset(
        {"labels": ("sample", labels)} if labels is not None else {},
        coords={"sample": np.arange(len(x_test)),
                "unit": np.arange(int(trainer.encoder.output_shape[-1]))},
    )
    record = lambda: {"latent": (("sample", "unit"), encode().numpy())}  # noqa: E731
    return Recording(record, static, ("latent",))


def train_images_stage(cfg: dict, data_path, out_dir, checkpoint_dir=None,
                       stop_after: int | None = None) -> pd.DataFrame:
    """Stage ``train_eae``: train (or resume from ``checkpoint_dir``) and save the models
    — :func:`eae.experiments.base.train_stage` of :data:`IMAGES`."""
    from eae.experiments.base import train_stage

    return train_stage(IMAGES, cfg, data_path, out_dir, checkpoint_dir, stop_after=stop_after)


def _images_spec():
    from eae.experiments.base import ExperimentSpec

    return ExperimentSpec(name="images", module="eae.experiments.images.eae", trainer=image_trainer,
                          recording=_image_recording, train_name="images_train_eae",
                          ensemble_name="images_ensemble", describe=_describe_images)


#: The image experiments (MNIST, Frey Faces) as an :class:`eae.experiments.base.ExperimentSpec`.
IMAGES = _images_spec()

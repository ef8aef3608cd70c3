"""Ensemble sampling: freeze the decoder, keep Simmering the encoder, stream to Zarr.

After training, consecutive encoder samples θ_1..θ_M (every ``thin``-th Simmering
step) form the ensemble. For each member a ``record`` function computes what the
experiment needs (test-set latents, SINDy coefficients, …); members are written in
chunks along the ``member`` dimension, and running means are accumulated in float64,
so memory does not grow with M.
"""

from __future__ import annotations

import logging
from typing import Callable, Mapping

import numpy as np
import xarray as xr

from eae.io import ZarrStreamWriter
from eae.progress import Progress
from eae.train import EAETrainer

logger = logging.getLogger("eae")

#: record() -> {name: (dims without "member", array)}
Record = Callable[[], Mapping[str, tuple[tuple[str, ...], np.ndarray]]]


def sample_ensemble(
    trainer: EAETrainer,
    record: Record,
    out_path,
    n_members: int,
    thin: int = 1,
    chunk_members: int = 50,
    mean_of: tuple[str, ...] = (),
    static: xr.Dataset | None = None,
    provenance: Mapping | None = None,
    log_every_s: float = 5.0,
):
    """Draw ``n_members`` encoder samples with the decoder frozen and stream them.

    Per member the store holds what ``record`` returns plus ``loss`` (mini-batch loss
    at the sample) and ``kinetic_temperature``; ``<name>_mean`` (ensemble mean, over
    members) is added for each name in ``mean_of``. ``static`` variables (coords,
    labels) are written once. ``provenance`` may be a callable, evaluated at the end
    (so its finish time is the store's).
    """
    if trainer.state is None:
        trainer.initialize()
    writer = ZarrStreamWriter(out_path, "member", static=static)
    sums: dict[str, np.ndarray] = {}
    dims: dict[str, tuple[str, ...]] = {}
    buffer: list[dict] = []
    progress = Progress(n_members, "ensemble", logger, log_every_s)
    step = int(trainer.state.step)
    try:
        for member in range(n_members):
            idx = trainer.indices_for(step, thin)
            trainer.state, info, _ = trainer._round(trainer.state, idx, accumulate=False)
            trainer.check_diagnostics(info)  # NaN or runaway T_kin: stop before writing a bad member
            step += thin
            values = dict(record())
            for name in mean_of:
                d, arr = values[name]
                dims[name] = d
                sums[name] = sums.get(name, 0.0) + np.asarray(arr, np.float64)
            values["loss"] = ((), np.asarray(info.loss.numpy()[-1]))
            values["kinetic_temperature"] = ((), np.asarray(info.kinetic_temperature.numpy()[-1]))
            buffer.append(values)
            if len(buffer) == chunk_members or member == n_members - 1:
                writer.append(_stack(buffer, member + 1 - len(buffer)))
                buffer = []
            progress.update(member + 1, f"loss {float(values['loss'][1]):.4g}")
        means = xr.Dataset({f"{name}_mean": (dims[name], (sums[name] / n_members).astype(np.float32))
                            for name in mean_of})
        return writer.close(extra=means if mean_of else None,
                            attrs={"n_members": n_members, "thin": thin},
                            provenance=provenance() if callable(provenance) else provenance)
    except BaseException:
        writer.abort()
        raise


def _stack(buffer: list[dict], first_member: int) -> xr.Dataset:
    names = buffer[0].keys()
    data = {}
    for name in names:
        d = buffer[0][name][0]
        data[name] = (("member",) + tuple(d), np.stack([np.asarray(b[name][1]) for b in buffer]))
    members = np.arange(first_member, first_member + len(buffer))
    return xr.Dataset(data, coords={"member": members})


def ensemble_images_stage(cfg: dict, data_path, train_dir, out_path):
    """Stage ``ensemble``: test-set latents of M encoder samples (decoder frozen),
    continuing the thermostat chain where training ended."""
    from pathlib import Path

    import tensorflow as tf

    from eae.provenance import make_record, now_iso
    from eae.train import image_trainer

    started = now_iso()
    trainer, splits = image_trainer(cfg, data_path)
    trainer.load_checkpoint(Path(train_dir) / "final_state.npz")
    x_test, labels = splits["test"]
    x_test_t = tf.constant(x_test)
    encode = tf.function(lambda: trainer.encoder(x_test_t, training=False))
    ens = cfg["ensemble"]
    static = xr.Dataset(
        {"labels": ("sample", labels)} if labels is not None else {},
        coords={"sample": np.arange(len(x_test)),
                "unit": np.arange(int(trainer.encoder.output_shape[-1]))},
    )
    record = lambda: {"latent": (("sample", "unit"), encode().numpy())}  # noqa: E731

    def provenance():
        return make_record("ensemble", config=cfg, seeds={"train": cfg["train"]["seed"]},
                           inputs=[data_path, train_dir], started=started,
                           modules=["eae.ensemble"])

    return sample_ensemble(trainer, record, out_path, n_members=ens["members"], thin=ens["thin"],
                           chunk_members=ens["chunk_members"], mean_of=("latent",),
                           static=static, provenance=provenance)

"""Entropic autoencoders from Python, no workflow: :func:`fit`, :func:`load`, :class:`EAEModel`.

:func:`fit` trains the workflow's own compiled trainer (:class:`eae.core.trainer.EAETrainer`,
built as the image experiments build it) on an array in memory, with the settings of a
``datasets:`` entry (schema ``eae/schemas/datasets.schema.yaml``: the same defaults, the
same checks). The model it returns continues the thermostat chain where training ended,
with the decoder frozen, exactly as the workflow's ensemble stage does
(:func:`eae.core.ensemble.sample_ensemble`)::

    import eae
    model = eae.fit(x, latent_dim=8, temperature=1e-6, decoder_updates=300, encoder_steps=50)
    ens = model.ensemble(x_test, members=200)  # xarray (chain, draw, sample, unit)
    z = model.encode(x_test)                   # ensemble-mean codes [n, latent]
    x_hat = model.decode(z)                    # shaped like the samples
    model.save("my_eae"); model = eae.load("my_eae")

The data are used as given (no scaling): data in [0, 1] get a sigmoid decoder, other
data a linear one (``model.output_activation: auto``). A run at tiny settings (so tiny
that it warns: three decoder updates reach no equilibrium):

>>> import os, tempfile
>>> import numpy as np
>>> import eae
>>> x = np.random.default_rng(0).random((64, 16)).astype("float32")
>>> model = eae.fit(x, latent_dim=2, decoder_updates=3, encoder_steps=5, progress=False)
>>> ens = model.ensemble(x[:10], members=20)
>>> ens.dims, ens.shape, ens.attrs["members"]
(('chain', 'draw', 'sample', 'unit'), (1, 20, 10, 2), 20)
>>> z = model.encode(x[:10])  # the mean of the 20 members just drawn on these samples
>>> z.shape, model.last_members
((10, 2), 20)
>>> model.decode(z).shape
(10, 16)
>>> folder = model.save(os.path.join(tempfile.mkdtemp(), "my_eae"))
>>> again = eae.load(folder, progress=False)
>>> a = again.ensemble(x[:10], members=4, seed=1)  # both continue from the saved state
>>> b = model.ensemble(x[:10], members=4, seed=1)
>>> bool((a == b).all())
True
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path
from typing import Any, Mapping, NamedTuple

import numpy as np

from eae.api_state import (  # noqa: F401 (the warnings are part of this API)
    FILES, SAVE_FORMAT, EAEWarning, ImproperEnsembleWarning, TemperatureWarning, array_digest,
    build_trainer, check_samples, check_seed, data_stats, ensemble_options, merged_settings,
    progress_output, read_folder, reject_unknown, seeded, training_attrs, warn_flags,
    write_folder)

__all__ = ["fit", "load", "EAEModel", "EAEWarning", "TemperatureWarning",
           "ImproperEnsembleWarning", "DEFAULT_MEMBERS"]

logger = logging.getLogger("eae")

#: members :meth:`EAEModel.encode` draws when it has no ensemble of its samples
DEFAULT_MEMBERS = 100
#: codes per decoder call in :meth:`EAEModel.decode`
DECODE_BATCH = 1024


def fit(x, *, validation=None, latent_dim=None, temperature=None, thermostat=None, dt=None,
        decoder_updates=None, encoder_steps=None, batch_size=None, learning_rate=None,
        chains=None, seed=None, model=None, sampler=None, train=None, checkpoint_dir=None,
        progress=True, **unknown) -> "EAEModel":
    """Train an entropic autoencoder on the samples ``x`` (Algorithm 1).

    Parameters
    ----------
    x : array [n, ...]
        At least 2 finite numeric samples: vectors [n, d], grey images [n, rows, cols]
        or [n, rows, cols, 1], RGB images [n, rows, cols, 3] (any other shape is
        flattened for an MLP). Used as given (no scaling): data in [0, 1] get a sigmoid
        decoder, others a linear one; scale data of large range first, since the
        default ``dt`` suits losses of order one (raw 0–255 pixels run away).
    validation : array, optional
        Samples of the same shape; their loss is the ``val_loss`` column of the history.
    latent_dim, temperature, thermostat, dt, decoder_updates, encoder_steps, batch_size, \
learning_rate, chains, seed
        Shorthands for ``model['latent_dim']``, ``sampler[...]`` (temperature,
        thermostat, dt) and ``train[...]`` (the rest); given (not None), they win over
        the same key of the dict.
    model, sampler, train : dict, optional
        Blocks of a ``datasets:`` entry's ``model``, ``eae.sampler`` and ``eae.train``
        (``eae config-docs``); missing keys take that entry's defaults, and a bad key or
        value raises :class:`eae.support.config.ConfigError` naming it (e.g.
        ``train.decoder_updates: must be >= 1``). ``model.kind: auto`` is conv for
        images from 32 × 32, mlp otherwise.
    checkpoint_dir : path, optional
        Checkpoint after every decoder update there; a later call with the same data,
        settings and code resumes from it (an interrupted call loses at most one update),
        one with anything else starts afresh. Without it nothing outlives the call.
    progress : bool
        Show the trainer's progress with ETA on stderr (a bar on a terminal or in a
        notebook) unless the ``eae`` logger has handlers already.

    Returns
    -------
    EAEModel
        With :attr:`EAEModel.history`; after training a :class:`TemperatureWarning` or
        :class:`ImproperEnsembleWarning` says when training's last tenth is flagged as
        the workflow's tables would flag it.

    Raises
    ------
    TypeError
        For a keyword :func:`fit` does not take (naming the block a setting belongs to).
    ValueError
        For an unusable ``x`` or ``validation``; a
        :class:`eae.support.config.ConfigError` (a ValueError) for a bad setting.
    """
    from eae.support.provenance import fingerprint, now_iso

    reject_unknown(unknown)
    started = now_iso()
    x = check_samples(x, "x", min_samples=2)
    val = (check_samples(validation, "validation", sample_shape=x.shape[1:])
           if validation is not None else None)
    flat = {"latent_dim": latent_dim, "temperature": temperature, "thermostat": thermostat,
            "dt": dt, "decoder_updates": decoder_updates, "encoder_steps": encoder_steps,
            "batch_size": batch_size, "learning_rate": learning_rate, "chains": chains,
            "seed": seed}
    blocks = merged_settings(flat, {"model": model, "sampler": sampler, "train": train})
    stats = data_stats(x)
    meta = _meta(blocks, stats, val)
    trainer = _trainer(meta, x, val)
    # what may be resumed: these settings, these arrays, this code
    fp = fingerprint({k: meta[k] for k in ("format", "model", "sampler", "train")},
                     [x, val], ["eae.api"])
    meta["fingerprint"] = fp
    with progress_output(progress), tempfile.TemporaryDirectory(prefix="eae-fit-") as tmp:
        history = trainer.fit(tmp, checkpoint_dir, fingerprint=fp)
    result = EAEModel(trainer, meta, x, history, progress=progress,
                      record={"started": started, "checkpoint_dir": _str(checkpoint_dir)})
    warn_flags(result._train_attrs, "train_", "training's last tenth", trainer.sampler_config)
    return result


def load(path, *, progress: bool = True) -> "EAEModel":
    """The model :meth:`EAEModel.save` wrote at ``path``, at the state it was saved in:
    :meth:`EAEModel.ensemble` continues the chain from there. Checks the folder's format
    and the training samples' checksum."""
    import pandas as pd

    path = Path(path)
    meta, x = read_folder(path)
    trainer = _trainer(meta, x, None)
    trainer.load_checkpoint(path / FILES["state"])
    trainer.fingerprint = meta.get("fingerprint", "")
    history = pd.read_csv(path / FILES["history"])
    return EAEModel(trainer, meta, x, history, progress=progress,
                    record={"loaded_from": str(path)})


def _str(value):
    return None if value is None else str(value)


def _meta(blocks: Mapping[str, dict], stats: dict, val) -> dict:
    """settings.json: the validated blocks, the concrete architecture and the data's
    shape and statistics (all a later :func:`load` needs besides the arrays)."""
    import eae
    from eae.core.models import model_input_shape, resolve_model

    resolved = resolve_model(blocks["model"], stats["sample_shape"], stats["unit_interval"])
    return {"format": SAVE_FORMAT, "eae_version": eae.__version__,
            "model": blocks["model"], "model_resolved": resolved,
            "sampler": blocks["sampler"], "train": blocks["train"], "data": stats,
            "model_input_shape": list(model_input_shape(resolved, stats["sample_shape"])),
            "validation": None if val is None else {"n": int(len(val))}, "sampling": []}


def _trainer(meta: Mapping, x: np.ndarray, val):
    from eae.core.models import reshape_for_model

    shape = tuple(meta["data"]["sample_shape"])
    cfg = meta["model_resolved"]
    return build_trainer(cfg, meta["sampler"], meta["train"], reshape_for_model(x, cfg, shape),
                         None if val is None else reshape_for_model(val, cfg, shape))


class _Latest(NamedTuple):
    key: str            # digest of the samples the ensemble was drawn on
    requested: int      # members asked for
    members: int        # members drawn (chains × draws)
    mean: np.ndarray    # [n, latent] ensemble mean (accumulated in float64)


class EAEModel:
    """A trained entropic autoencoder: its encoder ensemble and decoder.

    Made by :func:`fit` or :func:`load`. The thermostat chain goes on where training
    (or the last :meth:`ensemble` call) stopped; the decoder stays frozen.

    Attributes
    ----------
    history : pandas.DataFrame
        One row per decoder update (the workflow's ``history.csv``).
    settings : dict
        The validated ``model`` (as requested), ``model_resolved`` (the architecture
        built), ``sampler`` and ``train`` blocks, the training data's ``data`` statistics
        and the ``sampling`` log of every :meth:`ensemble` call.
    sample_shape : tuple
        The shape of one training sample; inputs and reconstructions have it.
    latent_dim, chains : int
    last_members : int or None
        Members behind the latest :meth:`encode` (None before one).
    progress : bool
        Whether :meth:`ensemble` shows its progress (as ``fit(progress=...)``).
    trainer : eae.core.trainer.EAETrainer
        The trainer itself, for what this class does not cover.
    """

    def __init__(self, trainer, meta: dict, x: np.ndarray, history, progress: bool = True,
                 record: Mapping[str, Any] | None = None):
        self.trainer = trainer
        self.settings = meta
        self._x = x
        self.history = history
        self.progress = progress
        self.sample_shape = tuple(meta["data"]["sample_shape"])
        self.latent_dim = int(trainer.encoder.latent_dim)
        self.chains = int(trainer.chains)
        self.last_members: int | None = None
        self._latest: _Latest | None = None
        self._encode_fn = None
        self._record = dict(record or {})
        self._train_attrs = training_attrs(history)

    def __repr__(self) -> str:
        m = self.settings["model_resolved"]
        return (f"EAEModel({m['kind']}, samples {self.sample_shape} -> latent {self.latent_dim}, "
                f"{self.chains} chain(s), T = {self.settings['sampler']['temperature']:g}, "
                f"step {int(self.trainer.state.step) if self.trainer.state is not None else 0})")

    # -- the networks ------------------------------------------------------------
    @property
    def encoder(self):
        """Chain 0's encoder as a Keras model, with its current weights (one object
        shared by every access: each access copies chain 0's weights into it). Takes
        inputs in the model's layout (:meth:`model_input`)."""
        return self.trainer.encoder.member(0)

    @property
    def encoders(self) -> list:
        """Every chain's encoder as its own Keras model (copies of the current weights)."""
        from eae.support.runtime import keras

        template = self.trainer.encoder.template
        out = []
        for c in range(self.chains):
            m = keras.models.clone_model(template)
            for v, stacked in zip(m.trainable_variables, self.trainer.encoder.variables):
                v.assign(stacked[c])
            out.append(m)
        return out

    @property
    def decoder(self):
        """The decoder (Keras model; frozen since training): codes -> samples in the
        model's layout."""
        return self.trainer.decoder

    @property
    def flags(self) -> dict:
        """The temperature and well-posedness columns the workflow's tables show
        (:func:`eae.core.temperature.store_temperature_columns`) for training and the
        latest ensemble."""
        from eae.core.temperature import store_temperature_columns

        return store_temperature_columns({**self._train_attrs, **getattr(self, "_ens_attrs", {})})

    def model_input(self, x) -> np.ndarray:
        """Samples checked and reshaped to what :attr:`encoder` takes (float32)."""
        from eae.core.models import reshape_for_model

        xs = check_samples(x, "x", sample_shape=self.sample_shape)
        return reshape_for_model(xs, self.settings["model_resolved"], self.sample_shape)

    # -- sampling ----------------------------------------------------------------
    def ensemble(self, x, members: int = 100, thin: int | None = None, seed: int | None = None,
                 burn_in: int | None = None):
        """Draw encoder members with the decoder frozen and return their codes of ``x``.

        The chain continues from the current state (training's end, or the last call),
        so successive calls give successive draws. ``members`` are spread over the
        chains (each gives ``ceil(members / chains)`` draws, every ``thin``-th Simmering
        step, after ``burn_in`` unrecorded steps); ``thin`` and ``burn_in`` default to
        the schema's ``ensemble`` block.

        ``seed`` (optional): this call's mini-batch order and Langevin noise come from
        ``seed`` (mixed with the training seed) rather than the chain's own streams, so
        the same seed from the same state gives the same draws — different seeds give
        different continuations. The state advances either way; later calls without a
        seed go on with the chain's own streams. (Unseeded calls are reproducible too: on
        CPU the chain's streams are a function of the state.)

        Returns
        -------
        xarray.DataArray
            ``latent`` with dims ``(chain, draw, sample, unit)`` as in the workflow's
            ensemble stores; coords ``loss``, ``kinetic_temperature`` and ``step`` per
            draw; attrs as the store's (``n_members``, ``temperature``, measured
            ``ensemble_kinetic_over_target``, ``ensemble_configurational_over_target``,
            ``ensemble_displacement_slope``, training's ``train_…``) plus ``members``
            (the number drawn) and ``seed``. Flagged temperatures or a still-growing
            ‖θ − θ₀‖ warn (:class:`TemperatureWarning`, :class:`ImproperEnsembleWarning`).
        """
        xs = self.model_input(x)
        da, latest = self._ensemble(xs, members, thin, seed, burn_in)
        self._latest = latest
        warn_flags(da.attrs, "ensemble_", "ensemble", self.trainer.sampler_config)
        return da

    def _ensemble(self, xs: np.ndarray, members, thin, seed, burn_in):
        import xarray as xr

        from eae.core.ensemble import sample_ensemble

        opts = ensemble_options(members, thin, burn_in)
        seed = check_seed(seed)
        key = array_digest(xs)
        record = self._recorder(xs)
        static = xr.Dataset(coords={"sample": np.arange(len(xs)), "unit": np.arange(self.latent_dim)})
        trainer = self.trainer
        if trainer.state is None:
            trainer.initialize()
        first = int(trainer.state.step)
        with (progress_output(self.progress), seeded(trainer, seed),
              tempfile.TemporaryDirectory(prefix="eae-ensemble-") as tmp):
            # the workflow's sampler writes a Zarr store; a temporary one, read back whole
            path = sample_ensemble(trainer, record, Path(tmp) / "ensemble.zarr",
                                   n_members=opts["members"], thin=opts["thin"],
                                   chunk_members=opts["chunk_members"], mean_of=("latent",),
                                   static=static, history=self.history,
                                   burn_in=opts["burn_in"], tconf_draws=opts["tconf_draws"],
                                   log_every_s=trainer.settings.log_every_s)
            with xr.open_zarr(path, consolidated=False) as store:
                ds = store.load()
        n = int(ds.attrs["n_members"])
        attrs = {**ds.attrs, "members": n, "seed": seed, "first_step": first,
                 "last_step": int(trainer.state.step)}
        da = ds["latent"].assign_coords(loss=ds["loss"], step=ds["step"],
                                        kinetic_temperature=ds["kinetic_temperature"])
        da.attrs = attrs
        self._ens_attrs = {k: v for k, v in attrs.items() if k.startswith("ensemble_")}
        self.settings["sampling"].append({"members": n, "thin": opts["thin"],
                                          "burn_in": opts["burn_in"], "seed": seed,
                                          "first_step": first, "last_step": attrs["last_step"],
                                          "samples": int(len(xs))})
        mean = np.asarray(ds["latent_mean"].values, np.float32)
        return da, _Latest(key, opts["members"], n, mean)

    def _recorder(self, xs: np.ndarray):
        """The per-draw record of the workflow's image ensembles (codes of every chain,
        ``latent`` (sample, unit)). One compiled function per model, whatever the number
        of samples (a function per call would be traced anew each time)."""
        from eae.support.runtime import tf

        if self._encode_fn is None:
            encoder = self.trainer.encoder
            self._encode_fn = tf.function(lambda x: encoder.encode_each(x), reduce_retracing=True)
        encode, x_t = self._encode_fn, tf.constant(xs)
        return lambda: {"latent": (("sample", "unit"), encode(x_t).numpy())}

    def encode(self, x, members: int | None = None) -> np.ndarray:
        """Ensemble-mean codes [n, latent] (float32) of ``x``.

        The mean over the members of the latest :meth:`ensemble` when it was drawn on
        these very samples (and, with ``members``, of that many); otherwise a new
        ensemble of ``members`` (default :data:`DEFAULT_MEMBERS`) is drawn on ``x`` first,
        advancing the chain. :attr:`last_members` then holds the number averaged.
        """
        from eae.core.models import reshape_for_model

        xs = reshape_for_model(check_samples(x, "x", sample_shape=self.sample_shape),
                               self.settings["model_resolved"], self.sample_shape)
        latest = self._latest
        if (latest is None or latest.key != array_digest(xs)
                or (members is not None and int(members) != latest.requested)):
            da, self._latest = self._ensemble(xs, members or DEFAULT_MEMBERS, None, None, None)
            warn_flags(da.attrs, "ensemble_", "ensemble", self.trainer.sampler_config)
        self.last_members = self._latest.members
        logger.info("encode: mean codes of %d samples over %d ensemble members", len(xs),
                    self.last_members)
        return self._latest.mean.copy()

    def decode(self, z) -> np.ndarray:
        """Reconstructions of codes ``z`` [..., latent] (e.g. :meth:`encode`'s, or an
        ensemble's values), shaped [..., *sample_shape] (float32)."""
        from eae.support.runtime import tf

        arr = np.asarray(z)
        if arr.dtype.kind not in "biuf" or arr.ndim < 1 or arr.shape[-1] != self.latent_dim:
            raise ValueError(f"z must be numeric codes [..., {self.latent_dim}], got "
                             f"{arr.dtype} {arr.shape}")
        lead = arr.shape[:-1]
        flat = arr.reshape(-1, self.latent_dim).astype(np.float32)
        if not np.isfinite(flat).all():
            raise ValueError("z holds NaN or infinite codes")
        parts = [self.decoder(tf.constant(flat[i:i + DECODE_BATCH]), training=False).numpy()
                 for i in range(0, len(flat), DECODE_BATCH)]
        out = np.concatenate(parts) if parts else np.zeros((0,) + self.sample_shape, np.float32)
        return out.reshape(lead + self.sample_shape)

    # -- the folder --------------------------------------------------------------
    def save(self, path) -> Path:
        """Write everything :func:`load` needs to go on sampling into the folder ``path``:
        ``encoder.keras`` (chain 0) and ``decoder.keras``; ``final_state.npz``, the full
        state of every chain (weights, Adam, thermostat, θ₀: the workflow's final
        state); ``train_x.npy``, the training samples (the sampler's forces come from
        them); ``settings.json`` (validated blocks, architecture, data statistics and
        checksum, the sampling log); ``history.csv``; ``provenance.json`` (package
        versions, code hash and git state, seeds). Published atomically; an existing
        folder is replaced only when it is a saved model. Returns the path."""
        from eae.support.provenance import make_record

        record = make_record("eae.api.fit", config={k: self.settings[k] for k in
                                                    ("model_resolved", "sampler", "train")},
                             seeds={"train": self.settings["train"]["seed"],
                                    "ensembles": [s["seed"] for s in self.settings["sampling"]]},
                             started=self._record.get("started"), modules=["eae.api"],
                             extra={**self._record, "data": self.settings["data"],
                                    "sampling": self.settings["sampling"],
                                    "state_step": int(self.trainer.state.step)})
        return write_folder(path, self.trainer, self.settings, self._x, self.history, record)

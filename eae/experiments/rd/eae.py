"""The SINDy-EAE on reaction–diffusion data, on the experiment scaffold.

:data:`RD` is its :class:`eae.experiments.base.ExperimentSpec`: MLP encoder and decoder
on the n² pixels, the loss of :func:`eae.core.sindy.make_sindy_loss`, each ensemble
member recording Ξ, z and ż on the test snapshots. Stages ``train_rd_eae``
(:func:`train_sindy_stage`) and ``rd_coefficients`` (:func:`coefficients_stage`);
:func:`synthetic_oscillator` makes a small dataset store with known dynamics (tests, CI).
"""

from __future__ import annotations

from typing import Callable, Mapping

import numpy as np

from eae.core.sindy import (SindyLibrary, encode_each_jvp, least_squares, library_names,
                            make_sindy_loss, sindy_library)
from eae.support.runtime import tf

#: Config sections that change the training trajectory (the rest, e.g. ``ensemble``,
#: only matters after training).
TRAIN_SECTIONS = ("model", "loss", "sampler", "train")


def loss_from_config(loss_cfg: Mapping) -> Callable:
    """:func:`make_sindy_loss` from the ``loss`` config section."""
    return make_sindy_loss(float(loss_cfg.get("lambda_x", 1.0)),
                           float(loss_cfg.get("lambda_x_dot", 1.0)),
                           float(loss_cfg.get("ridge", 0.0)))


def build_models(model_cfg: Mapping, n_pixels: int, seed: int):
    """(encoder, decoder): n² → hidden (ELU) → latent (linear), latent → hidden → n²."""
    from eae.core.models import mlp_decoder, mlp_encoder

    activation = model_cfg.get("activation", "elu")
    latent = int(model_cfg.get("latent_dim", 2))
    encoder = mlp_encoder(n_pixels, list(model_cfg.get("encoder_hidden", [256])), latent,
                          activation=activation, seed=seed)
    decoder = mlp_decoder(latent, list(model_cfg.get("decoder_hidden", [256])), n_pixels,
                          activation=activation, output_activation="linear", seed=seed)
    return encoder, decoder


def _check_cfg(cfg: Mapping) -> None:
    missing = [k for k in TRAIN_SECTIONS if k not in cfg]
    if missing:
        raise KeyError(f"rd.eae config lacks section(s) {missing}")
    latent = int(cfg["model"].get("latent_dim", 2))
    if latent != 2:
        # The analysis (Table 4, the z1 ↔ z2 pairs, phase portraits) is written for 2.
        raise ValueError(f"rd.eae.model.latent_dim must be 2 (SPEC §3.1), got {latent}")


def rd_trainer(cfg: Mapping, data_path):
    """An :class:`eae.core.trainer.EAETrainer` for the SINDy-EAE (config section ``rd.eae``:
    model, loss, sampler, train) on the RD dataset store ``data_path``.

    Returns ``(trainer, splits)`` with ``splits[name] = dict(x, x_dot, time)``.
    """
    from eae.core import sampler as simmering
    from eae.experiments.rd.data import load_rd_split
    from eae.core.trainer import EAETrainer, TrainSettings, build_chain_encoder

    _check_cfg(cfg)
    splits = {s: load_rd_split(data_path, s) for s in ("train", "val", "test")}
    train = splits["train"]
    for name, split in splits.items():
        for key in ("x", "x_dot"):
            if not np.all(np.isfinite(split[key])):
                raise ValueError(f"{data_path}: split {name!r} holds non-finite {key}")
    seed = int(cfg["train"].get("seed", 0))
    _, decoder = build_models(cfg["model"], train["x"].shape[1], seed)
    encoder = build_chain_encoder(lambda s: build_models(cfg["model"], train["x"].shape[1], s)[0],
                                  int(cfg["train"].get("chains", 1)), seed)
    val = splits.get("val")
    trainer = EAETrainer(
        encoder, decoder, [train["x"], train["x_dot"]],
        simmering.SimmeringConfig.from_dict(cfg["sampler"], "rd.eae.sampler"),
        TrainSettings.from_dict(cfg["train"], "rd.eae.train"),
        loss_fn=loss_from_config(cfg["loss"]),
        val_arrays=[val["x"], val["x_dot"]] if val is not None and len(val["x"]) else None,
    )
    return trainer, splits


def _describe(trainer, splits, cfg) -> str:
    return (f"SINDy-EAE: {trainer.n_train} training snapshots of {splits['train']['x'].shape[1]} "
            f"pixels, {trainer.steps_per_update} encoder steps per decoder update, "
            f"N_f = {trainer.sampler.n_dof}")


def _final_summary(history) -> dict:
    last = history.iloc[-1]
    return {"final": {"loss_mean": float(last["loss_mean"]),
                      "val_loss": float(last.get("val_loss", float("nan"))),
                      "kinetic_temperature_over_T":
                          float(last["kinetic_temperature"] / last["temperature"])}}


def train_sindy_stage(cfg: Mapping, data_path, out_dir, checkpoint_dir=None,
                      stop_after: int | None = None):
    """Stage ``train_rd_eae``: train (or resume) the SINDy-EAE (config ``rd.eae``
    without ``ensemble``) — :func:`eae.experiments.base.train_stage` of :data:`RD`."""
    from eae.experiments.base import train_stage

    return train_stage(RD, cfg, data_path, out_dir, checkpoint_dir, stop_after=stop_after)


def make_recorder(trainer, x_test: np.ndarray, x_dot_test: np.ndarray, loss_cfg: Mapping,
                  test_loss: bool = False):
    """``record()`` for :func:`eae.core.ensemble.sample_ensemble`: per encoder sample, Ξ on
    the whole test set (from z and ż = J_E ẋ), the test latents z and velocities ż and (with
    ``test_loss``, which doubles the cost: the decoder JVP) the test loss; every array
    has a leading chain axis."""
    ridge = float(loss_cfg.get("ridge", 0.0))
    loss_fn = loss_from_config(loss_cfg)
    chains = trainer.chains
    x_t, xd_t = tf.constant(x_test), tf.constant(x_dot_test)
    tiled = (tf.constant(np.concatenate([x_test] * chains)),
             tf.constant(np.concatenate([x_dot_test] * chains)))

    @tf.function
    def compute():
        z, z_dot = encode_each_jvp(trainer.encoder, x_t, xd_t)  # [C, N, latent]
        xi = least_squares(sindy_library(z), z_dot, ridge)
        return xi, z, z_dot

    compute_loss = tf.function(lambda: loss_fn(trainer.encoder, trainer.decoder, tiled))

    def record():
        xi, z, z_dot = compute()
        out = {
            "coefficients": (("term", "latent"), xi.numpy()),
            "latent_code": (("sample", "latent"), z.numpy()),
            # ż = J_E ẋ, so the analysis can re-solve Ξ on the stored codes
            # (eae.identifiability) without retraining
            "latent_velocity": (("sample", "latent"), z_dot.numpy()),
        }
        if test_loss:
            out["test_loss"] = ((), np.asarray(compute_loss().numpy(), np.float32))
        return out

    return record


def _recording(trainer, splits, cfg, data_path):
    """Per member Ξ, z and ż on the test data (:func:`make_recorder`); coords ``term``
    (library names), ``latent`` ("z1", "z2"), ``time`` (sample)."""
    import xarray as xr

    from eae.experiments.base import Recording

    test = splits["test"]
    latent_dim = int(trainer.encoder.output_shape[-1])
    record = make_recorder(trainer, test["x"], test["x_dot"], cfg["loss"],
                           test_loss=bool(cfg["ensemble"]["test_loss"]))
    static = xr.Dataset(
        coords={"sample": np.arange(len(test["x"])),
                "time": ("sample", test["time"]),
                # object dtype: Zarr v3 stores it as variable-length UTF-8 (fixed-width
                # unicode has no v3 specification yet)
                "term": np.array(library_names(latent_dim), dtype=object),
                "latent": np.array([f"z{i + 1}" for i in range(latent_dim)], dtype=object)},
        attrs={"coefficients_convention":
               "d(latent)/dt = sum over term of coefficients[term, latent] * term(z)",
               SindyLibrary.ATTR: SindyLibrary(latent_dim).to_json()},
    )
    return Recording(record, static, ("coefficients", "latent_code"))


def coefficients_stage(cfg: Mapping, data_path, train_dir, out_path):
    """Stage ``rd_coefficients``: M encoder samples with the decoder fixed, continuing the
    thermostat chain where training ended; per member Ξ on the test data → Zarr
    (:func:`eae.core.ensemble.ensemble_stage` of :data:`RD`).

    Store: ``coefficients`` (member, term, latent) — the coefficient of library term
    ``term`` in dz_latent/dt —, ``latent_code`` and ``latent_velocity`` (member, sample,
    latent): test latents z and their time derivatives ż = J_E ẋ;
    ``loss``, ``kinetic_temperature`` and (if
    ``ensemble.test_loss``) ``test_loss`` (member); the ensemble means
    ``coefficients_mean`` and ``latent_code_mean``, coords ``term`` (names), ``latent``
    ("z1", "z2"), ``time`` (sample).
    """
    from eae.core.ensemble import ensemble_stage

    return ensemble_stage(RD, cfg, data_path, train_dir, out_path)


def _spec():
    from eae.experiments.base import ExperimentSpec

    return ExperimentSpec(name="rd", module="eae.experiments.rd.eae", trainer=rd_trainer,
                          recording=_recording, train_name="rd_train_eae",
                          ensemble_name="rd_coefficients", describe=_describe,
                          final_summary=_final_summary)


#: The SINDy-EAE on reaction–diffusion as an :class:`eae.experiments.base.ExperimentSpec`.
RD = _spec()


# -- synthetic data (tests, CI) ------------------------------------------------------------


def synthetic_oscillator(n: int = 8, n_snapshots: int = 1200, dt: float = 0.05,
                         omega: float = 0.9, amplitude: float = 1.0, quadratic: float = 0.2,
                         n_test: int = 200, n_train: int = 600, n_val: int = 200,
                         seed: int = 0):
    """A dataset store (as :mod:`eae.experiments.rd.data` writes) of a linear oscillator embedded in
    n × n pixels, with exact time derivatives.

    z(t) = amplitude·(cos ωt, sin ωt); x = z1 m1 + z2 m2 + quadratic·(z1² − z2²) m3 with
    fixed smooth spatial modes m_k (seeded), ẋ = ∂x/∂z · ż. Test = the last ``n_test``
    snapshots; train and val are drawn from the rest. Returns an ``xr.Dataset``.
    """
    import xarray as xr

    rng = np.random.default_rng(seed)
    t = np.arange(n_snapshots) * dt
    z = amplitude * np.stack([np.cos(omega * t), np.sin(omega * t)], 1)
    z_dot = amplitude * omega * np.stack([-np.sin(omega * t), np.cos(omega * t)], 1)
    yy, xx = np.meshgrid(np.linspace(-1, 1, n), np.linspace(-1, 1, n), indexing="ij")
    modes = []
    for _ in range(3):  # smooth random fields: a few low Fourier modes each
        k = rng.integers(1, 3, size=(3, 2))
        ph = rng.uniform(0, 2 * np.pi, size=3)
        field = sum(np.cos(np.pi * (ki[0] * xx + ki[1] * yy) + p) for ki, p in zip(k, ph))
        modes.append((field / np.sqrt(np.mean(field ** 2))).ravel() * 0.3)
    m1, m2, m3 = modes
    x = z[:, :1] * m1 + z[:, 1:] * m2 + quadratic * (z[:, :1] ** 2 - z[:, 1:] ** 2) * m3
    x_dot = (z_dot[:, :1] * m1 + z_dot[:, 1:] * m2
             + quadratic * 2 * (z[:, :1] * z_dot[:, :1] - z[:, 1:] * z_dot[:, 1:]) * m3)
    pool = n_snapshots - n_test
    if n_train + n_val > pool:
        raise ValueError("synthetic_oscillator: n_train + n_val exceed the non-test snapshots")
    chosen = rng.choice(pool, n_train + n_val, replace=False)
    order = np.concatenate([np.sort(chosen[:n_train]), np.sort(chosen[n_train:]),
                            np.arange(pool, n_snapshots)])
    split = np.repeat(np.array([0, 1, 2], np.int8), [n_train, n_val, n_test])
    return xr.Dataset(
        {"x": (("sample", "pixel"), x[order].astype(np.float32)),
         "x_dot": (("sample", "pixel"), x_dot[order].astype(np.float32)),
         "split": (("sample",), split, {"flag_values": [0, 1, 2],
                                        "flag_meanings": "train val test"})},
        coords={"time": (("sample",), t[order]), "snapshot": (("sample",), order)},
        attrs={"grid_shape": [n, n], "omega": omega, "synthetic": "linear oscillator"},
    )

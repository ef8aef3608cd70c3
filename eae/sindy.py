"""SINDy-EAE: an entropic autoencoder whose latent dynamics are fitted by least squares.

SPEC §3.1 (after Champion et al., PNAS 2019, with the changes of the EAE paper). For a
batch of snapshots x and their time derivatives ẋ:

    z  = E(x),              ż  = J_E(x) ẋ             (forward-mode JVP of the encoder)
    Θ  = Θ(z)               (library: polynomials to order 3 and sines, no constant)
    Ξ  = argmin ‖ż − Θ Ξ‖²  (differentiable least squares, per batch)
    x̂  = D(z),              ẋ̂ = J_D(z) Θ(z) Ξ        (forward-mode JVP of the decoder)
    L  = λ_x mean (x − x̂)² + λ_ẋ mean (ẋ − ẋ̂)²

Ξ is not a parameter: it is solved for in every batch, so the only explicit objective
is reconstruction (of x and of ẋ), as the EAE framework requires. The shared
:class:`eae.train.EAETrainer` samples the encoder with Simmering and moves the decoder
with Adam; :func:`coefficients_stage` then records Ξ on the test data for each of M
consecutive encoder samples with the decoder frozen.
"""

from __future__ import annotations

import itertools
import logging
import math
from typing import Callable, Mapping, NamedTuple

import numpy as np

from eae.chains import chain_mean, chains_of, model_jvp
from eae.runtime import keras, tf

logger = logging.getLogger("eae")

#: Config sections that change the training trajectory (the rest, e.g. ``ensemble``,
#: only matters after training).
TRAIN_SECTIONS = ("model", "loss", "sampler", "train")

# -- library -----------------------------------------------------------------------------


def library_exponents(latent_dim: int = 2, poly_order: int = 3) -> list[tuple[int, ...]]:
    """Index tuples of the polynomial terms, degree 1 first (SPEC order for 2 latents:
    z1, z2, z1², z1z2, z2², z1³, z1²z2, z1z2², z2³)."""
    terms: list[tuple[int, ...]] = []
    for degree in range(1, poly_order + 1):
        terms.extend(itertools.combinations_with_replacement(range(latent_dim), degree))
    return terms


def _monomial_name(indices: tuple[int, ...]) -> str:
    counts = [(i, indices.count(i)) for i in sorted(set(indices))]
    return " ".join(f"z{i + 1}" + (f"^{c}" if c > 1 else "") for i, c in counts)


def library_names(latent_dim: int = 2, poly_order: int = 3, sines: bool = True) -> list[str]:
    """Readable names of the library terms (pysindy-like): "z1", "z1^2", "z1 z2",
    "z1^2 z2", …, "sin(z1)". For 2 latents: the 11 terms of SPEC §3.1, in order."""
    names = [_monomial_name(t) for t in library_exponents(latent_dim, poly_order)]
    if sines:
        names += [f"sin(z{i + 1})" for i in range(latent_dim)]
    return names


def _library(z, stack, sin, latent_dim: int, poly_order: int, sines: bool):
    cols = [z[..., i] for i in range(latent_dim)]
    out = []
    for indices in library_exponents(latent_dim, poly_order):
        term = cols[indices[0]]
        for i in indices[1:]:
            term = term * cols[i]
        out.append(term)
    if sines:
        out += [sin(c) for c in cols]
    return stack(out, -1)


def sindy_library(z: tf.Tensor, poly_order: int = 3, sines: bool = True) -> tf.Tensor:
    """Θ(z): [batch, n_terms] library of a [batch, latent] tensor (TensorFlow)."""
    return _library(z, tf.stack, tf.sin, int(z.shape[-1]), poly_order, sines)


def sindy_library_np(z: np.ndarray, poly_order: int = 3, sines: bool = True) -> np.ndarray:
    """Θ(z) for NumPy arrays [..., latent] (used to integrate identified models)."""
    z = np.asarray(z, np.float64)
    return _library(z, np.stack, np.sin, int(z.shape[-1]), poly_order, sines)


# -- least squares and Jacobian-vector products ----------------------------------------


def _column_scale(theta: tf.Tensor) -> tf.Tensor:
    """Column RMS of Θ, 1 where a column is all zero (e.g. z ≡ 0)."""
    scale = tf.sqrt(tf.reduce_mean(tf.square(theta), axis=-2))
    return tf.where(scale > 0, scale, tf.ones_like(scale))


def least_squares(theta: tf.Tensor, z_dot: tf.Tensor, ridge: float = 0.0) -> tf.Tensor:
    """Ξ = argmin_Ξ (1/n)‖ż − Θ_n Ξ_n‖² + ridge‖Ξ_n‖², differentiable (the in-training solve).

    Θ_n is Θ with each column divided by its RMS (so z, z³ and sin z enter on one scale
    and ``ridge`` is dimensionless), Ξ = Ξ_n / scale. The problem is solved as the
    augmented least-squares system [Θ_n/√n; √ridge·I] Ξ_n ≈ [ż/√n; 0] by a QR
    factorisation in float64 — never through the normal equations, whose condition
    number is the square of Θ's: on the near-collinear SINDy library (sin z ≈ z − z³/6,
    z₁³ + z₁z₂² ≈ A²z₁ on a limit cycle) they missed the least-squares optimum by 23 %.
    ``ridge`` = 0 is plain least squares (Θ must then have full column rank; a zero
    column needs ridge > 0). float32 or float64 inputs; Ξ [n_terms, latent] comes back
    in Θ's dtype. Leading batch axes (one system per chain: Θ [C, B, terms],
    ż [C, B, latent]) give Ξ [C, terms, latent]. For stored codes use
    :func:`minimum_norm_solve` (SVD, rank-revealing).
    """
    th = tf.cast(theta, tf.float64)
    zd = tf.cast(z_dot, tf.float64)
    root_n = tf.sqrt(tf.cast(tf.shape(th)[-2], tf.float64))
    scale = _column_scale(th)
    a = th / scale[..., None, :] / root_n
    b = zd / root_n
    if ridge > 0:
        k = tf.shape(a)[-1]
        batch = tf.shape(a)[:-2]
        eye = tf.broadcast_to(math.sqrt(ridge) * tf.eye(k, dtype=tf.float64),
                              tf.concat([batch, [k, k]], 0))
        a = tf.concat([a, eye], axis=-2)
        b = tf.concat([b, tf.zeros(tf.concat([batch, [k, tf.shape(b)[-1]]], 0), tf.float64)],
                      axis=-2)
    q, r = tf.linalg.qr(a)
    xi = tf.linalg.triangular_solve(r, tf.matmul(q, b, transpose_a=True), lower=False)
    return tf.cast(xi / scale[..., :, None], theta.dtype)


class Solution(NamedTuple):
    """A minimum-norm least-squares solve: Ξ [terms, latent], the singular values of the
    column-normalised Θ_n/√n (descending), its numerical rank, and the mean squared
    residual ‖ż − ΘΞ‖²/n per latent."""

    xi: np.ndarray
    singular_values: np.ndarray
    rank: int
    residual: np.ndarray


def column_normalised(theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(Θ with each column divided by its RMS, the RMS; 1 for an all-zero column), float64:
    the NumPy counterpart of the normalisation inside :func:`least_squares`."""
    th = np.asarray(theta, np.float64)
    scale = np.sqrt(np.mean(np.square(th), axis=0))
    scale = np.where(scale > 0, scale, 1.0)
    return th / scale, scale


def minimum_norm_solve(theta: np.ndarray, z_dot: np.ndarray, ridge: float = 0.0,
                       rcond: float | None = None) -> Solution:
    """The exact analysis solve on stored codes (NumPy, float64, SVD).

    Same objective and normalisation as :func:`least_squares`. With ``ridge`` = 0 it is
    the minimum-norm least-squares solution in normalised units: singular values below
    ``rcond``·s_max (default: machine epsilon × max(n, terms), NumPy's ``lstsq`` rule)
    are dropped, so a rank-deficient library gives the shortest Ξ_n that reaches the
    optimum instead of an arbitrary large one. With ``ridge`` > 0 the filter factors
    s / (s² + ridge) give the Tikhonov solution, identical to :func:`least_squares`.
    """
    return minimum_norm_solves(theta, z_dot, (ridge,), rcond)[0]


def minimum_norm_solves(theta: np.ndarray, z_dot: np.ndarray, ridges,
                        rcond: float | None = None) -> list[Solution]:
    """:func:`minimum_norm_solve` for each of ``ridges``, from one SVD of Θ."""
    th = np.asarray(theta, np.float64)
    zd = np.asarray(z_dot, np.float64)
    n = th.shape[0]
    a, scale = column_normalised(th)
    a = a / np.sqrt(n)
    u, s, vt = np.linalg.svd(a, full_matrices=False)
    if rcond is None:
        rcond = np.finfo(np.float64).eps * max(a.shape)
    keep = s > rcond * (s[0] if s.size else 0.0)
    coeff = u.T @ (zd / np.sqrt(n))
    out = []
    for ridge in ridges:
        if ridge > 0:
            filt = s / (s * s + ridge)
        else:
            filt = np.where(keep, 1.0 / np.where(keep, s, 1.0), 0.0)
        xi = (vt.T @ (filt[:, None] * coeff)) / scale[:, None]
        residual = np.mean(np.square(zd - th @ xi), axis=0)
        out.append(Solution(xi, s, int(keep.sum()), residual))
    return out


def jvp(model, x: tf.Tensor, tangent: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(model(x), J_model(x)·tangent) by forward-mode autodiff (one extra pass, no
    Jacobian is formed). Differentiable by an enclosing GradientTape. A
    :class:`eae.chains.ChainEncoder` or a plain Dense-stack Keras model takes the
    written-out forward mode of :func:`eae.chains.dense_jvp`; anything else (a callable
    ``model(x, training=False)``) ``ForwardAccumulator``."""
    if hasattr(model, "jvp"):
        return model.jvp(x, tangent)
    if isinstance(model, keras.Model):
        return model_jvp(model, x, tangent)
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=tangent) as acc:
        y = model(x, training=False)
    return y, acc.jvp(y)


def encode_each_jvp(encoder, x: tf.Tensor, tangent: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
    """(codes, J·tangent), both [C, N, latent]: every chain of ``encoder`` on one input."""
    if hasattr(encoder, "encode_each_jvp"):
        return encoder.encode_each_jvp(x, tangent)
    return jvp(lambda v, training=False: encoder.encode_each(v), x, tangent)


def sindy_terms(encoder, decoder, x, x_dot, ridge: float = 0.0,
                poly_order: int = 3, sines: bool = True) -> dict[str, tf.Tensor]:
    """Every intermediate of the SINDy-EAE objective for one batch (dict of tensors):
    z, z_dot, theta, xi, z_dot_model, x_hat, x_dot_hat. With a several-chain encoder
    the batch is chain-major and Ξ is fitted per chain ([C, terms, latent])."""
    chains = chains_of(encoder)
    z, z_dot = jvp(encoder, x, x_dot)
    theta = sindy_library(z, poly_order, sines)
    if chains > 1:
        per_chain = lambda t: tf.reshape(t, [chains, -1, t.shape[-1]])  # noqa: E731
        xi = least_squares(per_chain(theta), per_chain(z_dot), ridge)
        z_dot_model = tf.reshape(tf.matmul(per_chain(theta), xi), tf.shape(z_dot))
    else:
        xi = least_squares(theta, z_dot, ridge)
        z_dot_model = tf.matmul(theta, xi)
    x_hat, x_dot_hat = jvp(decoder, z, z_dot_model)
    return dict(z=z, z_dot=z_dot, theta=theta, xi=xi, z_dot_model=z_dot_model,
                x_hat=x_hat, x_dot_hat=x_dot_hat)


def make_sindy_loss(lambda_x: float = 1.0, lambda_x_dot: float = 1.0, ridge: float = 0.0,
                    poly_order: int = 3, sines: bool = True):
    """The EAE loss function ``loss(encoder, decoder, (x, x_dot))`` of SPEC §3.1 (Eq. 14):
    λ_x mean (x − x̂)² + λ_ẋ mean (ẋ − J_D(z) Θ(z) Ξ)²."""

    def sindy_loss(encoder, decoder, batch):
        x, x_dot = batch[0], batch[1]
        chains = chains_of(encoder)
        t = sindy_terms(encoder, decoder, x, x_dot, ridge, poly_order, sines)
        loss_x = chain_mean(tf.square(x - t["x_hat"]), chains)
        loss_x_dot = chain_mean(tf.square(x_dot - t["x_dot_hat"]), chains)
        return lambda_x * loss_x + lambda_x_dot * loss_x_dot

    return sindy_loss


def loss_from_config(loss_cfg: Mapping) -> Callable:
    """:func:`make_sindy_loss` from the ``loss`` config section."""
    return make_sindy_loss(float(loss_cfg.get("lambda_x", 1.0)),
                           float(loss_cfg.get("lambda_x_dot", 1.0)),
                           float(loss_cfg.get("ridge", 0.0)))


# -- trainer and stages -------------------------------------------------------------------


def build_models(model_cfg: Mapping, n_pixels: int, seed: int):
    """(encoder, decoder): n² → hidden (ELU) → latent (linear), latent → hidden → n²."""
    from eae.models import mlp_decoder, mlp_encoder

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
    """An :class:`eae.train.EAETrainer` for the SINDy-EAE (config section ``rd.eae``:
    model, loss, sampler, train) on the RD dataset store ``data_path``.

    Returns ``(trainer, splits)`` with ``splits[name] = dict(x, x_dot, time)``.
    """
    from eae import sampler as simmering
    from eae.rd_data import load_rd_split
    from eae.train import EAETrainer, TrainSettings, build_chain_encoder

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
    without ``ensemble``) — :func:`eae.experiment.train_stage` of :data:`RD`."""
    from eae.experiment import train_stage

    return train_stage(RD, cfg, data_path, out_dir, checkpoint_dir, stop_after=stop_after)


def make_recorder(trainer, x_test: np.ndarray, x_dot_test: np.ndarray, loss_cfg: Mapping,
                  test_loss: bool = False):
    """``record()`` for :func:`eae.ensemble.sample_ensemble`: per encoder sample, Ξ on
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

    from eae.experiment import Recording

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
               "d(latent)/dt = sum over term of coefficients[term, latent] * term(z)"},
    )
    return Recording(record, static, ("coefficients", "latent_code"))


def coefficients_stage(cfg: Mapping, data_path, train_dir, out_path):
    """Stage ``rd_coefficients``: M encoder samples with the decoder fixed, continuing the
    thermostat chain where training ended; per member Ξ on the test data → Zarr
    (:func:`eae.ensemble.ensemble_stage` of :data:`RD`).

    Store: ``coefficients`` (member, term, latent) — the coefficient of library term
    ``term`` in dz_latent/dt —, ``latent_code`` and ``latent_velocity`` (member, sample,
    latent): test latents z and their time derivatives ż = J_E ẋ;
    ``loss``, ``kinetic_temperature`` and (if
    ``ensemble.test_loss``) ``test_loss`` (member); the ensemble means
    ``coefficients_mean`` and ``latent_code_mean``, coords ``term`` (names), ``latent``
    ("z1", "z2"), ``time`` (sample).
    """
    from eae.ensemble import ensemble_stage

    return ensemble_stage(RD, cfg, data_path, train_dir, out_path)


def _spec():
    from eae.experiment import ExperimentSpec

    return ExperimentSpec(name="rd", module="eae.sindy", trainer=rd_trainer,
                          recording=_recording, train_name="train_rd_eae",
                          ensemble_name="rd_coefficients", describe=_describe,
                          final_summary=_final_summary)


#: The SINDy-EAE on reaction–diffusion as an :class:`eae.experiment.ExperimentSpec`.
RD = _spec()


# -- synthetic data (tests, CI) ------------------------------------------------------------


def synthetic_oscillator(n: int = 8, n_snapshots: int = 1200, dt: float = 0.05,
                         omega: float = 0.9, amplitude: float = 1.0, quadratic: float = 0.2,
                         n_test: int = 200, n_train: int = 600, n_val: int = 200,
                         seed: int = 0):
    """A dataset store (as :mod:`eae.rd_data` writes) of a linear oscillator embedded in
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

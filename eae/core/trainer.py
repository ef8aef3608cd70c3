"""EAE training (Algorithm 1): Simmering samples encoders, Adam moves the decoder.

For any encoder, decoder and reconstruction loss. Each inner step takes one mini-batch
and one forward/backward pass, which gives both the encoder force (consumed by the
Simmering step) and the decoder gradient at the sampled encoder (accumulated). After
``encoder_steps`` inner steps the decoder takes one Adam step on the averaged gradient.
A whole round of inner steps runs as one compiled loop.

Checkpoints hold every piece of state (encoder, decoder, Adam, thermostat, data
position), are written atomically after every decoder update, and a rerun resumes
from the last one; on CPU with the same seed a resumed run ends exactly where an
uninterrupted one does.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd

from eae.core import sampler as simmering
from eae.core.chains import ChainEncoder, chain_mean, chains_of
# The settings and the mini-batch schedule live in eae.core.train_settings; importable
# from here as before (``eae.core.trainer.TrainSettings``, ``eae.train.batch_indices``).
from eae.core.train_settings import (  # noqa: F401
    TrainSettings, annealed_sampler_config, batch_indices, batches_per_epoch)
from eae.support.io import write_csv_atomic
from eae.support.progress import Progress
from eae.support.runtime import keras, tf

logger = logging.getLogger("eae")

#: loss_fn(encoder, decoder, batch) -> reconstruction loss per chain [C]; batch is a
#: tuple of chain-major tensors [C·B, …], one per training array, and the encoder a
#: :class:`eae.core.chains.ChainEncoder` (see :func:`eae.core.chains.chain_mean`).
LossFn = Callable[[ChainEncoder, keras.Model, tuple], tf.Tensor]

#: Bumped when the checkpoint layout changes, so an old checkpoint is never resumed.
CHECKPOINT_FORMAT = "chains-2"  # 2: adaptive thermostat state (friction, eta, heat)

LOSS_QUANTILES = (0.05, 0.25, 0.5, 0.75, 0.95)
#: a round whose mean T_kin is this many times its target T is logged as a warning
HOT_WARNING_FACTOR = 2.0


class TrainingDiverged(RuntimeError):
    """Training produced NaN/inf or a runaway kinetic temperature."""


#: training samples whose chain-0 codes give the code scale logged per decoder update
CODE_SCALE_BATCH = 256


def mse_loss(encoder, decoder, batch):
    """Mean squared reconstruction error of x per chain (the default EAE objective)."""
    x = batch[0]
    err = tf.square(decoder(encoder(x, training=False), training=False) - x)
    return chain_mean(err, chains_of(encoder))


class EAETrainer:
    """Algorithm 1 for an encoder/decoder pair and a reconstruction loss.

    ``encoder`` is a :class:`eae.core.chains.ChainEncoder` of ``settings.chains`` chains (a
    plain Keras model is wrapped as one chain). ``train_arrays`` are the training
    arrays (first axis = sample), handed to ``loss_fn`` as one chain-major batch tuple.
    ``val_arrays`` (optional) give a validation loss per decoder update.
    """

    def __init__(
        self,
        encoder: ChainEncoder | keras.Model,
        decoder: keras.Model,
        train_arrays: Sequence[np.ndarray],
        sampler_config: simmering.SimmeringConfig,
        settings: TrainSettings,
        loss_fn: LossFn = mse_loss,
        val_arrays: Sequence[np.ndarray] | None = None,
    ):
        if settings.deterministic:
            tf.config.experimental.enable_op_determinism()
        if not isinstance(encoder, ChainEncoder):
            encoder = ChainEncoder([encoder])
        if encoder.chains != settings.chains:
            raise ValueError(f"the encoder has {encoder.chains} chains but train.chains = "
                             f"{settings.chains}")
        self.encoder, self.decoder = encoder, decoder
        self.chains = encoder.chains
        self.loss_fn = loss_fn
        self.settings = settings
        self.train = tuple(tf.constant(a) for a in train_arrays)
        self.n_train = int(train_arrays[0].shape[0])
        # every chain sees the whole validation set: tiled chain-major
        self.val = (tuple(tf.constant(np.concatenate([a] * self.chains)) for a in val_arrays)
                    if val_arrays is not None else None)
        self.steps_per_update = settings.steps_per_update(self.n_train)
        self.full_batch = settings.batch_size >= self.n_train
        sampler_config = annealed_sampler_config(sampler_config, settings, self.steps_per_update)
        self.sampler_config = sampler_config
        self.enc_vars = list(encoder.trainable_variables)
        self.dec_vars = list(decoder.trainable_variables)
        self.optimizer = keras.optimizers.Adam(
            learning_rate=settings.learning_rate, beta_1=settings.beta_1,
            beta_2=settings.beta_2, epsilon=settings.epsilon)
        self.optimizer.build(self.dec_vars)
        self.update = 0
        self.sampler = simmering.Simmering(self.enc_vars, sampler_config, chains=self.chains)
        self.state: simmering.SimmeringState | None = None
        self._round = tf.function(self._round_impl)
        self._apply = tf.function(self._apply_impl)
        self._refresh = tf.function(self._refresh_impl)
        self._val_loss = tf.function(lambda: self._chain_losses(self.val))
        self._conf_terms = tf.function(self._conf_terms_impl)
        # the initial weights θ₀: ‖θ − θ₀‖ tells a proper ensemble from free diffusion
        self.theta0 = [tf.Variable(v.read_value(), trainable=False) for v in self.enc_vars]
        self._displacement = tf.function(self._displacement_impl)
        # a fixed evaluation batch for the code scale (nothing fixes an EAE's code scale)
        self._scale_batch = self.train[0][:CODE_SCALE_BATCH]
        self._code_scale = tf.function(self._code_scale_impl)
        self._rounds_flagged = 0
        self._last_flag_warning: int | None = None  # update of the last such log warning

    # -- compiled pieces -------------------------------------------------------
    def _chain_losses(self, batch) -> tf.Tensor:
        loss = self.loss_fn(self.encoder, self.decoder, batch)
        if loss.shape.rank == 0 and self.chains > 1:
            raise ValueError("loss_fn returned one number for several chains; it must "
                             "return one loss per chain (see eae.chains.chain_mean)")
        return tf.reshape(loss, [self.chains])

    def _value_and_grad(self, batch):
        def value_and_grad():
            with tf.GradientTape() as tape:
                losses = self._chain_losses(batch)
                # Chain c's encoder only enters loss c: the gradient of the sum is every
                # chain's own force; the decoder follows the chain average.
                total = tf.reduce_sum(losses)
            grads = tape.gradient(total, self.enc_vars + self.dec_vars)
            n = len(self.enc_vars)
            dec_grads = [g / float(self.chains) for g in grads[n:]]
            return losses, grads[:n], dec_grads

        return value_and_grad

    def _gather(self, idx):
        """Chain-major batch [C·B, …] of per-chain indices [C, B]."""
        flat = tf.reshape(idx, [-1])
        return tuple(tf.gather(a, flat) for a in self.train)

    def _round_impl(self, state, indices, accumulate: bool = True):
        """``len(indices)`` Simmering steps; returns the state, per-step diagnostics and
        the decoder gradient averaged over the steps (zeros when not accumulating)."""
        n = tf.shape(indices)[0]
        acc = [tf.zeros_like(v) for v in self.dec_vars]
        infos = [tf.TensorArray(tf.float64, size=n) for _ in simmering.SimmeringInfo._fields]
        for i in tf.range(n):
            vg = self._value_and_grad(self._gather(indices[i]))
            state, info, dec_grads = self.sampler.step(state, vg)
            if accumulate:
                acc = [a + g for a, g in zip(acc, dec_grads)]
            infos = [ta.write(i, x) for ta, x in zip(infos, info)]
        scale = 1.0 / tf.cast(n, tf.float32)
        return state, simmering.SimmeringInfo(*[ta.stack() for ta in infos]), [a * scale for a in acc]

    def _conf_terms_impl(self, idx_a, idx_b, seed):
        from eae.core.temperature import split_batch_terms

        batch_a, batch_b = self._gather(idx_a), self._gather(idx_b)
        return split_batch_terms(self.enc_vars, lambda: self._chain_losses(batch_a),
                                 lambda: self._chain_losses(batch_b),
                                 n_probes=self.settings.tconf_probes, seed=seed,
                                 chains=self.chains)

    def measure_configurational(self, key: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Per chain [C]: unbiased estimates of |∇L|² and tr ∇²L at the current encoders
        on two fresh disjoint batches of ``tconf_batch`` training samples drawn from
        (seed, key); None when ``tconf_batch`` is 0. T_conf = Σ|∇L|² / Σ tr ∇²L."""
        b = min(int(self.settings.tconf_batch), self.n_train // 2)
        if b <= 0:
            return None
        idx = np.stack([np.random.default_rng([self.settings.seed, int(key), 0x7C0F, c])
                        .choice(self.n_train, 2 * b, replace=False) for c in range(self.chains)])
        idx = idx.astype(np.int32)
        grad_sq, curvature = self._conf_terms(tf.constant(idx[:, :b]), tf.constant(idx[:, b:]),
                                              tf.constant([self.settings.seed, int(key)], tf.int64))
        return grad_sq.numpy(), curvature.numpy()

    def _code_scale_impl(self):
        codes = tf.cast(self.encoder.encode_each(self._scale_batch)[0], tf.float64)
        codes = tf.reshape(codes, [tf.shape(codes)[0], -1])
        return tf.reduce_mean(tf.math.reduce_variance(codes, axis=0))

    def _displacement_impl(self):
        total = tf.zeros([self.chains], tf.float64)
        for v, v0 in zip(self.enc_vars, self.theta0):
            d = tf.cast(tf.reshape(v - v0, [self.chains, -1]), tf.float64)
            total += tf.reduce_sum(tf.square(d), axis=1)
        return tf.sqrt(total)

    def displacement(self) -> np.ndarray:
        """Per chain [C]: ‖θ − θ₀‖ of the encoder from its initial weights
        (:mod:`eae.core.wellposed`)."""
        return self._displacement().numpy()

    def code_scale(self) -> float:
        """Mean per-unit variance of chain 0's codes on a fixed evaluation batch (the first
        ``CODE_SCALE_BATCH`` training samples): the scale activity thresholds compare to."""
        return float(self._code_scale().numpy())

    def _apply_impl(self, grads):
        self.optimizer.apply_gradients(zip(grads, self.dec_vars))

    def _refresh_impl(self, state, indices):
        state, _ = simmering.refresh(state, self._value_and_grad(self._gather(indices)))
        return state

    # -- public API -----------------------------------------------------------
    def initialize(self) -> None:
        """Initial thermostat state at the encoder's initial weights."""
        vg = self._value_and_grad(self._gather(self.indices_for(0, 1)[0]))
        self.state, _ = self.sampler.init(vg, seed=[self.settings.seed, 1])

    def indices_for(self, first_step: int, n_steps: int) -> tf.Tensor:
        """Mini-batch indices [n_steps, C, B] of every chain for global steps first_step…"""
        s = self.settings
        return tf.constant(np.stack(
            [batch_indices(self.n_train, s.batch_size, s.seed, first_step, n_steps, chain=c)
             for c in range(self.chains)], axis=1))

    def run_update(self) -> dict:
        """One decoder update: a round of encoder steps, then one Adam step."""
        if self.state is None:
            self.initialize()
        first = self.update * self.steps_per_update
        idx = self.indices_for(first, self.steps_per_update)
        t0 = time.perf_counter()
        state, info, grads = self._round(self.state, idx)
        self.check_diagnostics(info)
        # measured at the round's last encoders, against the decoder they were sampled with
        conf = self.measure_configurational(self.update + 1)
        self._apply(grads)
        next_idx = self.indices_for(first + self.steps_per_update, 1)[0]
        self.state = self._refresh(state, next_idx)
        self.update += 1
        losses = info.loss.numpy()  # [steps, chains]
        h = info.conserved_energy.numpy()
        t_kin = info.kinetic_temperature.numpy().reshape(len(losses), -1)
        target = info.temperature.numpy()
        row = {
            "update": self.update,
            "steps": int(self.state.step),
            "loss_mean": float(losses.mean()),
            "loss_min": float(losses.min()),
            "loss_max": float(losses.max()),
            **{f"loss_q{int(q * 100):02d}": float(np.quantile(losses, q)) for q in LOSS_QUANTILES},
            "temperature": float(info.temperature.numpy()[-1]),
            "kinetic_temperature": float(t_kin.mean()),
            # ratio of means over the round's steps and chains
            "kinetic_over_target": float(t_kin.mean() / target.mean()),
            **{f"kinetic_over_target_c{c}": float(t_kin[:, c].mean() / target.mean())
               for c in range(t_kin.shape[1])},
            **_conf_columns(conf, float(target[-1])),
            # H' is conserved only with exact (full-batch) gradients; see eae.sampler
            "conserved_energy_drift": (float(np.mean(h[-1] - h[0])) if self.full_batch
                                       else float("nan")),
            "xi1": float(np.mean(info.xi1.numpy()[-1])),
            "code_scale": self.code_scale(),
            **{f"param_displacement_c{c}": float(d) for c, d in enumerate(self.displacement())},
            "round_seconds": time.perf_counter() - t0,
        }
        if self.chains > 1:
            row.update(self._round_convergence(losses))
        if self.val is not None:
            row["val_loss"] = float(np.mean(self._val_loss().numpy()))
        return row

    def _round_convergence(self, losses: np.ndarray) -> dict:
        """Split-R̂ and ESS of the chains' losses over one round (decoder fixed), with a
        log warning when they miss the configured limits."""
        from eae.core.diagnostics import trace_diagnostics

        d = trace_diagnostics(losses)
        s = self.settings
        bad = []
        if d["rhat"] > s.rhat_max:
            bad.append(f"R̂ {d['rhat']:.3f} > {s.rhat_max} (train.rhat_max)")
        if d["ess_bulk"] < s.ess_min_round:
            bad.append(f"bulk ESS {d['ess_bulk']:.1f} < {s.ess_min_round} (train.ess_min_round)")
        if bad:
            self._rounds_flagged += 1
            # While the decoder still moves most rounds miss the limits; one warning per
            # tenth of training keeps the log readable (every round is in history.csv).
            every = max(1, self.settings.decoder_updates // 10)
            if self._last_flag_warning is None or self.update - self._last_flag_warning >= every:
                self._last_flag_warning = self.update
                logger.warning("decoder update %d: chains not converged within the round: %s "
                               "(%d round(s) flagged so far in this run)",
                               self.update, "; ".join(bad), self._rounds_flagged)
        return {"rhat_loss": d["rhat"], "ess_bulk_loss": d["ess_bulk"],
                "ess_tail_loss": d["ess_tail"], "iat_loss": d["iat"]}

    def check_diagnostics(self, info: simmering.SimmeringInfo) -> None:
        """Raise :class:`TrainingDiverged` on NaN/inf diagnostics or a runaway T_kin."""
        where = f"decoder update {self.update + 1}"
        for name, values in zip(info._fields, info):
            if not np.all(np.isfinite(values.numpy())):
                raise TrainingDiverged(
                    f"{name} became NaN/inf during {where}; reduce dt or temperature. "
                    "The last good checkpoint is kept.")
        # Against the round's hottest target: while T is annealed down, T_kin lags the
        # schedule by about the thermostat time scale, which is not a runaway.
        ratio = float(np.mean(info.kinetic_temperature.numpy()) / np.max(info.temperature.numpy()))
        self._warn_if_hot(ratio, where)
        if ratio > self.settings.runaway_factor:
            raise TrainingDiverged(
                f"kinetic temperature ran away during {where}: mean T_kin = {ratio:.3g} × T "
                f"(limit runaway_factor = {self.settings.runaway_factor}); reduce dt. "
                "The last good checkpoint is kept.")

    def _warn_if_hot(self, ratio: float, where: str) -> None:
        """Warn (once per tenth of training) when a round's mean T_kin is ≥ 2× its target,
        naming the likely cause: long before the runaway stop the ensemble is not at T."""
        if ratio < HOT_WARNING_FACTOR:
            return
        every = max(1, self.settings.decoder_updates // 10)
        last = getattr(self, "_last_hot_warning", None)
        if last is not None and self.update - last < every:
            return
        self._last_hot_warning = self.update
        from eae.core.temperature import remedy

        cfg = self.sampler_config
        cause = remedy(cfg.thermostat, cfg.chain_length)
        logger.warning("%s: the ensemble runs at T_kin = %.3g × T (target %.3g): %s",
                       where, ratio, float(cfg.temperature), cause)

    def _report_temperatures(self, history: pd.DataFrame) -> None:
        """Log the temperatures training's last tenth reached; a warning with the likely
        cause and remedy when they leave the bands of :mod:`eae.core.temperature`."""
        from eae.core.temperature import remedy, training_temperatures

        if history.empty:
            return
        check = training_temperatures(history)
        logger.info("training's last tenth: T_kin/T %.3f, T_conf/T %.3g", check.kinetic,
                    check.configurational)
        if check.flagged:
            cfg = self.sampler_config
            logger.warning("training ended away from its target T: %s; likely cause: %s",
                           "; ".join(check.reasons),
                           remedy(cfg.thermostat, cfg.chain_length, check))

    # -- checkpoints ----------------------------------------------------------
    def checkpoint_arrays(self) -> dict[str, np.ndarray]:
        arrays = {"update": np.array(self.update),
                  "fingerprint": np.array(_versioned(getattr(self, "fingerprint", "")))}
        for prefix, variables in (("enc", self.encoder.weights), ("dec", self.decoder.weights),
                                  ("opt", self.optimizer.variables)):
            for i, v in enumerate(variables):
                arrays[f"{prefix}/{i}"] = v.numpy()
        for key, value in self.sampler.state_arrays(self.state).items():
            arrays[f"state/{key}"] = value
        for i, v in enumerate(self.theta0):
            arrays[f"theta0/{i}"] = v.numpy()
        return arrays

    def save_checkpoint(self, path: str | os.PathLike) -> None:
        """Write every piece of training state atomically (:func:`eae.support.io.atomic_path`)."""
        from eae.support.io import atomic_path

        with atomic_path(path) as tmp:
            np.savez(tmp, **self.checkpoint_arrays())

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        with np.load(path) as data:
            self.update = int(data["update"])
            for prefix, variables in (("enc", self.encoder.weights),
                                      ("dec", self.decoder.weights),
                                      ("opt", self.optimizer.variables)):
                for i, v in enumerate(variables):
                    v.assign(data[f"{prefix}/{i}"])
            if "theta0/0" in data:  # older checkpoints lack θ₀: the builder's weights stand
                for i, v in enumerate(self.theta0):
                    v.assign(data[f"theta0/{i}"])
            self.state = self.sampler.restore(
                {k[len("state/"):]: data[k] for k in data.files if k.startswith("state/")})

    # -- the loop -------------------------------------------------------------
    def fit(self, out_dir: str | os.PathLike, checkpoint_dir: str | os.PathLike | None = None,
            stop_after: int | None = None, fingerprint: str = "") -> pd.DataFrame:
        """Train to ``decoder_updates``, resuming from ``checkpoint_dir/checkpoint.npz``.

        Writes ``history.csv`` (one row per decoder update) and the checkpoint after
        every update; the history is kept beside the checkpoint too, so both survive
        a workflow manager deleting an incomplete ``out_dir``. ``stop_after`` ends this
        call after that many updates (tests use it to simulate a killed job). A
        checkpoint whose ``fingerprint`` (e.g. a hash of config and data) differs from
        this run's is ignored, so a changed setting never resumes a stale run.
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        ckpt_dir = Path(checkpoint_dir) if checkpoint_dir else out
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        ckpt, hist_path = ckpt_dir / "checkpoint.npz", ckpt_dir / "history.csv"
        rows: list[dict] = []
        self.fingerprint = fingerprint
        if ckpt.exists() and _checkpoint_fingerprint(ckpt) != _versioned(fingerprint):
            logger.warning("ignoring checkpoint %s: made with other settings or data", ckpt)
        elif ckpt.exists():
            self.load_checkpoint(ckpt)
            if hist_path.exists():
                rows = pd.read_csv(hist_path).to_dict("records")[: self.update]
            logger.info("resuming from %s at decoder update %d", ckpt, self.update)
        total = self.settings.decoder_updates
        progress = Progress(total, "eae train", logger, self.settings.log_every_s, start=self.update)
        done_now = 0
        while self.update < total and (stop_after is None or done_now < stop_after):
            row = self.run_update()
            rows.append(row)
            self.save_checkpoint(ckpt)
            write_csv_atomic(pd.DataFrame(rows), hist_path)
            done_now += 1
            progress.update(self.update, _summary(row), force=self.update in (1, total))
        history = pd.DataFrame(rows)
        if self._rounds_flagged:
            logger.warning("%d of %d decoder updates in this run ended with unconverged chains "
                           "(R̂ or ESS of the round's losses, columns rhat_loss/ess_bulk_loss "
                           "of history.csv)", self._rounds_flagged, done_now)
        self._report_temperatures(history)
        if hist_path.parent != out:
            write_csv_atomic(history, out / "history.csv")
        return history

    def save_models(self, out_dir: str | os.PathLike) -> None:
        """encoder.keras (chain 0's final encoder), decoder.keras and final_state.npz
        (the full training state of every chain, from which ensemble sampling
        continues)."""
        out = Path(out_dir)
        self.encoder.member(0).save(out / "encoder.keras")
        self.decoder.save(out / "decoder.keras")
        self.save_checkpoint(out / "final_state.npz")


def _versioned(fingerprint: str) -> str:
    return f"{CHECKPOINT_FORMAT}:{fingerprint}"


def _checkpoint_fingerprint(path: Path) -> str:
    with np.load(path) as data:
        return str(data["fingerprint"]) if "fingerprint" in data else ""


def stage_fingerprint(settings, data_path, module: str) -> str:
    """The checkpoint fingerprint of a training stage (:func:`eae.support.provenance.fingerprint`):
    its settings, its data store's checksum and the source of ``module``'s import
    closure in eae."""
    from eae.support.provenance import fingerprint

    return fingerprint(settings, [data_path], [module])


def stage_seeds(cfg) -> dict:
    """The seeds a training or ensemble stage's provenance record names."""
    return {"train": dict(cfg.get("train", {})).get("seed", 0)}


def _conf_columns(conf, temperature: float) -> dict:
    """History columns of one T_conf measurement: per chain |∇L|²/T and tr ∇²L (so that
    windows pool as a ratio of sums), and the round's pooled T_conf/T."""
    if conf is None:
        return {}
    grad_sq, curvature = conf
    cols = {"configurational_over_target": float(grad_sq.sum() / curvature.sum() / temperature)}
    for c, (g, k) in enumerate(zip(grad_sq, curvature)):
        cols[f"grad_sq_over_T_c{c}"] = float(g / temperature)
        cols[f"curvature_c{c}"] = float(k)
    return cols


def _summary(row: dict) -> str:
    text = (f"loss {row['loss_mean']:.4g} [{row['loss_min']:.4g}, {row['loss_max']:.4g}] "
            f"T_kin/T {row['kinetic_temperature'] / row['temperature']:.3f}")
    if "configurational_over_target" in row:
        text += f" T_conf/T {row['configurational_over_target']:.3g}"
    if "val_loss" in row:
        text += f" val {row['val_loss']:.4g}"
    return text


def build_chain_encoder(builder: Callable[[int], keras.Model], chains: int, seed: int) -> ChainEncoder:
    """``chains`` encoders from a seeded ``builder`` (chain 0 uses ``seed`` itself)."""
    return ChainEncoder.build(builder, int(chains), int(seed))

"""The temperature an ensemble actually reached, measured two independent ways.

* kinetic: T_kin = Σ p²/m / N_f, what the thermostat controls (and what velocity
  resampling resets), so on its own it proves little;
* configurational: T_conf = ⟨|∇L|²⟩ / ⟨tr ∇²L⟩, which holds for exp(−L/T) whatever the
  momenta do (integrate ∂ᵢ(∂ᵢL e^{−L/T}) over θ). The trace comes from Hutchinson's
  estimator, E[vᵀ∇²L v] = tr ∇²L for Rademacher v, with Hessian-vector products;
  on potentials with a diagonal Hessian (the validation problems) it is exact.

TensorFlow is imported only by the estimators, so that tables can use the checks.

Averages are ratios of means over the ensemble, not means of per-sample ratios (which
are unbounded when the trace of one sample is near zero).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from eae.core.wellposed import WELLPOSED_COLUMNS, store_wellposed_columns

__all__ = ["gradient_and_curvature", "split_batch_terms", "configurational_temperature",
           "TemperatureCheck", "check_temperatures", "training_temperatures",
           "ensemble_temperatures", "temperature_columns", "store_temperature_columns",
           "TEMPERATURE_COLUMNS",
           "remedy", "KINETIC_BAND", "CONFIGURATIONAL_BAND"]


def _rademacher(shape, dtype, seed) -> tf.Tensor:
    from eae.support.runtime import tf

    bits = tf.random.stateless_uniform(shape, seed, minval=0, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, dtype)


def gradient_and_curvature(variables: Sequence[tf.Variable], potential: Callable[[], tf.Tensor],
                           n_probes: int = 1, seed: Sequence[int] = (0, 0),
                           chains: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """|∇L|² and a Hutchinson estimate of tr ∇²L at the variables' current values
    (float64). With ``chains`` every variable has a leading chain axis, ``potential()``
    returns one loss per chain [C] (chain c's parameters entering only loss c) and both
    results are per chain [C]. One gradient plus ``n_probes`` Hessian-vector products."""
    from eae.support.runtime import tf

    variables = list(variables)
    grads, curvature = _gradient_and_trace(variables, potential, n_probes, seed, chains)
    return _per_chain_sum([tf.square(g) for g in grads], chains), curvature


def split_batch_terms(variables: Sequence[tf.Variable], potential_a: Callable[[], tf.Tensor],
                      potential_b: Callable[[], tf.Tensor], n_probes: int = 1,
                      seed: Sequence[int] = (0, 0),
                      chains: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """Unbiased estimates of |∇L|² and tr ∇²L of a loss L that is a mean over data, from
    two independent batches a and b (float64; per chain [C] with ``chains``).

    ``∇L_a · ∇L_b`` has expectation |∇L|² because the two batches' gradient noises are
    independent, whereas |∇L_a|² is biased upwards by the noise's variance tr Σ/B —
    at small T that bias is larger than |∇L|² itself. The trace is Hutchinson's on the
    mean loss (L_a + L_b)/2, which is linear in the batch and so unbiased already.
    """
    from eae.support.runtime import tf

    variables = list(variables)
    with tf.GradientTape() as tape:
        loss_a = tf.reduce_sum(potential_a())
    grads_a = tape.gradient(loss_a, variables)
    grads_b, curvature = _gradient_and_trace(
        variables, lambda: 0.5 * (potential_a() + potential_b()), n_probes, seed, chains,
        also=potential_b)
    product = _per_chain_sum([ga * gb for ga, gb in zip(grads_a, grads_b)], chains)
    return product, curvature


def _gradient_and_trace(variables, potential, n_probes, seed, chains, also=None):
    """The gradient of ``also`` (default: of ``potential``) and the Hutchinson trace of
    ``potential``'s Hessian, per chain."""
    from eae.support.runtime import tf

    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    traces = []
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape(persistent=also is not None) as inner:
            loss = tf.reduce_sum(potential())
            other = tf.reduce_sum(also()) if also is not None else None
        grads = inner.gradient(loss, variables)
        probes = []
        for k in range(n_probes):
            vs = [_rademacher(v.shape, v.dtype,
                              tf.random.experimental.stateless_fold_in(seed, k * 1000 + i))
                  for i, v in enumerate(variables)]
            probes.append(vs)
            traces.append(tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)]))
    reported = inner.gradient(other, variables) if also is not None else grads
    del inner
    curvature = []
    for k, vs in enumerate(probes):
        hv = outer.gradient(traces[k], variables)
        curvature.append(_per_chain_sum([h * v for h, v in zip(hv, vs)], chains))
    del outer
    return reported, tf.add_n(curvature) / float(n_probes)


def _per_chain_sum(tensors, chains):
    from eae.support.runtime import tf

    parts = []
    for t in tensors:
        t = tf.cast(t, tf.float64)
        if chains:
            parts.append(tf.reduce_sum(tf.reshape(t, [chains, -1]), axis=1))
        else:
            parts.append(tf.reduce_sum(t))
    return tf.add_n(parts)


def configurational_temperature(grad_sq, curvature, axis=None) -> np.ndarray | float:
    """T_conf = Σ|∇L|² / Σ tr ∇²L over samples (ratio of means along ``axis``)."""
    grad_sq = np.asarray(grad_sq, np.float64)
    curvature = np.asarray(curvature, np.float64)
    return np.sum(grad_sq, axis=axis) / np.sum(curvature, axis=axis)


# -- the measured temperature beside a result ------------------------------------------
#: a result is flagged when a pooled ratio (of any chain) leaves these bands
KINETIC_BAND = (0.9, 1.1)
CONFIGURATIONAL_BAND = (0.75, 1.33)


@dataclasses.dataclass(frozen=True)
class TemperatureCheck:
    """Pooled T_kin/T and T_conf/T of one phase (training's last tenth or ensemble
    sampling): over all chains, and per chain; ``flagged`` when any chain leaves
    :data:`KINETIC_BAND` or :data:`CONFIGURATIONAL_BAND`, with the reasons."""

    kinetic: float
    configurational: float
    kinetic_chains: tuple[float, ...]
    configurational_chains: tuple[float, ...]
    reasons: tuple[str, ...]

    @property
    def flagged(self) -> bool:
        return bool(self.reasons)

    def as_attrs(self, prefix: str) -> dict:
        """Zarr/JSON-friendly attributes (``<prefix>kinetic_over_target`` …)."""
        return {f"{prefix}kinetic_over_target": self.kinetic,
                f"{prefix}configurational_over_target": self.configurational,
                f"{prefix}kinetic_over_target_chains": list(self.kinetic_chains),
                f"{prefix}configurational_over_target_chains": list(self.configurational_chains),
                f"{prefix}temperature_flags": list(self.reasons)}

    @classmethod
    def from_attrs(cls, attrs, prefix: str) -> "TemperatureCheck | None":
        """The check :meth:`as_attrs` wrote under ``prefix`` (None when absent)."""
        if f"{prefix}kinetic_over_target" not in attrs:
            return None

        def num(x):
            return float("nan") if x is None else float(x)

        return cls(num(attrs[f"{prefix}kinetic_over_target"]),
                   num(attrs[f"{prefix}configurational_over_target"]),
                   tuple(map(num, attrs[f"{prefix}kinetic_over_target_chains"])),
                   tuple(map(num, attrs[f"{prefix}configurational_over_target_chains"])),
                   tuple(attrs[f"{prefix}temperature_flags"]))


def check_temperatures(kinetic_chains, grad_sq_over_t, curvature) -> TemperatureCheck:
    """A :class:`TemperatureCheck` from per-chain pooled T_kin/T [C] and per-chain sums of
    |∇L|²/T and tr ∇²L [C] (NaN/empty when T_conf was not measured)."""
    kin = np.atleast_1d(np.asarray(kinetic_chains, np.float64))
    g = np.atleast_1d(np.asarray(grad_sq_over_t, np.float64))
    k = np.atleast_1d(np.asarray(curvature, np.float64))
    conf = g / k if g.size else np.array([])
    pooled_kin = float(np.mean(kin)) if kin.size else float("nan")
    pooled_conf = float(g.sum() / k.sum()) if g.size else float("nan")
    reasons = []
    lo, hi = KINETIC_BAND
    out = [c for c, r in enumerate(kin) if not lo <= r <= hi]
    if out:
        reasons.append(f"T_kin/T outside [{lo}, {hi}] in chain(s) {out}: "
                       + ", ".join(f"{kin[c]:.3g}" for c in out))
    lo, hi = CONFIGURATIONAL_BAND
    out = [c for c, r in enumerate(conf) if not lo <= r <= hi]
    if out:
        reasons.append(f"T_conf/T outside [{lo}, {hi}] in chain(s) {out}: "
                       + ", ".join(f"{conf[c]:.3g}" for c in out))
    return TemperatureCheck(pooled_kin, pooled_conf, tuple(map(float, kin)),
                            tuple(map(float, conf)), tuple(reasons))


def training_temperatures(history, fraction: float = 0.1) -> TemperatureCheck:
    """Pooled temperatures of the last ``fraction`` of a training history (the
    ``kinetic_over_target_c*``, ``grad_sq_over_T_c*``, ``curvature_c*`` columns written by
    :class:`eae.core.trainer.EAETrainer`; older histories fall back to ``kinetic_over_target``)."""
    n = max(1, int(np.ceil(len(history) * fraction)))
    tail = history.iloc[-n:]
    kin_cols = sorted(c for c in tail.columns if c.startswith("kinetic_over_target_c"))
    if not kin_cols:
        kin_cols = ["kinetic_over_target"]
    kin = [float(tail[c].mean()) for c in kin_cols]
    g_cols = sorted(c for c in tail.columns if c.startswith("grad_sq_over_T_c"))
    k_cols = [c.replace("grad_sq_over_T_", "curvature_") for c in g_cols]
    return check_temperatures(kin, [tail[c].sum() for c in g_cols],
                              [tail[c].sum() for c in k_cols])


def ensemble_temperatures(ds) -> TemperatureCheck:
    """Pooled temperatures of an ensemble store's draws (variables ``kinetic_temperature``,
    ``grad_sq``, ``curvature`` over (chain, draw) and the ``temperature`` attribute)."""
    t = float(ds.attrs.get("temperature", np.nan))
    kin = np.asarray(ds["kinetic_temperature"].mean("draw")) / t
    if "grad_sq" in ds:
        g = np.asarray(ds["grad_sq"].sum("draw")) / t
        k = np.asarray(ds["curvature"].sum("draw"))
    else:
        g = k = []
    return check_temperatures(kin, g, k)


#: the columns :func:`temperature_columns` adds to a result's row
TEMPERATURE_COLUMNS = ["T_kin/T train", "T_conf/T train", "T_kin/T ensemble",
                       "T_conf/T ensemble", "T flag", *WELLPOSED_COLUMNS]


def temperature_columns(train: TemperatureCheck | None, ens: TemperatureCheck | None) -> dict:
    """Table columns: pooled T_kin/T and T_conf/T of training's last tenth and of the
    ensemble, and a flag column naming the phases that left the bands."""
    cols, flagged = {}, []
    for name, check in (("train", train), ("ensemble", ens)):
        cols[f"T_kin/T {name}"] = check.kinetic if check else float("nan")
        cols[f"T_conf/T {name}"] = check.configurational if check else float("nan")
        if check is not None and check.flagged:
            flagged.append(name)
    cols["T flag"] = "FLAGGED: " + ", ".join(flagged) if flagged else "ok"
    return cols


def store_temperature_columns(attrs) -> dict:
    """:func:`temperature_columns` of an ensemble store's attributes (``train_…`` from
    training's history, ``ensemble_…`` from the draws; see :func:`eae.core.ensemble.sample_ensemble`),
    followed by the well-posedness columns of :mod:`eae.core.wellposed` (the growth of
    ‖θ − θ₀‖ and the ``improper`` flag): every table that shows the temperature an
    ensemble reached also shows whether it is a proper ensemble at all."""
    return {**temperature_columns(TemperatureCheck.from_attrs(attrs, "train_"),
                                  TemperatureCheck.from_attrs(attrs, "ensemble_")),
            **store_wellposed_columns(attrs)}


def remedy(thermostat: str, chain_length: int, check: TemperatureCheck | None = None) -> str:
    """The likely cause and remedy of an ensemble that is not at its target T (given
    ``check``, specific to which temperature is out)."""
    kin_out = check is not None and not (KINETIC_BAND[0] <= check.kinetic <= KINETIC_BAND[1])
    conf_hot = check is not None and check.configurational > CONFIGURATIONAL_BAND[1]
    if thermostat == "nhc":
        return ("a Nosé–Hoover chain neither absorbs mini-batch gradient noise (T_kin high) "
                "nor relaxes the encoders' configuration to T (T_conf high while T_kin is at "
                "T): use sampler.thermostat: adaptive")
    if check is not None and conf_hot and not kin_out:
        return ("the encoders' configuration has not relaxed to T (T_conf high, T_kin at T): "
                "more encoder steps per decoder update (train.encoder_steps), a larger "
                "sampler.langevin_friction, or a smaller train.learning_rate (the decoder "
                "moves the landscape away from the ensemble)")
    if check is not None and not kin_out:
        return ("the encoders' configuration sits colder than T (T_conf low, T_kin at T): "
                "sampling has not yet spread it to T (more steps: ensemble.burn_in, "
                "train.encoder_steps) or sampler.dt is too large for the curvature (reduce it)")
    return ("the gradient noise is too strong for this dt at this T (T_kin off): reduce "
            "sampler.dt or increase train.batch_size")

"""The immutable side of the Simmering sampler: the state tuple an integrator step
carries (:class:`SimmeringState`), the diagnostics it reports (:class:`SimmeringInfo`)
and the pure tensor math of the thermostats — sums of squares and kinetic energies
(per chain, per friction group), the Nosé–Hoover chain masses and its half step
(Trotter-split with Suzuki–Yoshida weights, one XLA kernel), the friction masses of
adaptive Langevin, the stateless velocity draws and the extended energy H'.

Split from :mod:`eae.core.sampler`, whose :class:`eae.core.sampler.Simmering` owns the
momenta variables and calls these functions (its module docstring describes the
scheme); the sampler re-exports every name here. Depends only on
:mod:`eae.core.sampler_settings`.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

from eae.core.sampler_settings import SUZUKI_YOSHIDA, SimmeringConfig, temperature_at
from eae.support.runtime import tf


class SimmeringState(NamedTuple):
    """What the integrator carries between steps besides positions and momenta.

    pending_scale: the factor between the stored displacements and p·dt/m, folded
    into the next step's fused kick (float64; per friction group [K] for the adaptive
    thermostat). grad: ∇L at the current position (reused by the next step's first
    kick). loss: L at the current position (float64). ke2: Σ p²/m (float64; per
    friction group [K] for the adaptive thermostat). xi, v_xi: chain positions and
    velocities p_ξ/Q ([M], float64). step: steps taken (int64). seed: base of the
    stateless RNG ([2] int64). friction: the adaptive thermostat's ξ per group [K];
    eta: its time integral ∫ξ dt [K]; heat: energy the Langevin noise and friction γ
    have put in so far (these three are zeros [1] for the chain). With ``chains``
    every field but step and seed gets a trailing chain axis.
    """

    pending_scale: tf.Tensor
    grad: tuple
    loss: tf.Tensor
    ke2: tf.Tensor
    xi: tf.Tensor
    v_xi: tf.Tensor
    step: tf.Tensor
    seed: tf.Tensor
    friction: tf.Tensor
    eta: tf.Tensor
    heat: tf.Tensor


class SimmeringInfo(NamedTuple):
    """Per-step diagnostics: loss at the new position, target T, kinetic temperature
    T_kin = Σ p²/m / N_f, the extended energy H' (conserved only with exact gradients)
    and ξ_1 (the chain's first position; for the adaptive thermostat the mean friction ξ)."""

    loss: tf.Tensor
    temperature: tf.Tensor
    kinetic_temperature: tf.Tensor
    conserved_energy: tf.Tensor
    xi1: tf.Tensor


def num_degrees_of_freedom(variables: Sequence[tf.Variable]) -> int:
    """N_f: the number of sampled scalar parameters."""
    return int(sum(v.shape.num_elements() for v in variables))


def _sum_squares(tensors: Sequence[tf.Tensor], chains: int | None = None) -> tf.Tensor:
    """Σ x² over all tensors: float32 partial sums along the last axis (at most a few
    thousand terms each), accumulated in float64 (millions of terms in all). With
    ``chains``, every tensor has a leading chain axis and the result is per chain [C]."""
    parts = []
    for t in tensors:
        keep = 1 if chains else 0
        rows = tf.reduce_sum(tf.square(t), axis=-1) if t.shape.rank > keep else tf.square(t)
        rows = tf.cast(rows, tf.float64)
        parts.append(tf.reduce_sum(rows, axis=list(range(1, rows.shape.rank))) if chains
                     else tf.reduce_sum(rows))
    return tf.add_n(parts)


def _kinetic2(momentum: Sequence[tf.Tensor], mass: float, chains: int | None = None) -> tf.Tensor:
    """Σ p²/m (float64; per chain [C] with ``chains``)."""
    return _sum_squares(momentum, chains) / mass


def _per_chain(factor: tf.Tensor, like: tf.Tensor) -> tf.Tensor:
    """A per-chain factor [C] shaped to broadcast against a tensor [C, …]."""
    return tf.reshape(tf.cast(factor, like.dtype), [-1] + [1] * (like.shape.rank - 1))


def _thermostat_masses(config: SimmeringConfig, temperature, n_dof) -> tf.Tensor:
    tau = config.tau * config.dt
    q = tf.fill([config.chain_length], temperature * tau * tau)
    return tf.tensor_scatter_nd_update(q, [[0]], [n_dof * temperature * tau * tau])


def _draw_momenta(shapes, dtypes, config, temperature, seed, counter):
    """Momenta p ~ N(0, m T), i.e. velocities ~ N(0, T/m); stateless so resumable."""
    std = tf.sqrt(temperature * config.mass)
    out = []
    # fold_in derives independent streams per (tensor, draw); adding i to the seed
    # would let runs whose seeds differ by one share their velocity draws
    base = tf.random.experimental.stateless_fold_in(seed, tf.cast(counter, tf.int64))
    for i, (shape, dtype) in enumerate(zip(shapes, dtypes)):
        s = tf.random.experimental.stateless_fold_in(base, i)
        out.append(tf.cast(std, dtype) * tf.random.stateless_normal(shape, s, dtype=dtype))
    return tuple(out)


@tf.function(jit_compile=True, autograph=False)
def _nhc_half_step(ke2, xi, v_xi, q, temperature, n_dof, half_dt, weights, n_respa):
    """Propagate the chain by dt/2 (MTTK Trotter splitting with Suzuki–Yoshida weights).

    Returns the factor by which all particle momenta must be scaled plus the new chain
    positions and velocities. The chain sweeps are unrolled scalar algebra: XLA fuses
    them into one kernel, so a 30-link chain costs about one launch per half step.
    """
    m = xi.shape[0]
    v = tf.unstack(v_xi)
    x = tf.unstack(xi)
    qs = tf.unstack(q)
    scale = tf.constant(1.0, tf.float64)

    def force(j, ke2_now):
        if j == 0:
            return (ke2_now - n_dof * temperature) / qs[0]
        return (qs[j - 1] * v[j - 1] * v[j - 1] - temperature) / qs[j]

    def damp(x):
        # Far from equilibrium (a burst of heat, e.g. right after initialisation or a
        # decoder update) the chain can ask for factors beyond float64's range; the
        # clip bounds one factor at e^±40, which still empties or refills the kinetic
        # energy within one step, and keeps every quantity finite.
        return tf.exp(tf.clip_by_value(x, -40.0, 40.0))

    def update(j, d, ke2_now):
        if j == m - 1:
            v[j] = v[j] + 0.5 * d * force(j, ke2_now)
        else:
            e = damp(-0.25 * d * v[j + 1])
            v[j] = (v[j] * e + 0.5 * d * force(j, ke2_now)) * e

    for _ in range(n_respa):
        for w in weights:
            d = w * half_dt / n_respa
            ke2_now = ke2 * scale * scale
            for j in reversed(range(m)):
                update(j, d, ke2_now)
            scale = scale * damp(-d * v[0])
            ke2_now = ke2 * scale * scale
            x = [xj + d * vj for xj, vj in zip(x, v)]
            for j in range(m):
                update(j, d, ke2_now)
    return scale, tf.stack(x), tf.stack(v)


def _thermostat(config, ke2, xi, v_xi, temperature, n_dof):
    if config.chain_length == 0:
        return tf.ones_like(ke2), xi, v_xi
    q = _thermostat_masses(config, temperature, n_dof)
    return _nhc_half_step(ke2, xi, v_xi, q, temperature, n_dof, 0.5 * config.dt,
                          SUZUKI_YOSHIDA[config.sy_order], config.n_respa)


def conserved_energy(config: SimmeringConfig, state: SimmeringState, n_dof) -> tf.Tensor:
    """H' (float64), conserved up to the integrator's error when gradients are exact.

    Chain: L + Σp²/2m + Σ Q_j v_ξj²/2 + N_f T ξ_1 + T Σ_{j≥2} ξ_j.
    Adaptive: L + Σp²/2m + Σ_k μ_k ξ_k²/2 + Σ_k N_f,k T η_k − heat, μ_k = N_f,k T (τ dt)²
    (``n_dof`` is then the per-group N_f,k [K]); the continuous dynamics conserve it, the
    discrete scheme does not (see :mod:`eae.core.sampler`).
    """
    temperature = temperature_at(config, state.step)
    if config.adaptive:
        mu = _friction_mass(config, temperature, n_dof)
        energy = state.loss + 0.5 * tf.reduce_sum(state.ke2, axis=0)
        energy += tf.reduce_sum(0.5 * mu * tf.square(state.friction)
                                + n_dof * temperature * state.eta, axis=0)
        return energy - state.heat[0]
    energy = state.loss + 0.5 * state.ke2
    if config.chain_length > 0:
        q = _thermostat_masses(config, temperature, n_dof)
        q = tf.reshape(q, [-1] + [1] * (state.v_xi.shape.rank - 1))  # [M] or [M, 1] (chains)
        energy += 0.5 * tf.reduce_sum(q * tf.square(state.v_xi), axis=0)
        energy += n_dof * temperature * state.xi[0] + temperature * tf.reduce_sum(state.xi[1:], axis=0)
    return energy


def _friction_mass(config: SimmeringConfig, temperature, n_dof) -> tf.Tensor:
    """μ_k = N_f,k T (τ dt)² per friction group (``n_dof``: [K], or [K, 1] with chains)."""
    tau = config.tau * config.dt
    return n_dof * temperature * tau * tau


def _groups_sum_squares(tensors: Sequence[tf.Tensor], groups: Sequence[int], n_groups: int,
                        chains: int | None) -> tf.Tensor:
    """Σ x² per friction group: [K] (or [K, C] with chains), float64."""
    parts = [[] for _ in range(n_groups)]
    for t, g in zip(tensors, groups):
        parts[g].append(_sum_squares([t], chains))
    return tf.stack([tf.add_n(p) for p in parts])

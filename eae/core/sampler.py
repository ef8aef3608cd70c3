"""Simmering: thermostatted samplers (Nosé–Hoover chain or adaptive Langevin) for the
parameters of a model.

The parameters θ (any list of ``tf.Variable``) are treated as classical particles of
mass ``m`` moving in the potential L(θ) and coupled to a Nosé–Hoover chain at
temperature T, so that after equilibration the trajectory samples exp(−L/T). The
integrator is the Martyna–Tuckerman–Tobias–Klein (1996) scheme:

    NHC(dt/2) → kick(dt/2) → drift(dt) → [one gradient] → kick(dt/2) → NHC(dt/2)

where each NHC half step is split with Suzuki–Yoshida weights (order 1, 3 or 5) and
rescales all momenta by one global factor. The gradient at the new position is cached
in the state and reused by the next step's first kick, so one step costs one
gradient evaluation.

``thermostat="adaptive"`` replaces the chain by adaptive Langevin dynamics (stochastic-
gradient Nosé–Hoover; Jones & Leimkuhler 2011, Ding et al. 2014, Leimkuhler & Shang 2016),
which holds T when the gradients are noisy (mini-batches) — a chain does not (SPEC §2)::

    dθ = p/m dt
    dp = −∇L̃ dt − ξ p dt − γ p dt + √(2γ m T) dW
    dξ = (Σp²/m − N_f T)/μ dt,        μ = N_f T (τ dt)²

split BAOAB-style with one gradient per step:

    ξ += dt (T_kin/T − 1)/(τ dt)²        (T_kin read at the end of the previous step)
    B(dt/2) → A(dt/2) → O → A(dt/2) → [one gradient] → B(dt/2)

where O multiplies the momenta by e^{−ξ dt} and, every ``langevin_every`` (k) steps,
applies the exact Ornstein–Uhlenbeck flow of the γ part over k·dt. T_kin is read after
the final half kick (the momenta at the integer step, what the info reports and the
next step's friction update uses). ``friction="tensor"`` gives every parameter tensor
its own ξ (and N_f), for noise that differs between layers. Without Langevin noise an
adaptive step costs what a chain step does: one fused kernel and one axpy per tensor.

What is canonical: with exact gradients both thermostats sample exp(−L/T) (the chain
up to its ergodicity; the adaptive one also on harmonic problems thanks to γ). For the
chain the reported ``conserved_energy`` H' is conserved up to the integrator's error.
For the adaptive thermostat H' (energy + friction terms − Langevin heat) is only a
bookkeeping quantity: the discrete friction update does not conserve it (measured: with
γ = 0 it drifts by about N_f T over 5000 steps on the harmonic check), so do not read
its drift as an integration error. With mini-batch gradients H' is not conserved by
either thermostat and its drift means nothing; the adaptive thermostat then
samples exp(−L/T) up to a time-step bias that grows with dt·σ²/T, which is why
:mod:`eae.core.temperature` measures the temperature actually reached. Velocity resampling
(``resample_every``) has no accept step, so with a step error it is not exact either.

The API follows BlackJAX: an immutable :class:`SimmeringState` of tensors plus
``init`` and ``step`` (methods of :class:`Simmering`); diagnostics come back as a
:class:`SimmeringInfo` of tensors. Like the positions (the caller's variables), the
momenta live in variables, owned by the :class:`Simmering` object and updated in
place: that lets each half step be one fused TensorFlow kernel per parameter tensor
(``ResourceApplyKerasMomentum``), which keeps a Simmering step as cheap as an Adam
step, and keeps the state a plain tensor tuple that compiled loops can carry. The caller supplies the gradients through a
``value_and_grad()`` callable returning ``(loss, grads, aux)``, so a training loop can
take other gradients (the EAE decoder's) from the same forward/backward pass; ``aux``
is handed back untouched. Positions are the caller's variables, updated in place.

This module holds the stateful part, :class:`Simmering` and the loops around it. The
settings are in :mod:`eae.core.sampler_settings`; the state tuples and the pure
thermostat math (chain half steps, Suzuki–Yoshida splitting, H') in
:mod:`eae.core.thermostat`. Every name of both is importable from here as before.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

# The settings, the state tuples and the thermostats' tensor math live in their own
# modules; every name stays importable from here (``eae.core.sampler.SimmeringConfig``).
from eae.core.sampler_settings import (  # noqa: F401
    _W3, _W5, FRICTIONS, INITIAL_VELOCITIES, SCHEDULES, SUZUKI_YOSHIDA, THERMOSTATS,
    SimmeringConfig, temperature_at)
from eae.core.thermostat import (  # noqa: F401
    SimmeringInfo, SimmeringState, _draw_momenta, _friction_mass, _groups_sum_squares,
    _kinetic2, _nhc_half_step, _per_chain, _sum_squares, _thermostat, _thermostat_masses,
    conserved_energy, num_degrees_of_freedom)
from eae.support.runtime import tf

#: one e^{±40} factor already empties or refills the kinetic energy within one step;
#: clipping there keeps every quantity finite after a burst of heat
_EXP_CLIP = 40.0

ValueAndGrad = Callable[[], tuple[tf.Tensor, Sequence[tf.Tensor], Any]]


class Simmering:
    """The sampler for one list of variables: owns their momenta.

    Momenta are stored as displacements q = p·dt/m (the next drift), one variable per
    parameter tensor, up to the state's ``pending_scale``.

    ``chains``: when set, every variable carries a leading axis of ``chains``
    independent systems (e.g. the stacked weights of :class:`eae.core.chains.ChainEncoder`),
    each with its own thermostat. ``value_and_grad`` then returns one loss per
    chain [C] and the gradients of their sum; the state's scalars (loss, ke2,
    pending_scale) become [C], the chain variables xi, v_xi [M, C], and every
    :class:`SimmeringInfo` field except ``temperature`` is per chain.
    """

    def __init__(self, variables: Sequence[tf.Variable], config: SimmeringConfig,
                 chains: int | None = None):
        self.variables = list(variables)
        self.config = config
        self.chains = int(chains) if chains else None
        total = num_degrees_of_freedom(self.variables)
        if self.chains:
            bad = [v.name for v in self.variables if not v.shape.rank or v.shape[0] != self.chains]
            if bad:
                raise ValueError(f"Simmering(chains={self.chains}): variables {bad} lack a "
                                 f"leading chain axis of size {self.chains}")
        #: degrees of freedom of one system (one chain)
        self.n_dof = total // (self.chains or 1)
        #: friction group of each tensor (adaptive thermostat): all 0, or one per tensor
        tensor_wise = config.adaptive and config.friction == "tensor"
        self.groups = list(range(len(self.variables))) if tensor_wise else [0] * len(self.variables)
        self.n_groups = max(self.groups) + 1 if self.groups else 1
        dof = [0] * self.n_groups
        for v, g in zip(self.variables, self.groups):
            dof[g] += v.shape.num_elements() // (self.chains or 1)
        #: N_f per friction group, shaped [K] (or [K, 1] to broadcast against chains)
        self.group_dof = tf.constant(dof, tf.float64, shape=[self.n_groups] + ([1] if self.chains else []))
        self.displacement = tuple(
            tf.Variable(tf.zeros(v.shape, v.dtype), trainable=False, name=f"simmering_q{i}")
            for i, v in enumerate(self.variables))

    def _scalar_shape(self) -> list[int]:
        return [self.chains] if self.chains else []

    # -- state as arrays (checkpoints) ----------------------------------------------
    #: the fields of :class:`SimmeringState` that are one tensor each (``grad`` is a tuple)
    TENSOR_FIELDS = tuple(f for f in SimmeringState._fields if f != "grad")

    def state_arrays(self, state: SimmeringState) -> dict[str, np.ndarray]:
        """The sampler's full state as NumPy arrays: every field of ``state`` and the
        momenta it owns (stored displacements ``displacement/i``, see the class
        docstring). :meth:`restore` is its inverse; together they make a resumed chain
        continue exactly where it stopped."""
        arrays = {field: getattr(state, field).numpy() for field in self.TENSOR_FIELDS}
        for i, (q, g) in enumerate(zip(self.displacement, state.grad)):
            arrays[f"displacement/{i}"] = q.numpy()
            arrays[f"grad/{i}"] = np.asarray(g)
        return arrays

    def restore(self, arrays: Mapping[str, np.ndarray]) -> SimmeringState:
        """The state of :meth:`state_arrays` (the momenta are assigned to the sampler's
        variables); a missing or misshapen entry raises ``ValueError`` naming it."""
        for i, q in enumerate(self.displacement):
            key = f"displacement/{i}"
            if key not in arrays or tuple(arrays[key].shape) != tuple(q.shape):
                raise ValueError(f"sampler state: {key} missing or not of shape {tuple(q.shape)}")
            q.assign(arrays[key])
        missing = [f for f in self.TENSOR_FIELDS if f not in arrays]
        if missing:
            raise ValueError(f"sampler state lacks {missing}")
        grads = tuple(tf.constant(arrays[f"grad/{i}"]) for i in range(len(self.variables)))
        return SimmeringState(grad=grads,
                              **{f: tf.constant(arrays[f]) for f in self.TENSOR_FIELDS})

    def _tensor_factor(self, factor: tf.Tensor, i: int) -> tf.Tensor:
        """The per-tensor slice of a per-group factor (adaptive) or the factor itself."""
        return factor[self.groups[i]] if self.config.adaptive else factor

    def momenta(self, state: SimmeringState) -> list[tf.Tensor]:
        """The particle momenta p."""
        out = []
        for i, q in enumerate(self.displacement):
            q = tf.convert_to_tensor(q)
            factor = self._tensor_factor(state.pending_scale, i) * (self.config.mass / self.config.dt)
            out.append(q * self._broadcast(factor, q))
        return out

    def _set_momenta(self, momentum) -> list:
        to_q = self.config.dt / self.config.mass
        return [q.assign(p * to_q) for q, p in zip(self.displacement, momentum)]

    def _kinetic(self, momentum) -> tf.Tensor:
        """Σ p²/m: [C] or [] for the chain, per friction group [K, …] when adaptive."""
        if self.config.adaptive:
            return _groups_sum_squares(momentum, self.groups, self.n_groups,
                                       self.chains) / self.config.mass
        return _kinetic2(momentum, self.config.mass, self.chains)

    def init(self, value_and_grad: ValueAndGrad,
             seed: int | Sequence[int] = 0) -> tuple[SimmeringState, Any]:
        """Initial state at the variables' current values (one gradient evaluation).

        Draws velocities from N(0, T/m) (or zeros); returns ``(state, aux)``.
        """
        config = self.config
        seed_t = tf.constant([seed, 0] if isinstance(seed, int) else list(seed), tf.int64)
        loss, grads, aux = value_and_grad()
        temperature = temperature_at(config, tf.constant(0, tf.int64))
        shapes = [v.shape for v in self.variables]
        dtypes = [v.dtype for v in self.variables]
        if config.initial_velocities == "gaussian":
            momentum = _draw_momenta(shapes, dtypes, config, temperature, seed_t,
                                     tf.constant(0, tf.int64))
        else:
            momentum = [tf.zeros(s, d) for s, d in zip(shapes, dtypes)]
        self._set_momenta(momentum)
        m = max(config.chain_length, 1)
        scalar = self._scalar_shape()
        groups = [self.n_groups] if config.adaptive else []
        k = self.n_groups if config.adaptive else 1
        state = SimmeringState(
            pending_scale=tf.ones(groups + scalar, tf.float64),
            grad=tuple(tf.convert_to_tensor(g) for g in grads),
            loss=tf.cast(tf.reshape(loss, scalar), tf.float64),
            ke2=self._kinetic(momentum),
            xi=tf.zeros([m] + scalar, tf.float64),
            v_xi=tf.zeros([m] + scalar, tf.float64),
            step=tf.constant(0, tf.int64),
            seed=seed_t,
            friction=tf.zeros([k] + scalar, tf.float64),
            eta=tf.zeros([k] + scalar, tf.float64),
            heat=tf.zeros([1] + scalar, tf.float64),
        )
        return state, aux

    def _maybe_resample(self, state, temperature):
        """Redraw all velocities from N(0, T/m) when due; returns (ke2, pending_scale)."""
        config = self.config
        if config.resample_every <= 0:
            return state.ke2, state.pending_scale

        def redraw():
            qs = self.displacement
            p = _draw_momenta([q.shape for q in qs], [q.dtype for q in qs], config,
                              temperature, state.seed, state.step)
            with tf.control_dependencies(self._set_momenta(p)):
                return self._kinetic(p), tf.ones_like(state.pending_scale)

        due = tf.logical_and(state.step > 0, state.step % config.resample_every == 0)
        return tf.cond(due, redraw, lambda: (state.ke2, state.pending_scale))

    def _kick_drift(self, grads, factors, coefficients) -> None:
        """q ← factor·q − c·g ; θ ← θ + q  (rescale + half kick + drift), per tensor."""
        if not self.chains or self.chains == 1:
            # one fused kernel per tensor (the factor is a single number)
            for var, q, g, f, c in zip(self.variables, self.displacement, grads, factors,
                                       coefficients):
                tf.raw_ops.ResourceApplyKerasMomentum(
                    var=var.handle, accum=q.handle, lr=tf.cast(tf.reshape(c, []), var.dtype),
                    grad=g, momentum=tf.cast(tf.reshape(f, []), var.dtype))
            return
        for var, q, g, f, c in zip(self.variables, self.displacement, grads, factors, coefficients):
            new_q = q * _per_chain(f, q) - _per_chain(c, q) * g
            q.assign(new_q)
            var.assign_add(new_q)

    def _half_kick(self, grads, coefficients) -> None:
        """q ← q − c·g per tensor (one kernel each when c is one number for all chains)."""
        for q, g, c in zip(self.displacement, grads, coefficients):
            if c.shape.rank and self.chains and self.chains > 1:
                q.assign_sub(_per_chain(c, q) * g)
            else:
                tf.raw_ops.ResourceApplyGradientDescent(
                    var=q.handle, alpha=tf.cast(tf.reshape(c, []), q.dtype), delta=g)

    def step(self, state: SimmeringState,
             value_and_grad: ValueAndGrad) -> tuple[SimmeringState, SimmeringInfo, Any]:
        """Advance the variables by one time step; returns ``(state, info, aux)``.

        ``value_and_grad()`` is called exactly once, after the variables have moved,
        and must return ``(loss, grads matching variables, aux)``.
        """
        if self.config.adaptive:
            return self._adaptive_step(state, value_and_grad)
        config = self.config
        temperature = temperature_at(config, state.step)
        n_dof = tf.constant(float(self.n_dof), tf.float64)
        ke2, pending = self._maybe_resample(state, temperature)
        # kick coefficient in displacement units: q -= (dt/m)(dt/2) g
        c = tf.constant(config.dt * 0.5 * config.dt / config.mass, tf.float64)

        scale, xi, v_xi = _thermostat(config, ke2, state.xi, state.v_xi, temperature, n_dof)
        n = len(self.variables)
        self._kick_drift(state.grad, [pending * scale] * n, [c] * n)

        loss, grads, aux = value_and_grad()
        grads = tuple(tf.convert_to_tensor(g) for g in grads)
        self._half_kick(grads, [c] * n)
        qsq = _sum_squares([q.read_value() for q in self.displacement], self.chains)
        ke2 = qsq * (config.mass / (config.dt * config.dt))
        scale, xi, v_xi = _thermostat(config, ke2, xi, v_xi, temperature, n_dof)

        new_state = state._replace(
            pending_scale=scale,
            grad=grads,
            loss=tf.cast(tf.reshape(loss, self._scalar_shape()), tf.float64),
            ke2=ke2 * scale * scale,
            xi=xi,
            v_xi=v_xi,
            step=state.step + 1,
        )
        info = SimmeringInfo(
            loss=new_state.loss,
            temperature=temperature,
            kinetic_temperature=new_state.ke2 / n_dof,
            conserved_energy=conserved_energy(config, new_state, n_dof),
            xi1=xi[0],
        )
        return new_state, info, aux

    def _adaptive_step(self, state, value_and_grad):
        """One BAOAB step of adaptive Langevin (see the module docstring).

        In displacement units (q = p·dt/m up to ``pending_scale`` r): with
        s = e^{−ξ dt} and a = (dt/2)(1+s)/m, the fused kernel gives q ← a·p' (p' the
        momenta after the first half kick) and θ ← θ + a·p', which is both half drifts
        around a deterministic O; the second half kick q ← q − a·dt/(2s)·g leaves
        p = (s/a)·q, i.e. r = 2s/(1+s). Langevin steps add their noise in between.
        The friction then moves by the mean of the kinetic energies just before and
        just after O (the symmetric D half steps of Leimkuhler & Shang's BADODAB), for
        the next step: driving it by the end-of-step energy instead would let the
        gradient noise of the two half kicks bias ⟨k x²⟩ (+8 % at σ = 1, dt = 0.02).
        """
        config = self.config
        dt, mass = config.dt, config.mass
        temperature = temperature_at(config, state.step)
        _, pending = self._maybe_resample(state, temperature)
        s = tf.exp(tf.clip_by_value(-state.friction * dt, -_EXP_CLIP, _EXP_CLIP))
        a = 0.5 * dt * (1.0 + s) / mass
        n = len(self.variables)
        g_of = self._tensor_factor
        self._kick_drift(state.grad,
                         [g_of(pending, i) * (1.0 + g_of(s, i)) * 0.5 for i in range(n)],
                         [g_of(a, i) * 0.5 * dt for i in range(n)])
        # Σp'²/m before O (q = a·p'); after a deterministic O it is s² times that
        before_o = self._group_squares() / (a * a * mass)
        mid_ke2 = before_o * 0.5 * (1.0 + s * s)
        heat = state.heat
        if config.langevin_friction > 0:
            heat = self._langevin(state, temperature, s, a)
        tau = config.tau * dt
        friction = state.friction + dt * (mid_ke2 / (self.group_dof * temperature) - 1.0) / (tau * tau)

        loss, grads, aux = value_and_grad()
        grads = tuple(tf.convert_to_tensor(g) for g in grads)
        kick = a * (0.5 * dt) / s
        self._half_kick(grads, [g_of(kick, i) for i in range(n)])
        r = 2.0 * s / (1.0 + s)
        new_state = state._replace(
            pending_scale=r,
            grad=grads,
            loss=tf.cast(tf.reshape(loss, self._scalar_shape()), tf.float64),
            ke2=self._group_squares() * r * r * (mass / (dt * dt)),
            step=state.step + 1,
            friction=friction,
            eta=state.eta + dt * state.friction,
            heat=heat,
        )
        info = SimmeringInfo(
            loss=new_state.loss,
            temperature=temperature,
            kinetic_temperature=tf.reduce_sum(new_state.ke2, axis=0) / float(self.n_dof),
            conserved_energy=conserved_energy(config, new_state, self.group_dof),
            xi1=tf.reduce_mean(friction, axis=0),
        )
        return new_state, info, aux

    def _group_squares(self) -> tf.Tensor:
        return _groups_sum_squares([q.read_value() for q in self.displacement], self.groups,
                                   self.n_groups, self.chains)

    def _langevin(self, state, temperature, s, a) -> tf.Tensor:
        """Every ``langevin_every`` steps: the exact Ornstein–Uhlenbeck flow of the γ part
        over k·dt, inserted between the two half drifts; returns the updated heat."""
        config = self.config
        k = config.langevin_every
        gamma_h = config.langevin_friction * config.dt * k
        decay = math.exp(-gamma_h)
        noise_sd = tf.sqrt(temperature * config.mass * -math.expm1(-2.0 * gamma_h))
        half_drift = 0.5 * config.dt / config.mass

        def kick():
            base = tf.random.experimental.stateless_fold_in(
                tf.random.experimental.stateless_fold_in(state.seed, 0x4C616E67), state.step)
            before, after = [], []
            for i, (var, q) in enumerate(zip(self.variables, self.displacement)):
                old = tf.convert_to_tensor(q)
                r = tf.random.stateless_normal(
                    old.shape, tf.random.experimental.stateless_fold_in(base, i), dtype=old.dtype)
                g = self.groups[i]
                s_over_a = s[g] / a[g]
                noise = tf.cast(noise_sd, old.dtype) * r
                p_old = old * self._broadcast(s_over_a, old)
                var.assign_add(tf.cast(half_drift, old.dtype) * ((decay - 1.0) * p_old + noise))
                new = decay * old + self._broadcast(1.0 / s_over_a, old) * noise
                q.assign(new)
                before.append(p_old)
                after.append(new * self._broadcast(s_over_a, old))
            gained = 0.5 * (_sum_squares(after, self.chains)
                            - _sum_squares(before, self.chains)) / config.mass
            return state.heat + gained

        due = tf.equal((state.step + 1) % k, 0)
        return tf.cond(due, kick, lambda: state.heat)

    def _broadcast(self, factor, like):
        return _per_chain(factor, like) if self.chains else tf.cast(factor, like.dtype)


def refresh(state: SimmeringState, value_and_grad: ValueAndGrad) -> tuple[SimmeringState, Any]:
    """Recompute the cached loss and gradient (after the potential itself changed,
    e.g. a decoder update); positions, momenta and the chain are untouched."""
    loss, grads, aux = value_and_grad()
    return state._replace(grad=tuple(tf.convert_to_tensor(g) for g in grads),
                          loss=tf.cast(loss, tf.float64)), aux


def potential_value_and_grad(
    variables: Sequence[tf.Variable], potential: Callable[[], tf.Tensor]
) -> ValueAndGrad:
    """Wrap a scalar ``potential()`` of the variables as a ``value_and_grad`` callable."""

    def value_and_grad():
        with tf.GradientTape() as tape:
            loss = potential()
        return loss, tape.gradient(loss, list(variables)), None

    return value_and_grad


def sample(
    variables: Sequence[tf.Variable],
    potential: Callable[[], tf.Tensor],
    config: SimmeringConfig,
    n_steps: int,
    seed: int = 0,
    trace: Callable[[], tf.Tensor] | None = None,
) -> tuple[Simmering, SimmeringState, SimmeringInfo, tf.Tensor | None]:
    """Run ``n_steps`` of Simmering on ``potential()`` in one compiled loop.

    Returns the sampler, the final state, the stacked per-step :class:`SimmeringInfo`
    and, when ``trace`` is given, the stacked values of ``trace()`` after every step
    (e.g. the positions of a small system).
    """
    vg = potential_value_and_grad(variables, potential)
    sampler = Simmering(variables, config)
    state, _ = sampler.init(vg, seed)

    @tf.function
    def run(state):
        infos = [tf.TensorArray(tf.float64, size=n_steps) for _ in SimmeringInfo._fields]
        traces = tf.TensorArray(tf.float32, size=n_steps if trace else 0,
                                element_shape=None if trace else [])
        for i in tf.range(n_steps):
            state, info, _ = sampler.step(state, vg)
            infos = [ta.write(i, x) for ta, x in zip(infos, info)]
            if trace is not None:
                traces = traces.write(i, tf.cast(trace(), tf.float32))
        return state, SimmeringInfo(*[ta.stack() for ta in infos]), traces.stack()

    state, info, traced = run(state)
    return sampler, state, info, (traced if trace is not None else None)


def is_finite(info: SimmeringInfo) -> bool:
    """True when no diagnostic is NaN or infinite."""
    return all(bool(tf.reduce_all(tf.math.is_finite(x))) for x in info)


def equilibrium_kinetic_temperature_error(info: SimmeringInfo, burn_in: float = 0.2) -> float:
    """Relative deviation of ⟨T_kin⟩ from ⟨T⟩ after discarding a burn-in fraction."""
    n = int(info.kinetic_temperature.shape[0])
    start = int(math.floor(burn_in * n))
    t_kin = tf.reduce_mean(info.kinetic_temperature[start:])
    t_target = tf.reduce_mean(info.temperature[start:])
    return float(t_kin / t_target - 1.0)

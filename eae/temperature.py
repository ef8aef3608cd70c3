"""The temperature an ensemble actually reached, measured two independent ways.

* kinetic: T_kin = Σ p²/m / N_f, what the thermostat controls (and what velocity
  resampling resets), so on its own it proves little;
* configurational: T_conf = ⟨|∇L|²⟩ / ⟨tr ∇²L⟩, which holds for exp(−L/T) whatever the
  momenta do (integrate ∂ᵢ(∂ᵢL e^{−L/T}) over θ). The trace comes from Hutchinson's
  estimator, E[vᵀ∇²L v] = tr ∇²L for Rademacher v, with Hessian-vector products;
  on potentials with a diagonal Hessian (the validation problems) it is exact.

Averages are ratios of means over the ensemble, not means of per-sample ratios (which
are unbounded when the trace of one sample is near zero).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from eae.runtime import tf

__all__ = ["gradient_and_curvature", "configurational_temperature"]


def _rademacher(shape, dtype, seed) -> tf.Tensor:
    bits = tf.random.stateless_uniform(shape, seed, minval=0, maxval=2, dtype=tf.int32)
    return tf.cast(2 * bits - 1, dtype)


def gradient_and_curvature(variables: Sequence[tf.Variable], potential: Callable[[], tf.Tensor],
                           n_probes: int = 1, seed: Sequence[int] = (0, 0),
                           chains: int | None = None) -> tuple[tf.Tensor, tf.Tensor]:
    """|∇L|² and a Hutchinson estimate of tr ∇²L at the variables' current values
    (float64). With ``chains`` every variable has a leading chain axis, ``potential()``
    returns one loss per chain [C] (chain c's parameters entering only loss c) and both
    results are per chain [C]. One gradient plus ``n_probes`` Hessian-vector products."""
    variables = list(variables)
    seed = tf.constant(list(seed), tf.int64)
    traces = []
    with tf.GradientTape(persistent=True) as outer:
        with tf.GradientTape() as inner:
            loss = tf.reduce_sum(potential())
        grads = inner.gradient(loss, variables)
        probes = []
        for k in range(n_probes):
            vs = [_rademacher(v.shape, v.dtype,
                              tf.random.experimental.stateless_fold_in(seed, k * 1000 + i))
                  for i, v in enumerate(variables)]
            probes.append(vs)
            traces.append(tf.add_n([tf.reduce_sum(g * v) for g, v in zip(grads, vs)]))
    grad_sq = _per_chain_sum([tf.square(g) for g in grads], chains)
    curvature = []
    for k, vs in enumerate(probes):
        hv = outer.gradient(traces[k], variables)
        curvature.append(_per_chain_sum([h * v for h, v in zip(hv, vs)], chains))
    del outer
    return grad_sq, tf.add_n(curvature) / float(n_probes)


def _per_chain_sum(tensors, chains):
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

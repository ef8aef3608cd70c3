"""Several encoder chains of one architecture, stepped together.

A :class:`ChainEncoder` holds C encoders as stacked weights: one ``tf.Variable`` per
parameter tensor with a leading ``chain`` axis. The Simmering sampler then moves all
chains with the same per-tensor kernels (each chain with its own thermostat), and one
compiled training step evaluates every chain:

* MLP encoders (a plain stack of Dense layers) run as batched matrix products
  (``matmul`` of [C, B, in] by [C, in, out]: one kernel per layer for all chains, and
  on CPU a third cheaper than the same ``einsum`` once differentiated);
* any other architecture (convolutions, …) runs each chain through the template
  model's ``stateless_call`` with that chain's slice of the weights, unrolled inside
  the same compiled graph.

Batches are **chain-major**: a training batch for C chains is ``[C·B, …]``, rows
``c·B … c·B + B − 1`` belonging to chain c, so elementwise losses need no change
beyond :func:`chain_mean`, and the decoder sees one batch of C·B codes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from eae.support.runtime import keras, tf

__all__ = ["ChainEncoder", "chain_mean", "chain_seed", "chains_of"]


def chain_seed(seed: int, chain: int) -> int:
    """Initial-weight seed of chain ``chain``: chain 0 keeps ``seed`` itself, so a
    one-chain run starts exactly where a plain single-encoder run does."""
    if chain == 0:
        return int(seed)
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0xC4A1, int(chain)]).generate_state(1)
    return int(state[0]) & 0x7FFFFFFF


def chains_of(encoder) -> int:
    """Number of chains an encoder carries (1 for a plain Keras model)."""
    return int(getattr(encoder, "chains", 1))


def chain_mean(values: tf.Tensor, chains: int) -> tf.Tensor:
    """Per-chain mean [C] of a chain-major tensor [C·B, …] (e.g. squared errors)."""
    return tf.reduce_mean(tf.reshape(values, [chains, -1]), axis=1)


def _dense_plan(model: keras.Model) -> list[tuple[int, int, Callable]] | None:
    """(kernel index, bias index, activation) per layer when ``model`` is a plain
    chain of Dense layers with biases (the MLP encoders), else None."""
    index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    plan = []
    for layer in model.layers:
        if isinstance(layer, keras.layers.InputLayer):
            continue
        if not isinstance(layer, keras.layers.Dense) or not layer.use_bias:
            return None
        plan.append((index[id(layer.kernel)], index[id(layer.bias)], layer.activation))
    if not plan or len(model.outputs) != 1 or model.non_trainable_variables:
        return None
    return plan


def _is_linear(activation: Callable) -> bool:
    return activation is keras.activations.linear or getattr(activation, "__name__", "") == "linear"


def activation_jvp(activation: Callable, a: tf.Tensor, a_dot: tf.Tensor):
    """(activation(a), activation'(a)·ȧ) of an elementwise activation."""
    if _is_linear(activation):
        return a, a_dot
    with tf.autodiff.ForwardAccumulator(primals=a, tangents=a_dot) as acc:
        y = activation(a)
    return y, acc.jvp(y)


def dense_jvp(plan, variables, x: tf.Tensor, tangent: tf.Tensor, shared: bool = False):
    """(f(x), J_f(x)·tangent) through a Dense stack ``plan`` (see :func:`_dense_plan`).

    Forward mode written out layer by layer: the tangent goes through the same matrix
    product as the primal (ȧ = ḣW) and the activation's derivative. ``ForwardAccumulator``
    gives the same numbers, but on CPU its tangent of a large matrix product costs about
    twice the product itself once differentiated by an enclosing GradientTape (the
    SINDy-EAE step). Works on plain [B, in] inputs with [in, out] kernels, on stacked
    chains ([C, B, in] with [C, in, out] kernels) and, with ``shared``, on one input
    [B, in] seen by every chain.
    """
    h, t = x, tangent
    for n, (k, b, activation) in enumerate(plan):
        kernel, bias = variables[k], variables[b]
        if shared and n == 0:
            h, t = h[None], t[None]
        if kernel.shape.rank == 3:
            bias = bias[:, None, :]
        a = tf.matmul(h, kernel) + bias
        h, t = activation_jvp(activation, a, tf.matmul(t, kernel))
    return h, t


def model_jvp(model, x: tf.Tensor, tangent: tf.Tensor):
    """(model(x), J·tangent) of a Keras model: :func:`dense_jvp` when it is a plain
    Dense stack, else ``ForwardAccumulator``."""
    plan = _dense_plan(model)
    if plan is not None:
        return dense_jvp(plan, model.trainable_variables, x, tangent)
    with tf.autodiff.ForwardAccumulator(primals=x, tangents=tangent) as acc:
        y = model(x, training=False)
    return y, acc.jvp(y)


class ChainEncoder:
    """C encoders with stacked weights; call it on chain-major batches.

    ``members`` are C Keras models of one architecture (their weights are copied into
    the stacked variables); the first is kept as the template that defines the
    function. Build one with :meth:`build` from a seeded builder.
    """

    def __init__(self, members: Sequence[keras.Model]):
        members = list(members)
        if not members:
            raise ValueError("ChainEncoder needs at least one encoder")
        self.template = members[0]
        self.chains = len(members)
        shapes = [tuple(v.shape) for v in self.template.trainable_variables]
        for m in members[1:]:
            if [tuple(v.shape) for v in m.trainable_variables] != shapes:
                raise ValueError("all chains' encoders must share one architecture")
        self.variables = [
            tf.Variable(np.stack([m.trainable_variables[i].numpy() for m in members]),
                        name=f"chain_{v.path.replace('/', '_')}")
            for i, v in enumerate(self.template.trainable_variables)
        ]
        self._plan = _dense_plan(self.template)
        self.output_shape = self.template.output_shape
        self.latent_dim = int(self.output_shape[-1])

    @classmethod
    def build(cls, builder: Callable[[int], keras.Model], chains: int, seed: int) -> "ChainEncoder":
        """``chains`` encoders from ``builder(seed)``, chain c seeded by :func:`chain_seed`."""
        if chains < 1:
            raise ValueError(f"chains must be >= 1, got {chains}")
        return cls([builder(chain_seed(seed, c)) for c in range(chains)])

    @property
    def batched(self) -> bool:
        """True when all chains run as batched matrix products (MLP encoders)."""
        return self._plan is not None

    @property
    def trainable_variables(self) -> list[tf.Variable]:
        return list(self.variables)

    @property
    def weights(self) -> list[tf.Variable]:
        return list(self.variables)

    # -- forward passes -------------------------------------------------------------
    def forward(self, xs: tf.Tensor, shared: bool = False) -> tf.Tensor:
        """Codes [C, B, latent] of per-chain inputs ``xs`` [C, B, …], or of one input
        [B, …] seen by every chain when ``shared``."""
        if self._plan is not None:
            h = xs
            for n, (k, b, activation) in enumerate(self._plan):
                lhs = h[None] if (shared and n == 0) else h
                h = tf.matmul(lhs, self.variables[k]) + self.variables[b][:, None, :]
                h = activation(h)
            return h
        outs = []
        for c in range(self.chains):
            weights = [v[c] for v in self.variables]
            out, _ = self.template.stateless_call(weights, [], xs if shared else xs[c],
                                                  training=False)
            outs.append(out)
        return tf.stack(outs)

    def __call__(self, x: tf.Tensor, training: bool = False) -> tf.Tensor:
        """Codes [C·B, latent] of a chain-major batch ``x`` [C·B, …]."""
        xs = tf.reshape(x, tf.concat([[self.chains, -1], tf.shape(x)[1:]], 0))
        z = self.forward(xs)
        return tf.reshape(z, [-1, self.latent_dim])

    def encode_each(self, x: tf.Tensor) -> tf.Tensor:
        """Codes [C, N, latent] of one input batch ``x`` [N, …] under every chain."""
        return self.forward(x, shared=True)

    def forward_jvp(self, xs: tf.Tensor, tangent: tf.Tensor, shared: bool = False):
        """(codes, J·tangent), both [C, B, latent], of :meth:`forward` (forward mode)."""
        if self._plan is not None:
            return dense_jvp(self._plan, self.variables, xs, tangent, shared)
        with tf.autodiff.ForwardAccumulator(primals=xs, tangents=tangent) as acc:
            z = self.forward(xs, shared)
        return z, acc.jvp(z)

    def jvp(self, x: tf.Tensor, tangent: tf.Tensor):
        """(codes, J·tangent), both [C·B, latent], of a chain-major batch (forward mode)."""
        shape = tf.concat([[self.chains, -1], tf.shape(x)[1:]], 0)
        z, z_dot = self.forward_jvp(tf.reshape(x, shape), tf.reshape(tangent, shape))
        return tf.reshape(z, [-1, self.latent_dim]), tf.reshape(z_dot, [-1, self.latent_dim])

    def encode_each_jvp(self, x: tf.Tensor, tangent: tf.Tensor):
        """(codes, J·tangent), both [C, N, latent], of one input under every chain."""
        return self.forward_jvp(x, tangent, shared=True)

    # -- export ---------------------------------------------------------------------
    def member(self, chain: int = 0) -> keras.Model:
        """The template model holding chain ``chain``'s current weights (shared object:
        the next call overwrites them)."""
        for v, stacked in zip(self.template.trainable_variables, self.variables):
            v.assign(stacked[chain])
        return self.template

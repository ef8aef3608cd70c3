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
:class:`eae.core.trainer.EAETrainer` samples the encoder with Simmering and moves the decoder
with Adam; :func:`coefficients_stage` then records Ξ on the test data for each of M
consecutive encoder samples with the decoder frozen.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
from typing import NamedTuple

import numpy as np

from eae.core.chains import chain_mean, chains_of, model_jvp
from eae.support.runtime import keras, tf

logger = logging.getLogger("eae")


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


def format_equations(xi: np.ndarray, terms, latents, digits: int = 2) -> list[str]:
    """Readable equations "dz1/dt = 0.47 z1 + 1.00 z2", one per latent, from
    coefficients ``xi`` [terms, latent] (zero and non-finite ones omitted)."""
    lines = []
    for k, lat in enumerate(latents):
        parts = [f"{xi[t, k]:+.{digits}f} {term}" for t, term in enumerate(terms)
                 if xi[t, k] != 0 and np.isfinite(xi[t, k])]
        rhs = " ".join(parts).lstrip("+") if parts else "0"
        lines.append(f"d{lat}/dt = {rhs}")
    return lines


# -- the library as an object ---------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class SindyLibrary:
    """The candidate functions Θ(z) of a SINDy model, pysindy-like: explicit term names,
    TensorFlow and NumPy evaluation, readable printed equations, and a JSON form that a
    coefficient store keeps in its attrs (``sindy_library``) so that the analysis reads
    back the library the coefficients belong to.

    Terms, in order: a constant (with ``constant``), the monomials of degree 1 …
    ``poly_order`` (:func:`library_exponents`), then sin z_i (with ``sines``). ``centre``
    (one value per latent) evaluates every term at z − centre.
    """

    latent_dim: int = 2
    poly_order: int = 3
    sines: bool = True
    constant: bool = False
    centre: tuple[float, ...] | None = None

    ATTR = "sindy_library"

    @property
    def names(self) -> list[str]:
        """Term names, e.g. "z1", "z1^2 z2", "sin(z1)" (and "1" for the constant)."""
        names = library_names(self.latent_dim, self.poly_order, self.sines)
        return (["1"] if self.constant else []) + names

    @property
    def n_terms(self) -> int:
        return len(self.names)

    def _shifted(self, z):
        return z if self.centre is None else z - np.asarray(self.centre, np.float64)

    def __call__(self, z: tf.Tensor) -> tf.Tensor:
        """Θ(z) [batch, terms] of a [batch, latent] tensor (TensorFlow, differentiable)."""
        if self.centre is not None:
            z = z - tf.constant(self.centre, z.dtype)
        theta = sindy_library(z, self.poly_order, self.sines)
        if self.constant:
            theta = tf.concat([tf.ones_like(theta[..., :1]), theta], -1)
        return theta

    def numpy(self, z: np.ndarray) -> np.ndarray:
        """Θ(z) of a NumPy array [..., latent], float64."""
        theta = sindy_library_np(self._shifted(np.asarray(z, np.float64)), self.poly_order,
                                 self.sines)
        if self.constant:
            theta = np.concatenate([np.ones(theta.shape[:-1] + (1,)), theta], -1)
        return theta

    def equations(self, xi: np.ndarray, latents=None, digits: int = 2) -> list[str]:
        """One readable equation per latent, "dz1/dt = -0.37 z2 -0.57 sin(z2)", from
        coefficients ``xi`` [terms, latent] (zero and non-finite ones omitted)."""
        xi = np.asarray(xi)
        latents = latents or [f"z{i + 1}" for i in range(xi.shape[1])]
        return format_equations(xi, self.names, latents, digits)

    def __str__(self) -> str:
        return f"SindyLibrary({self.n_terms} terms: {', '.join(self.names)})"

    def to_json(self) -> str:
        import json

        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "SindyLibrary":
        import json

        fields = json.loads(text)
        if fields.get("centre") is not None:
            fields["centre"] = tuple(fields["centre"])
        return cls(**fields)

    @classmethod
    def from_attrs(cls, attrs, default: "SindyLibrary | None" = None) -> "SindyLibrary":
        """The library a store's attrs name (``default`` for stores written before the
        attribute existed; None: a missing attribute is an error)."""
        if cls.ATTR in attrs:
            return cls.from_json(attrs[cls.ATTR])
        if default is None:
            raise KeyError(f"the store's attrs hold no {cls.ATTR!r}")
        return default


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
    :class:`eae.core.chains.ChainEncoder` or a plain Dense-stack Keras model takes the
    written-out forward mode of :func:`eae.core.chains.dense_jvp`; anything else (a callable
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

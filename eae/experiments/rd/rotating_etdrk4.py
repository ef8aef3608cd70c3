"""The complex-field ETDRK4 scheme in a frame rotating with the spiral (d1 = d2).

:class:`_ComplexETDRK4` holds the state, the cached coefficient sets and the cubic
Hermite dense output (:func:`_hermite_basis`, :func:`_hermite_weights`) of the default
integrator; :func:`frame_amplitude` measures the frame's rotation rate. The step-size
control and the save loop that drive it (``_iter_etdrk4_complex``, with the tunables
``_FRAME_UPDATE`` and ``_DEFECT_PER_TOLERANCE``) stay in
:mod:`eae.experiments.rd.simulate`, which re-exports every name here. Split out of that
module to keep it under the size limit; this module never imports it.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from eae.experiments.rd.simulation_params import RDParams
from eae.experiments.rd.spectral import Grid, etdrk4_coefficients, initial_state

# Linear part 1 − s − d|k|² with s = _SHIFT_PER_A0 · a0 (see _ComplexETDRK4).
_SHIFT_PER_A0 = 0.8


def frame_amplitude(z: np.ndarray) -> float:
    """a0 = Σ|w|⁴ / Σ|w|² for w = u + iv: the mean phase rotation rate of w is exactly β·a0.

    (Im⟨w, w_t⟩ gets nothing from the growth and diffusion terms and −β Σ|w|⁴ from the
    rotation term.) Measured on the paper's problem: 0.8950 at t = 5, 0.9074 at t = 20,
    0.90775 at t = 300, within 2e-5 of the spiral's rotation frequency.
    """
    a2 = z.real**2 + z.imag**2
    return float(np.dot(a2.ravel(), a2.ravel()) / a2.sum())


def _hermite_basis(theta: np.ndarray, h: float) -> tuple[np.ndarray, np.ndarray]:
    """Cubic Hermite weights of (z0, z0', z1, z1', z1 − z0) for z(θ) and dz/dt(θ), each (m, 5).

    The derivative is written with z1 − z0 (formed in float64) instead of z0 and z1: its
    weight is ~1/h, which would amplify the float32 rounding of z0 and z1 (measured: 2x
    larger ẋ errors at h = 0.1).
    """
    th = np.asarray(theta, dtype=np.float64)[:, None]
    th2, th3 = th * th, th * th * th
    zero = np.zeros_like(th)
    value = np.hstack([2 * th3 - 3 * th2 + 1, h * (th3 - 2 * th2 + th), 3 * th2 - 2 * th3,
                       h * (th3 - th2), zero])
    deriv = np.hstack([zero, 3 * th2 - 4 * th + 1, zero, 3 * th2 - 2 * th, (6 * th - 6 * th2) / h])
    return value, deriv


def _hermite_weights(theta: np.ndarray, h: float, phase_end: float, omega: float, with_v: bool,
                     basis: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Weights on Y = (z0, z0', z1, z1', z1 − z0), each as (Re, Im): shape (2|3, len(theta), 10).

    Hermite interpolation of z on a step of length h at fractions ``theta``
    (:func:`_hermite_basis`, passed in when cached), with w = e^{−iφ(t)} z and
    φ(t) = ``phase_end`` − Ω (1 − θ) h. Rows: u at every theta, then
    u_t = Re(e^{−iφ}(z' − iΩ z)), then (``with_v``) v = Im(e^{−iφ} z).
    """
    value, deriv = basis if basis is not None else _hermite_basis(theta, h)
    angle = omega * h * (1 - np.asarray(theta, dtype=np.float64)[:, None]) - phase_end
    cr, ci = np.cos(angle), np.sin(angle)  # e^{−iφ(t)} = cr + i ci
    weights = np.empty((3 if with_v else 2, len(value), 10))
    weights[0, :, 0::2] = value * cr
    weights[0, :, 1::2] = -value * ci
    weights[1, :, 0::2] = deriv * cr + omega * value * ci
    weights[1, :, 1::2] = omega * value * cr - deriv * ci
    if with_v:
        weights[2, :, 0::2] = value * ci
        weights[2, :, 1::2] = value * cr
    return weights


class _ComplexETDRK4:
    """ETDRK4 for w = u + iv (d1 = d2 = d) in the rotating frame z = e^{iφ(t)} w, φ' = β a0.

    With d1 = d2 the system is w_t = (1 − |w|²) w − iβ|w|² w + dΔw: one complex field (one
    complex FFT per transform instead of two real ones) whose every term commutes with a
    phase rotation. In the frame z the equation gains iβa0 z; splitting it into a real
    linear part (diagonal in Fourier space, integrated exactly) and a reaction term that is
    small where |z|² ≈ a0 gives, with s = ``_SHIFT_PER_A0``·a0 and μ = (s + iβa0)/(1 + iβ)::

        z_t = (1 − s + dΔ) z − (1 + iβ)(|z|² − μ) z

    The settled spiral turns rigidly in phase at β·a0 (a0 = :func:`frame_amplitude`), so
    in this frame z hardly moves and the reaction term is nearly constant along a step,
    for which ETDRK4 is exact (measured local error at t = 300, h = 0.4, s = a0: 4e-8,
    against 4e-7 in a frame 0.008 off and 2e-3 with no frame). The split s matters for
    what accumulates: on the paper's problem to t = 500 at tolerance 2e-6 (step control on
    ‖e‖ only) the max error in x was 4.2e-6 (5977 evaluations) with s = 0, 1.4e-6 (4813)
    with 0.5 a0, 2.1e-6 (4273) with 0.8 a0, 4.6e-6 (3865) with a0 and 8.8e-5 (3485) with
    1.5 a0 — whose one-step error is 3x smaller than with a0: what accumulates over 10⁴
    saves is not what the step estimate sees. 0.8 a0 gives the least work for a given
    error (the default tolerance 8e-6:
    4.9e-6 with 3177 evaluations). a0 is re-measured after every step and the frame
    re-centred when it moved by more than ``_FRAME_UPDATE``.

    State at the current step start: ``z_hat`` (fft2 of z), ``m_hat`` (fft2 of the reaction
    M(z) = (|z|² − μ) z; the factor −(1 + iβ) is folded into the coefficients), z and z_t
    in physical space and, for the dense output, masked (Re z, Im z, Re z_t, Im z_t) in
    rows 4·end .. 4·end+3 of ``y``; rows 8, 9 hold the last step's masked z1 − z0.
    """

    def __init__(self, p: RDParams, grid: Grid, mask: np.ndarray | None, dtype: type):
        self.p, self.mask, self.n = p, mask, p.n
        k = 2 * np.pi * sfft.fftfreq(p.n, d=p.length / p.n)
        k2 = k[:, None] ** 2 + k[None, :] ** 2
        self.k2_unique, k2_index = np.unique(k2, return_inverse=True)
        self.k2_index = k2_index.reshape(k2.shape)
        self.neg_dk2 = -p.d1 * k2
        self.cb = -(1.0 + 1j * p.beta)
        self.coefficients: dict[int, tuple[np.ndarray, ...]] = {}
        self.bases: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}
        w0 = initial_state(p, grid)
        z = w0[0] + 1j * w0[1]
        self.set_frame(frame_amplitude(z))
        self.z_hat = sfft.fft2(z, workers=p.workers)
        self.m_hat, self.z, m, _ = self.nonlinear_hat(self.z_hat, keep=True)
        self.zt = self.derivative(self.z_hat, m)
        self.y = np.zeros((10, p.n * p.n), dtype=dtype)
        self.end = 1
        self.store_rows(4, self.z)
        self.store_rows(6, self.zt)
        self.phase = 0.0  # φ at the current step start

    def set_frame(self, a0: float) -> None:
        self.a0, self.omega, self.shift = a0, self.p.beta * a0, _SHIFT_PER_A0 * a0
        self.mu = (self.shift + 1j * self.omega) / (1.0 + 1j * self.p.beta)
        self.lin = ((1.0 - self.shift) + self.neg_dk2).astype(np.complex128)
        self.coefficients.clear()

    def coefficient_set(self, step: int, h: float) -> tuple[np.ndarray, ...]:
        """(E, E2, Q, f1, 2 f2, f3) for L = 1 − s − d|k|² and step h, complex128, cached.

        −(1 + iβ) is folded into Q and the f's. Computed on the distinct |k|² values only
        (~1/8 of the grid); complex128 even where real because numpy multiplies complex by
        complex faster than real by complex.
        """
        if step not in self.coefficients:
            p = self.p
            c = etdrk4_coefficients(h * ((1.0 - self.shift) - p.d1 * self.k2_unique), h)
            folds = (("E", 1.0), ("E2", 1.0), ("Q", self.cb), ("f1", self.cb), ("f2", 2 * self.cb),
                     ("f3", self.cb))
            self.coefficients[step] = tuple(
                np.asarray(fold * c[key], dtype=np.complex128)[self.k2_index] for key, fold in folds)
        return self.coefficients[step]

    def nonlinear_hat(self, stage_hat: np.ndarray, keep: bool = False):
        """fft2 of M(z) = (|z|² − μ) z, z = ifft2(stage_hat); with ``keep`` also z, M(z), Σ|z|⁴."""
        z = sfft.ifft2(stage_hat, workers=self.p.workers)
        m = np.conjugate(z)
        m *= z  # |z|², imaginary part 0
        sum_a4 = np.vdot(m, m).real if keep else None
        m -= self.mu
        m *= z
        m_hat = sfft.fft2(m, workers=self.p.workers, overwrite_x=not keep)
        return (m_hat, z, m, sum_a4) if keep else m_hat

    def step(self, step: int, h: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One ETDRK4 step (Cox & Matthews 2002, K&T 2005 notation) from the current state.

        Returns (ẑ_{n+1}, M̂_c, f3) — the last stage's reaction term and weight, for the error
        estimate. Temporaries are updated in place: this and the FFTs are the whole cost.
        """
        E, E2, Q, f1, f2x2, f3 = self.coefficient_set(step, h)
        z_hat, m_hat = self.z_hat, self.m_hat
        e2z = E2 * z_hat
        a = Q * m_hat
        a += e2z
        ma = self.nonlinear_hat(a)
        b = Q * ma
        b += e2z
        mb = self.nonlinear_hat(b)
        c = 2 * mb
        c -= m_hat
        c *= Q
        a *= E2
        c += a
        mc = self.nonlinear_hat(c)
        z_hat1 = E * z_hat
        m_hat = f1 * m_hat
        z_hat1 += m_hat
        ma += mb
        ma *= f2x2
        z_hat1 += ma
        z_hat1 += f3 * mc
        return z_hat1, mc, f3

    def store_rows(self, first: int, value: np.ndarray) -> None:
        """Masked (Re, Im) of a complex field into rows first, first + 1 of y."""
        n = self.n
        pair = value.view(np.float64).reshape(n, n, 2).transpose(2, 0, 1)
        rows = self.y[first:first + 2].reshape(2, n, n)
        if self.mask is None:
            rows[...] = pair
        else:
            np.multiply(pair, self.mask, out=rows)

    def derivative(self, z_hat: np.ndarray, m: np.ndarray) -> np.ndarray:
        """z_t = L z + N(z) in physical space: the exact right-hand side (``m`` = M(z) is reused)."""
        zt = sfft.ifft2(self.lin * z_hat, workers=self.p.workers, overwrite_x=True)
        m *= self.cb
        zt += m
        return zt

    def step_error(self, m_hat1: np.ndarray, mc: np.ndarray, f3: np.ndarray, z1: np.ndarray,
                   zt1: np.ndarray, norm2: float) -> float:
        """Relative local error estimate of the step just computed, for z and for its rate.

        e = f3·(M̂(z1) − M̂_c): the last stage's quadrature weight times the distance of its
        reaction term from the one at the new state, which the next step needs anyway
        (measured 3–4x the true local error), relative to ‖ẑ1‖ (norm2 = ‖ẑ1‖²); and L e
        relative to the lab-frame rate ‖ŵ_t‖ — the error of ẋ at the step end, dominated by
        the stiff high-|k| part of e in the initial transient (controlling ‖e‖ alone left ẋ
        errors of 6e-5 at t = 0.05 at tolerance 8e-6, n = 100). The larger of the two.
        """
        diff = m_hat1 - mc
        diff *= f3
        error2 = np.vdot(diff, diff).real / norm2
        diff *= self.lin
        rate = zt1 - (1j * self.omega) * z1  # w_t rotated into the frame
        rate2 = np.vdot(rate, rate).real * self.n**2  # Parseval
        return math.sqrt(max(error2, np.vdot(diff, diff).real / rate2))

    def interpolation_defect(self, zt1: np.ndarray, delta: np.ndarray, h: float, norm2: float) -> float:
        """Trapezoid-rule defect ‖(z0' + z1')/2 − (z1 − z0)/h‖ / ‖z1‖ of a step, ≈ h² z⁽³⁾/12.

        A cheap gauge of the dense output's error: the Hermite interpolant's derivative (ẋ at
        saves inside a step) was measured off by 0.05–0.1 times this in the initial transient,
        where fast decaying modes make it large. ``norm2`` = ‖ẑ1‖² = n² ‖z1‖².
        """
        d = zt1 + self.zt
        d -= delta * (2.0 / h)
        return 0.5 * math.sqrt(np.vdot(d, d).real * self.n**2 / norm2)

    def accept(self, z_hat1: np.ndarray, m_hat1: np.ndarray, z1: np.ndarray, zt1: np.ndarray,
               delta: np.ndarray, h: float) -> None:
        """Make the new step end the current state (``delta`` = z1 − z0, in physical space)."""
        self.end = 1 - self.end
        self.store_rows(4 * self.end, z1)
        self.store_rows(4 * self.end + 2, zt1)
        self.store_rows(8, delta)
        self.z_hat, self.m_hat, self.z, self.zt = z_hat1, m_hat1, z1, zt1
        self.phase += self.omega * h

    def recentre(self, a0: float) -> None:
        """Same state in the frame for a new a0: M changes by −Δμ·z, z_t by +iβΔa0·z."""
        mu, omega = self.mu, self.omega
        self.set_frame(a0)
        self.m_hat -= (self.mu - mu) * self.z_hat
        self.zt += (1j * (self.omega - omega)) * self.z
        self.store_rows(4 * self.end + 2, self.zt)

    def saves(self, theta: np.ndarray, h: float, with_v: bool,
              out: tuple[np.ndarray, ...] | None = None) -> list[np.ndarray]:
        """(u, u_t[, v]) at fractions theta of the step just accepted, masked, each (m, n, n).

        Written into ``out`` (arrays of that shape, of y's dtype) when given.
        """
        key = (h, theta[0], len(theta))  # in a settled run every step has the same saves
        if key not in self.bases:
            self.bases[key] = _hermite_basis(theta, h)
        weights = _hermite_weights(theta, h, self.phase, self.omega, with_v, self.bases[key])
        if self.end == 0:  # the step start is in rows 4..7, its end in rows 0..3
            weights = weights[..., [4, 5, 6, 7, 0, 1, 2, 3, 8, 9]]
        weights = weights.astype(self.y.dtype)
        if out is None:
            out = [np.empty((len(theta), self.n, self.n), dtype=self.y.dtype) for _ in weights]
        for w, target in zip(weights, out):
            np.matmul(w, self.y, out=target.reshape(len(theta), -1))
        return list(out)

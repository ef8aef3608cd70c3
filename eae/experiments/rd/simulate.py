"""Lambda–omega reaction–diffusion simulation (SPEC §3.1): pseudo-spectral in space.

The system on the periodic square [−L/2, L/2)², A² = u² + v²::

    u_t = (1 − A²) u + β A² v + d1 Δu
    v_t = −β A² u + (1 − A²) v + d2 Δv

is split into a diagonal linear part in Fourier space, L_i = 1 − d_i |k|², and the cubic
reaction term N(u, v) = (A² (β v − u), −A² (β u + v)) evaluated in physical space
(no dealiasing: the spiral's spectrum is resolved at the grid sizes used).

Integrators
-----------
``etdrk4`` (default)
    Exponential time differencing RK4 (Cox & Matthews 2002; Kassam & Trefethen 2005): the
    stiff diffusion is integrated exactly, so the step is set by accuracy alone.
    With d1 = d2 (the paper's case) the system is one complex field w = u + iv, integrated
    in a frame rotating with the spiral, with an adaptive step (``tolerance``, up to
    ``max_step``) and a cubic Hermite dense output for the saves inside a step
    (:class:`_ComplexETDRK4`, :func:`_iter_etdrk4_complex`); ``tolerance: 0`` gives fixed
    steps of save_interval / ``steps_per_save``. With d1 ≠ d2 it falls back to fixed steps
    on the two real fields (:func:`_iter_etdrk4_fields`).
``rk45`` / ``dop853``
    Adaptive explicit Runge–Kutta (scipy) on the physical-space state, landing on every
    saved time (or, with ``dense_output``, interpolating as solve_ivp's t_eval does) —
    the comparison and reference path (``rk45`` at rtol 1e-3, atol 1e-6 mirrors MATLAB's
    ``ode45`` defaults; ``dop853`` at tight tolerances, landing, is the reference).

Saved data: x = f·u and ẋ = f·u_t with the mask f = exp(−c (X² + Y²)) and u_t from the
exact right-hand side (spectral Laplacian), both float32, dims (time, y, x). The data
variables are called ``field`` (x) and ``field_dot`` (ẋ) because xarray cannot hold a
variable named ``x`` beside the spatial dimension ``x``.
"""

from __future__ import annotations

import logging
import math
import os
import time as _time
from dataclasses import asdict, dataclass
from typing import Any, Iterator, Mapping

import numpy as np
import scipy.fft as sfft
import xarray as xr
from scipy import integrate

from eae.support.progress import Progress
from eae.support.settings import settings_from

log = logging.getLogger("eae")

METHODS = ("etdrk4", "rk45", "dop853")
_SCIPY_METHODS = {"rk45": integrate.RK45, "dop853": integrate.DOP853}


@dataclass(frozen=True)
class RDParams:
    """Parameters of one lambda–omega simulation (the ``rd.simulation`` config section)."""

    n: int = 100  # grid points per side
    length: float = 20.0  # side of the periodic square [−L/2, L/2)
    beta: float = 1.0
    d1: float = 0.1
    d2: float = 0.1
    arms: int = 1  # spiral arms m of the initial condition tanh(r) e^{i(mθ − r)}
    mask_coefficient: float = 0.01  # f = exp(−c (X² + Y²))
    save_interval: float = 0.05
    save_start: float = 0.0  # first saved time (a multiple of save_interval)
    t_end: float = 500.0  # last saved time (inclusive)
    method: str = "etdrk4"
    tolerance: float = 8e-6  # ETDRK4 (d1 = d2): local error tolerance per step; 0: fixed steps
    max_step: float = 1.0  # ETDRK4 (d1 = d2, adaptive): longest internal step (model time)
    steps_per_save: int = 1  # ETDRK4 fixed steps (tolerance 0 or d1 ≠ d2): save_interval / this
    rtol: float = 1e-3  # rk45 / dop853
    atol: float = 1e-6  # rk45 / dop853
    dense_output: bool = False  # rk45 / dop853: interpolate saves instead of landing on them
    chunk_time: int = 250  # snapshots per Zarr chunk
    workers: int = 1  # threads for scipy.fft (the results do not depend on it)

    @property
    def n_saves(self) -> int:
        return _count_intervals(self.t_end - self.save_start, self.save_interval, "t_end - save_start") + 1

    @property
    def step(self) -> float:
        return self.save_interval / self.steps_per_save

    def save_times(self) -> np.ndarray:
        """Saved times save_start + k·save_interval, k = 0..n_saves−1 (no drift from summing)."""
        return self.save_start + self.save_interval * np.arange(self.n_saves)


def _count_intervals(span: float, interval: float, what: str) -> int:
    count = span / interval
    if count < -1e-9 or abs(count - round(count)) > 1e-6 * max(1.0, abs(count)):
        raise ValueError(f"rd.simulation: {what} = {span} is not a non-negative multiple of "
                         f"save_interval = {interval}")
    return int(round(count))


def params_from_config(cfg: Mapping[str, Any] | RDParams) -> RDParams:
    """Validate a config mapping (``rd.simulation``) and turn it into :class:`RDParams`."""
    if isinstance(cfg, RDParams):
        params = cfg
    else:
        params = settings_from(RDParams, cfg, "rd.simulation")
    checks = [
        (params.n >= 8, "n must be >= 8"),
        (params.length > 0, "length must be > 0"),
        (params.d1 >= 0 and params.d2 >= 0, "d1, d2 must be >= 0"),
        (params.save_interval > 0, "save_interval must be > 0"),
        (params.save_start >= 0, "save_start must be >= 0"),
        (params.t_end > params.save_start, "t_end must be > save_start"),
        (params.method in METHODS, f"method must be one of {METHODS}"),
        (params.steps_per_save >= 1, "steps_per_save must be >= 1"),
        (params.tolerance >= 0, "tolerance must be >= 0"),
        (params.max_step > 0, "max_step must be > 0"),
        (params.rtol > 0 and params.atol > 0, "rtol, atol must be > 0"),
        (params.chunk_time >= 1, "chunk_time must be >= 1"),
        (params.workers >= 1, "workers must be >= 1"),
        (params.mask_coefficient >= 0, "mask_coefficient must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            raise ValueError(f"rd.simulation: {message} (got {asdict(params)})")
    params.n_saves  # raises if t_end - save_start is not a multiple of save_interval
    _count_intervals(params.save_start, params.save_interval, "save_start")
    return params


# ----------------------------------------------------------------------------- grid


@dataclass(frozen=True)
class Grid:
    """Physical grid, real-FFT wavenumbers and the mask for one parameter set."""

    x: np.ndarray  # (n,) cell positions, also used for y
    k2: np.ndarray  # (n, n//2+1) |k|² on the rfft2 layout
    mask: np.ndarray  # (n, n) f = exp(−c (X² + Y²)), dims (y, x)
    X: np.ndarray
    Y: np.ndarray


def make_grid(p: RDParams) -> Grid:
    """Grid of n points per side on [−L/2, L/2): same physical domain for every n."""
    dx = p.length / p.n
    x = -p.length / 2 + dx * np.arange(p.n)
    X, Y = np.meshgrid(x, x, indexing="xy")  # X[iy, ix] = x[ix]: arrays are (y, x)
    kx = 2 * np.pi * sfft.rfftfreq(p.n, d=dx)
    ky = 2 * np.pi * sfft.fftfreq(p.n, d=dx)
    k2 = ky[:, None] ** 2 + kx[None, :] ** 2
    mask = np.exp(-p.mask_coefficient * (X**2 + Y**2))
    return Grid(x=x, k2=k2, mask=mask, X=X, Y=Y)


def initial_state(p: RDParams, grid: Grid) -> np.ndarray:
    """One-armed (m-armed) spiral u + iv = tanh(r) e^{i(mθ − r)}, shape (2, n, n)."""
    r = np.hypot(grid.X, grid.Y)
    theta = np.arctan2(grid.Y, grid.X)
    phase = p.arms * theta - r
    return np.stack([np.tanh(r) * np.cos(phase), np.tanh(r) * np.sin(phase)])


def linear_operator(p: RDParams, grid: Grid) -> np.ndarray:
    """Diagonal linear part L_i = 1 − d_i |k|² on the rfft2 layout, shape (2, n, n//2+1)."""
    return np.stack([1.0 - p.d1 * grid.k2, 1.0 - p.d2 * grid.k2])


def reaction(w: np.ndarray, beta: float) -> np.ndarray:
    """Cubic part N(u, v) = (A² (β v − u), −A² (β u + v)) in physical space, w = (u, v)."""
    u, v = w[0], w[1]
    a2 = u * u + v * v
    out = np.empty_like(w)
    np.multiply(a2, beta * v - u, out=out[0])
    np.multiply(a2, -(beta * u + v), out=out[1])
    return out


def rhs_physical(w: np.ndarray, p: RDParams, grid: Grid, lin: np.ndarray) -> np.ndarray:
    """Exact right-hand side (u_t, v_t) with the spectral Laplacian, w shape (2, n, n)."""
    lin_part = sfft.irfft2(lin * sfft.rfft2(w, workers=p.workers), s=w.shape[-2:], workers=p.workers)
    return lin_part + reaction(w, p.beta)


# ----------------------------------------------------------------------------- ETDRK4


def _phi_taylor(z: np.ndarray, k: int, terms: int = 20) -> np.ndarray:
    """φ_k(z) = Σ_j z^j / (j + k)! by Horner's rule; for |z| < 1, 20 terms are exact to rounding."""
    out = np.full_like(z, 1.0 / math.factorial(terms + k))
    for j in range(terms - 1, -1, -1):
        out *= z
        out += 1.0 / math.factorial(j + k)
    return out


def etdrk4_coefficients(lh: np.ndarray, h: float) -> dict[str, np.ndarray]:
    """ETDRK4 coefficients for h·L = ``lh`` (real): E = e^{hL}, E2 = e^{hL/2}, Q, f1, f2, f3.

    In φ-functions (φ1 = (e^z − 1)/z, ...; Cox & Matthews 2002, Kassam & Trefethen 2005):
    Q = (h/2) φ1(z/2), f1 = h (φ1 − 3φ2 + 4φ3), f2 = h (φ2 − 2φ3), f3 = h (4φ3 − φ2).
    The closed forms cancel badly near z = 0 (K&T's reason for contour integrals); here
    |z| < 1 takes Taylor series instead, exact to rounding (checked against 50-digit
    arithmetic: ≤ 3e-15) and cheap: 0.18 ms for the 1210 distinct |k|² at n = 100 against
    3.8 ms for a 32-point contour, and the adaptive scheme needs a set per step size and
    frame. Elsewhere the closed forms lose at most two digits (at |z| = 1).
    """
    lh = np.asarray(lh, dtype=np.float64)
    coef = {"E": np.exp(lh), "E2": np.exp(lh / 2)}
    small = np.abs(lh) < 1.0
    z = lh[~small]
    ez = coef["E"][~small]
    closed = {
        "Q": h * (coef["E2"][~small] - 1) / z,
        "f1": h * (-4 - z + ez * (4 - 3 * z + z**2)) / z**3,
        "f2": h * (2 + z + ez * (z - 2)) / z**3,
        "f3": h * (-4 - 3 * z - z**2 + ez * (4 - z)) / z**3,
    }
    z = lh[small]
    phi1, phi2, phi3 = (_phi_taylor(z, k) for k in (1, 2, 3))
    series = {
        "Q": h / 2 * _phi_taylor(z / 2, 1),
        "f1": h * (phi1 - 3 * phi2 + 4 * phi3),
        "f2": h * (phi2 - 2 * phi3),
        "f3": h * (4 * phi3 - phi2),
    }
    for key in ("Q", "f1", "f2", "f3"):
        coef[key] = np.empty_like(lh)
        coef[key][~small] = closed[key]
        coef[key][small] = series[key]
    return coef


def _project_hermitian(w_hat: np.ndarray) -> None:
    """Make the self-conjugate columns of an rfft2 array Hermitian again (in place).

    In the rfft2 layout the k_x = 0 column (and the k_x = n/2 column for even n) must
    satisfy c[−k_y] = conj(c[k_y]). Round-off leaves a tiny anti-Hermitian part there
    which the inverse transform ignores, so the reaction term never damps it, while the
    linear factor e^{hL} with L = 1 − d|k|² > 0 at small |k| amplifies it like e^t: left
    alone it reaches O(1) by t ≈ 70 and the run blows up. Projecting every step costs O(n).
    """
    n = w_hat.shape[-2]
    mirror = (-np.arange(n)) % n
    columns = [0] if n % 2 else [0, n // 2]
    for col in columns:
        c = w_hat[..., :, col]
        w_hat[..., :, col] = 0.5 * (c + np.conj(c[..., mirror]))


def _iter_etdrk4_fields(p: RDParams, grid: Grid) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """Fixed-step ETDRK4 on the two real fields (any d1, d2); yields at every saved time.

    Yields (save index, w, u_t, evaluations so far), w = (u, v). The general path for
    d1 ≠ d2, where the system is not one complex equation; h = save_interval / steps_per_save.
    """
    n, workers, beta = p.n, p.workers, p.beta
    lin = linear_operator(p, grid)
    if p.d1 == p.d2:  # one coefficient array serves both fields: less memory traffic
        lin = lin[:1]
    coef = etdrk4_coefficients(lin * p.step, p.step)
    E, E2, Q, f1, f3 = (coef[k] for k in ("E", "E2", "Q", "f1", "f3"))
    f2x2 = 2 * coef["f2"]
    shape = (n, n)

    def nonlinear_hat(w_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        w = sfft.irfft2(w_hat, s=shape, workers=workers)
        nl = reaction(w, beta)
        return sfft.rfft2(nl, workers=workers), w, nl

    def step(w_hat: np.ndarray, nv: np.ndarray) -> np.ndarray:
        """One ETDRK4 step (Cox & Matthews; K&T 2005 notation), nv = N̂(w_hat)."""
        e2w = E2 * w_hat
        a = e2w + Q * nv
        na = nonlinear_hat(a)[0]
        nb = nonlinear_hat(e2w + Q * na)[0]
        nc = nonlinear_hat(E2 * a + Q * (2 * nb - nv))[0]
        out = E * w_hat + f1 * nv + f2x2 * (na + nb) + f3 * nc
        _project_hermitian(out)
        return out

    w_hat = sfft.rfft2(initial_state(p, grid), workers=workers)
    steps_before = int(round(p.save_start / p.step))
    evals = 0
    step_count = 0
    nv = None  # N̂(w_hat) when already known (it is computed at every save)
    for k in range(p.n_saves):
        while step_count < steps_before + k * p.steps_per_save:
            if nv is None:
                nv = nonlinear_hat(w_hat)[0]
                evals += 1
            w_hat = step(w_hat, nv)
            evals += 3
            step_count += 1
            nv = None
        # The reaction term at the saved state is needed for u_t; it is reused as the
        # first stage of the next step, so a save costs one extra inverse FFT only.
        nv, w, nl = nonlinear_hat(w_hat)
        evals += 1
        u_t = sfft.irfft2(lin[0] * w_hat[0], s=shape, workers=workers) + nl[0]
        yield k, w, u_t, evals


# ------------------------------------------------ ETDRK4, one complex field in a rotating frame

_TICKS_PER_SAVE = 1024  # adaptive step grid: save_interval / 1024 (see _choose_step)
# Re-centre the frame when a0 moved by more than this: each re-centring costs new
# coefficient sets (~0.2 ms each); 1e-3 and 3e-5 gave the same step count (t to 500).
_FRAME_UPDATE = 1e-3
# Linear part 1 − s − d|k|² with s = _SHIFT_PER_A0 · a0 (see _ComplexETDRK4).
_SHIFT_PER_A0 = 0.8
# Saves inside a step need the trapezoid defect (_ComplexETDRK4.interpolation_defect) below
# this many tolerances: the Hermite ẋ error, measured at 0.05–0.1 times the defect, then
# stays below about one tolerance.
_DEFECT_PER_TOLERANCE = 10.0


@dataclass
class _Block:
    """Saved snapshots k0 .. k0+m−1 (mask·u, mask·u_t and optionally mask·v), each (m, n, n)."""

    k0: int
    u: np.ndarray
    u_t: np.ndarray
    v: np.ndarray | None
    evals: int


def frame_amplitude(z: np.ndarray) -> float:
    """a0 = Σ|w|⁴ / Σ|w|² for w = u + iv: the mean phase rotation rate of w is exactly β·a0.

    (Im⟨w, w_t⟩ gets nothing from the growth and diffusion terms and −β Σ|w|⁴ from the
    rotation term.) Measured on the paper's problem: 0.8950 at t = 5, 0.9074 at t = 20,
    0.90775 at t = 300, within 2e-5 of the spiral's rotation frequency.
    """
    a2 = z.real**2 + z.imag**2
    return float(np.dot(a2.ravel(), a2.ravel()) / a2.sum())


def _choose_step(wanted: float, pos: int, p: RDParams, ticks: int) -> int:
    """Step length in ticks (save_interval / ticks) for a wanted length in model time.

    Steps of a save interval or longer are whole save intervals (at most ``max_step``) and
    start on a save; shorter ones are powers of two in ticks no longer than the alignment of
    ``pos``, so their ends come back onto the saves.
    """
    want = min(wanted, p.max_step) / p.save_interval * ticks
    if pos % ticks == 0 and want >= ticks:
        return int(want // ticks) * ticks
    top = ticks.bit_length() - 1
    align = (pos & -pos).bit_length() - 1 if pos else top
    return 1 << min(align, top, math.floor(math.log2(max(want, 1.0))))


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


def _iter_etdrk4_complex(p: RDParams, grid: Grid, mask: np.ndarray | None, with_v: bool = False,
                         dtype: type = np.float64,
                         out: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[_Block]:
    """Adaptive ETDRK4 in a rotating frame (:class:`_ComplexETDRK4`) with dense output.

    Step size: the local error estimate (:meth:`_ComplexETDRK4.step_error`, for z and for
    its time derivative) is kept below ``tolerance`` by the usual controller (exponent 1/4,
    safety 0.9, factor 0.2–5; a rejected step is retried at most half as long), and a step
    with saves inside also needs the dense output's defect below ``_DEFECT_PER_TOLERANCE``
    tolerances (exponent 1/2; this never shortens a step below one save interval). Steps
    are whole save intervals up to ``max_step`` or power-of-two fractions of one
    (:func:`_choose_step`). With ``tolerance`` 0 the step is fixed at save_interval /
    steps_per_save.

    Dense output: saves inside a step come from cubic Hermite interpolation in time of z
    (z and z_t at both step ends, in physical space, masked) rotated back to the lab
    frame — one small matrix product per step gives x and ẋ at all its saves, in ``dtype``,
    written straight into ``out`` = (x array, ẋ array) when given. Saves at step ends are
    the step's own values (u_t from the exact right-hand side).
    """
    si = p.save_interval
    adaptive = p.tolerance > 0
    ticks = _TICKS_PER_SAVE if adaptive else p.steps_per_save
    scheme = _ComplexETDRK4(p, grid, mask, dtype)
    evals, pos, warned = 1, 0, False
    first_save = int(round(p.save_start / si))
    last_save = first_save + p.n_saves - 1
    next_save = first_save

    def targets(k0: int, m: int) -> tuple[np.ndarray, ...] | None:
        return None if out is None else tuple(a[k0:k0 + m] for a in out)

    if first_save == 0:  # the initial state: the end of an empty step
        u, u_t, *v = scheme.saves(np.ones(1), 1.0, with_v, targets(0, 1))
        yield _Block(0, u, u_t, v[0] if with_v else None, evals)
        next_save = 1
    step = _choose_step(si, 0, p, ticks) if adaptive else 1
    limit = _DEFECT_PER_TOLERANCE * p.tolerance
    while next_save <= last_save:
        step = min(step, last_save * ticks - pos)
        h = step * si / ticks
        z_hat1, mc, f3 = scheme.step(step, h)
        m_hat1, z1, m1, sum_a4 = scheme.nonlinear_hat(z_hat1, keep=True)
        evals += 4
        norm2 = np.vdot(z_hat1, z_hat1).real  # = n² Σ|z1|² (Parseval)
        zt1 = scheme.derivative(z_hat1, m1)
        delta = z1 - scheme.z
        if adaptive:
            est = scheme.step_error(m_hat1, mc, f3, z1, zt1, norm2)
            defect = scheme.interpolation_defect(zt1, delta, h, norm2)
            # the defect only limits steps with saves inside: never below one save interval
            wanted = min(h * _growth(p.tolerance, est, 0.25), max(h * _growth(limit, defect, 0.5), si))
            interior = max(first_save, pos // ticks + 1) * ticks < pos + step  # saves inside the step
            too_long = not est <= p.tolerance or (interior and not defect <= limit)  # NaN: too long
            if too_long and step > 1:
                step = _choose_step(min(wanted, 0.5 * h), pos, p, ticks)
                continue
            if too_long and not warned:
                log.warning("simulate_rd: local error estimate %.2e > tolerance at the shortest step %g",
                            est, h)
                warned = True
        scheme.accept(z_hat1, m_hat1, z1, zt1, delta, h)
        saves = np.arange(next_save, min(last_save, (pos + step) // ticks) + 1)
        if len(saves):
            k0 = int(saves[0]) - first_save
            u, u_t, *v = scheme.saves((saves * ticks - pos) / step, h, with_v, targets(k0, len(saves)))
            yield _Block(k0, u, u_t, v[0] if with_v else None, evals)
            next_save = int(saves[-1]) + 1
        pos += step
        a0_new = sum_a4 * p.n**2 / norm2  # frame_amplitude(z1)
        if abs(a0_new - scheme.a0) > _FRAME_UPDATE:
            scheme.recentre(a0_new)
        if adaptive:
            step = _choose_step(wanted, pos, p, ticks)


def _growth(tolerance: float, error: float, exponent: float) -> float:
    """Step factor 0.9 (tolerance / error)^exponent within [0.2, 5] (0.2 for a NaN error)."""
    if not error > 0:
        return 5.0 if error == 0 else 0.2
    return min(5.0, max(0.2, 0.9 * (tolerance / error) ** exponent))


# ----------------------------------------------------------------------------- scipy RK


def _scipy_rhs(p: RDParams, grid: Grid):
    lin = linear_operator(p, grid)
    shape = (2, p.n, p.n)

    def fun(_t: float, y: np.ndarray) -> np.ndarray:
        return rhs_physical(y.reshape(shape), p, grid, lin).ravel()

    def u_t_of(w: np.ndarray) -> np.ndarray:
        return rhs_physical(w, p, grid, lin)[0]

    return fun, u_t_of, shape


def _run_solver(solver) -> None:
    message = None
    while solver.status == "running":
        message = solver.step()
    if solver.status == "failed":
        raise RuntimeError(f"rd.simulation: {type(solver).__name__} failed at t = {solver.t}: {message}")


def _iter_scipy(p: RDParams, grid: Grid) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """Adaptive scipy RK on the flattened physical state, landing exactly on every save.

    Each save interval is one solver run with t_bound at the save time (the step size
    carries over), so snapshots are step end points and steps never exceed the save
    interval. The dense output (``dense_output: true``, :func:`_iter_scipy_dense`) is
    avoided by default: its interpolant is inaccurate for the stiff high-|k| modes
    (measured with DOP853 at rtol 1e-10, n = 100: snapshot errors up to 1.3e-6 in x and
    7e-5 in x_dot, against 1e-8 at step end points), which would spoil a reference.
    """
    fun, u_t_of, shape = _scipy_rhs(p, grid)
    cls = _SCIPY_METHODS[p.method]
    y, t, h, nfev = initial_state(p, grid).ravel(), 0.0, None, 0
    for k, t_save in enumerate(p.save_times()):
        if t_save > t:
            first = None if h is None else min(h, float(t_save) - t)
            solver = cls(fun, t, y, float(t_save), rtol=p.rtol, atol=p.atol, first_step=first)
            _run_solver(solver)
            y, t, h, nfev = solver.y, float(t_save), solver.h_abs, nfev + solver.nfev
        w = y.reshape(shape)
        nfev += 1
        yield k, w, u_t_of(w), nfev


def _iter_scipy_dense(p: RDParams, grid: Grid) -> Iterator[tuple[int, np.ndarray, np.ndarray, int]]:
    """One adaptive scipy RK run; snapshots from its dense output (as solve_ivp's t_eval)."""
    fun, u_t_of, shape = _scipy_rhs(p, grid)
    times = p.save_times()
    y0 = initial_state(p, grid).ravel()
    solver = _SCIPY_METHODS[p.method](fun, 0.0, y0, float(times[-1]), rtol=p.rtol, atol=p.atol)
    k, extra, interpolant = 0, 0, None  # one interpolant per step, built on demand
    while k < len(times):
        if times[k] <= solver.t:
            if solver.t_old is None:  # only t = 0 lies before the first step
                y = y0
            else:
                interpolant = interpolant or solver.dense_output()
                y = interpolant(times[k])
            w = np.asarray(y).reshape(shape)
            extra += 1
            yield k, w, u_t_of(w), solver.nfev + extra
            k += 1
            continue
        message = solver.step()
        interpolant = None
        if solver.status == "failed":
            raise RuntimeError(f"rd.simulation: {p.method} failed at t = {solver.t}: {message}")


def _iter_blocks(p: RDParams, grid: Grid, mask: np.ndarray | None, with_v: bool,
                 dtype: type = np.float64,
                 out: tuple[np.ndarray, np.ndarray] | None = None) -> Iterator[_Block]:
    """Saved snapshots in blocks, masked by ``mask`` (None: unmasked), whatever the method.

    ``dtype`` is the precision of the ETDRK4 dense output (float32 for the stored data);
    with ``out`` = (x array, ẋ array) every block is written there (its arrays are views).
    """
    if p.method == "etdrk4" and p.d1 == p.d2:
        yield from _iter_etdrk4_complex(p, grid, mask, with_v, dtype, out)
        return
    if p.method == "etdrk4":
        states = _iter_etdrk4_fields(p, grid)
    else:
        states = (_iter_scipy_dense if p.dense_output else _iter_scipy)(p, grid)
    scale = 1.0 if mask is None else mask
    for k, w, u_t, evals in states:
        u, u_t = (scale * w[0])[None], (scale * u_t)[None]
        if out is not None:
            out[0][k], out[1][k] = u[0], u_t[0]
            u, u_t = out[0][k:k + 1], out[1][k:k + 1]
        yield _Block(k, u, u_t, (scale * w[1])[None] if with_v else None, evals)


# ----------------------------------------------------------------------------- public API


def _allocate_output(shape: tuple[int, ...]) -> np.ndarray:
    """float32 array for the saved fields, allocated without numpy's MADV_HUGEPAGE advice.

    With transparent huge pages on "madvise" (the common default), numpy's advice lets the
    first write of the 400 MB outputs take anything from 0.02 to 0.4 s per array (memory
    compaction), measured on the 2-core test VM: paper-size ETDRK4 runs (tolerance 2e-6)
    took 0.80–1.25 s, against a steady 1.06–1.10 s with 4 KiB pages (0.12 s per array).
    Same mean, but the output cost — a quarter of an ETDRK4 run — becomes predictable,
    which benchmarks need.
    """
    try:
        from numpy._core.multiarray import _set_madvise_hugepage
    except ImportError:  # private numpy API: fall back to the default allocation
        return np.empty(shape, dtype=np.float32)
    previous = _set_madvise_hugepage(False)
    try:
        return np.empty(shape, dtype=np.float32)
    finally:
        _set_madvise_hugepage(previous)


def simulate(params: Mapping[str, Any] | RDParams, progress_label: str = "simulate_rd") -> xr.Dataset:
    """Run one simulation; return x = f·u and ẋ = f·u_t as float32, dims (time, y, x).

    Data variables: ``field`` (x), ``field_dot`` (ẋ), ``mask`` (f, dims (y, x)). The
    attrs hold every parameter plus ``rhs_evaluations`` and ``wall_seconds``.
    """
    p = params_from_config(params)
    grid = make_grid(p)
    n_saves = p.n_saves
    field, field_dot = _allocate_output((n_saves, p.n, p.n)), _allocate_output((n_saves, p.n, p.n))
    progress = Progress(n_saves, progress_label)
    t0 = _time.perf_counter()
    evals = 0
    for block in _iter_blocks(p, grid, grid.mask, with_v=False, dtype=np.float32, out=(field, field_dot)):
        k1 = block.k0 + len(block.u)
        evals = block.evals
        # A sum is non-finite when any term is. The last snapshot of a block suffices: the
        # others interpolate between it and the previous block's last (a pass over the
        # whole output would cost ~10% of an ETDRK4 run).
        if not (np.isfinite(block.u[-1].sum()) and np.isfinite(block.u_t[-1].sum())):
            raise FloatingPointError(f"rd.simulation: non-finite values at t = "
                                     f"{p.save_start + block.k0 * p.save_interval:g} with {asdict(p)}")
        progress.update(k1, f"t={p.save_start + (k1 - 1) * p.save_interval:.2f} rhs_evals={evals}")
    wall = _time.perf_counter() - t0
    log.info("simulate_rd: %s n=%d, %d snapshots, %d rhs evaluations, %.2f s",
             p.method, p.n, n_saves, evals, wall)
    xy = grid.x
    attrs = {k: v for k, v in asdict(p).items()}
    attrs.update(
        description="lambda-omega reaction-diffusion, pseudo-spectral (SPEC 3.1)",
        equations="u_t=(1-A2)u+beta*A2*v+d1*Lap(u); v_t=-beta*A2*u+(1-A2)v+d2*Lap(v); A2=u^2+v^2",
        initial_condition="u+iv = tanh(r) exp(i(arms*theta - r))",
        step=p.step if p.method == "etdrk4" and (p.tolerance == 0 or p.d1 != p.d2) else "adaptive",
        rhs_evaluations=int(evals),
        wall_seconds=float(wall),
    )
    ds = xr.Dataset(
        data_vars={
            "field": (("time", "y", "x"), field,
                      {"long_name": "x = f*u (masked u)", "units": "1"}),
            "field_dot": (("time", "y", "x"), field_dot,
                          {"long_name": "x_dot = f*u_t (u_t from the exact right-hand side)",
                           "units": "1/time"}),
            "mask": (("y", "x"), grid.mask.astype(np.float32),
                     {"long_name": "f = exp(-mask_coefficient*(X^2+Y^2))"}),
        },
        coords={"time": ("time", p.save_times(), {"units": "model time"}),
                "y": ("y", xy), "x": ("x", xy)},
        attrs=attrs,
    )
    return ds


def simulate_stage(cfg: Mapping[str, Any], out_path: str | os.PathLike) -> None:
    """Pipeline stage: simulate with config ``rd.simulation`` and write the Zarr store."""
    from eae.support.io import write_zarr
    from eae.support.provenance import make_record, now_iso

    started = now_iso()
    p = params_from_config(cfg)
    log.info("simulate_rd: %s", asdict(p))
    ds = simulate(p)
    chunk = min(p.chunk_time, ds.sizes["time"])
    # Chunk by time through the encoding (no dask needed): one chunk holds chunk_time
    # whole snapshots, the unit every reader (dataset preparation, plots) slices by.
    for name in ("field", "field_dot"):
        ds[name].encoding["chunks"] = (chunk, p.n, p.n)
    record = make_record("simulate_rd", config=asdict(p), seeds={},
                         started=started)
    write_zarr(ds, out_path, provenance=record)
    log.info("simulate_rd: wrote %s", out_path)


def iter_states(params: Mapping[str, Any] | RDParams) -> Iterator[tuple[float, np.ndarray, np.ndarray]]:
    """Yield (t, w, u_t) at every saved time: w = (u, v) of shape (2, n, n), u_t (n, n), unmasked.

    For diagnostics that need v (the amplitude A², the phase rotation), which the saved
    masked data do not hold. The same states as :func:`simulate` stores (in float64): with
    the default scheme, saves inside a step come from its dense output.
    """
    p = params_from_config(params)
    grid = make_grid(p)
    for block in _iter_blocks(p, grid, None, with_v=True):
        for i in range(len(block.u)):
            k = block.k0 + i
            yield float(p.save_start + k * p.save_interval), np.stack([block.u[i], block.v[i]]), block.u_t[i]


def spiral_diagnostics(params: Mapping[str, Any] | RDParams, r_min: float, r_max: float,
                       t_from: float = 0.0) -> dict[str, float]:
    """Far-field amplitude and rotation frequency of the simulated spiral.

    Over the annulus r_min <= r <= r_max and the saved times t >= t_from: ``a2`` is the
    mean of A² = u² + v², ``a2_std`` its spread, and ``omega`` the mean rate at which the
    phase of u + iv turns (phase increments between consecutive saves, so save_interval
    must be well below π/ω). With the lambda–omega sign convention the phase decreases,
    so ``omega`` is reported as −dφ/dt (positive, ≈ β A² for a plane wave).
    """
    p = params_from_config(params)
    grid = make_grid(p)
    ring = (np.hypot(grid.X, grid.Y) >= r_min) & (np.hypot(grid.X, grid.Y) <= r_max)
    if not ring.any():
        raise ValueError(f"spiral_diagnostics: no grid point with {r_min} <= r <= {r_max}")
    a2, rates = [], []
    previous = None
    for t, w, _ in iter_states(p):
        if t < t_from - 1e-12:
            continue
        z = (w[0] + 1j * w[1])[ring]
        a2.append(np.abs(z) ** 2)
        if previous is not None:
            rates.append(np.angle(z * np.conj(previous)) / p.save_interval)
        previous = z
    if len(rates) == 0:
        raise ValueError("spiral_diagnostics: need at least two saved times after t_from")
    a2 = np.asarray(a2)
    return {"a2": float(a2.mean()), "a2_std": float(a2.std()),
            "omega": float(-np.mean(rates)), "omega_std": float(np.std(rates))}

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

Modules: the settings live in :mod:`~eae.experiments.rd.simulation_params`, the grid,
physics and ETDRK4 coefficients in :mod:`~eae.experiments.rd.spectral`, the rotating-frame
scheme in :mod:`~eae.experiments.rd.rotating_etdrk4` and the scipy integrators in
:mod:`~eae.experiments.rd.scipy_rk`; this module keeps the step control, the save loops
and the public API, and re-exports every name of those modules it held before.
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

from eae.experiments.rd.rotating_etdrk4 import (  # noqa: F401 (re-exported)
    _SHIFT_PER_A0,
    _ComplexETDRK4,
    _hermite_basis,
    _hermite_weights,
    frame_amplitude,
)
from eae.experiments.rd.scipy_rk import (  # noqa: F401 (re-exported)
    _SCIPY_METHODS,
    _iter_scipy,
    _iter_scipy_dense,
    _run_solver,
    _scipy_rhs,
)
from eae.experiments.rd.simulation_params import (  # noqa: F401 (re-exported)
    METHODS,
    RDParams,
    _count_intervals,
    params_from_config,
)
from eae.experiments.rd.spectral import (  # noqa: F401 (re-exported)
    Grid,
    _phi_taylor,
    _project_hermitian,
    etdrk4_coefficients,
    initial_state,
    linear_operator,
    make_grid,
    reaction,
    rhs_physical,
)
from eae.support.progress import Progress

log = logging.getLogger("eae")


# ------------------------------------------------------------- ETDRK4, two real fields


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
                log.warning("rd_simulate: local error estimate %.2e > tolerance at the shortest step %g",
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


def simulate(params: Mapping[str, Any] | RDParams, progress_label: str = "rd_simulate") -> xr.Dataset:
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
    log.info("rd_simulate: %s n=%d, %d snapshots, %d rhs evaluations, %.2f s",
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
    log.info("rd_simulate: %s", asdict(p))
    ds = simulate(p)
    chunk = min(p.chunk_time, ds.sizes["time"])
    # Chunk by time through the encoding (no dask needed): one chunk holds chunk_time
    # whole snapshots, the unit every reader (dataset preparation, plots) slices by.
    for name in ("field", "field_dot"):
        ds[name].encoding["chunks"] = (chunk, p.n, p.n)
    record = make_record("rd_simulate", config=asdict(p), seeds={},
                         started=started)
    write_zarr(ds, out_path, provenance=record)
    log.info("rd_simulate: wrote %s", out_path)


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

"""Sampler validation: run Simmering on potentials whose Gibbs measure is known exactly.

This is the pipeline's self-check (stage ``validation``): every run measures
equipartition, moments against quadrature, second-order energy error and the
conservation of the extended energy H', writes them to a CSV and draws a histogram
of sampled positions over the exact density.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Callable

import numpy as np
import pandas as pd

from eae import sampler as simmering
from eae.runtime import tf

logger = logging.getLogger("eae")


@dataclasses.dataclass(frozen=True)
class ValidationSettings:
    """Sizes of the self-check (defaults take well under a minute on 2 CPU cores)."""

    n_particles: int = 1000
    n_steps: int = 20000
    burn_in: float = 0.2
    temperature: float = 0.5
    dt: float = 0.05
    chain_length: int = 10
    sy_order: int = 3
    tau: float = 20.0
    resample_every: int = 100
    seed: int = 0
    tolerance: float = 0.05

    @classmethod
    def from_dict(cls, cfg: dict) -> "ValidationSettings":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in cfg.items() if k in names})


def _config(s: ValidationSettings, **overrides) -> simmering.SimmeringConfig:
    base = dict(temperature=s.temperature, dt=s.dt, chain_length=s.chain_length,
                sy_order=s.sy_order, tau=s.tau, mass=1.0)
    base.update(overrides)
    return simmering.SimmeringConfig(**base)


def stiffnesses(n: int) -> np.ndarray:
    """Log-spaced spring constants in [0.5, 5]: distinct frequencies let the chain
    exchange energy between oscillators (identical ones would not equilibrate)."""
    return np.exp(np.linspace(np.log(0.5), np.log(5.0), n)).astype(np.float32)


def gibbs_moments(potential: Callable[[np.ndarray], np.ndarray], temperature: float,
                  powers=(1, 2, 4), lo=-4.0, hi=4.0, n=200001) -> dict[int, float]:
    """Exact moments of a 1-D Gibbs density exp(−U/T) by quadrature."""
    x = np.linspace(lo, hi, n)
    w = np.exp(-(potential(x) - potential(x).min()) / temperature)
    z = np.trapezoid(w, x)
    return {p: float(np.trapezoid(x**p * w, x) / z) for p in powers}


def double_well(x, height=1.0):
    """U(x) = h (x² − 1)²: two minima at ±1 separated by a barrier of height h."""
    return height * (x * x - 1.0) ** 2


def _row(potential, quantity, measured, exact, tolerance, absolute=False):
    err = abs(measured - exact) if absolute else abs(measured / exact - 1.0)
    return dict(potential=potential, quantity=quantity, measured=float(measured),
                exact=float(exact), error=float(err), tolerance=float(tolerance),
                passed=bool(err <= tolerance))


def check_harmonic(s: ValidationSettings) -> list[dict]:
    """Equipartition on a quadratic potential: ⟨T_kin⟩ = T and ⟨k x²⟩ = T."""
    k = tf.constant(stiffnesses(s.n_particles))
    x = tf.Variable(tf.zeros(s.n_particles))
    _, _, info, kx2 = simmering.sample(
        [x], lambda: 0.5 * tf.reduce_sum(k * x * x), _config(s), s.n_steps, s.seed,
        trace=lambda: tf.reduce_mean(k * x * x))
    start = int(s.burn_in * s.n_steps)
    t_kin = float(np.mean(info.kinetic_temperature.numpy()[start:]))
    h = info.conserved_energy.numpy()[start:]
    return [
        _row("harmonic", "mean T_kin / T", t_kin / s.temperature, 1.0, 0.03),
        _row("harmonic", "mean k x^2 / T", float(np.mean(kx2.numpy()[start:])) / s.temperature,
             1.0, s.tolerance),
        _row("harmonic", "H' range / (N_f T)", float(np.ptp(h)) / (s.n_particles * s.temperature),
             0.0, 0.01, absolute=True),
    ]


def sample_double_well(s: ValidationSettings, height: float = 1.0):
    """Samples of N independent double-well particles (one global thermostat).

    Velocities are redrawn every ``resample_every`` steps: a single global chain only
    fixes the total kinetic energy, and with many weakly coupled particles each one
    would otherwise keep the energy it started with (non-canonical marginals).
    """
    start_at = np.where(np.arange(s.n_particles) % 2 == 0, 1.0, -1.0).astype(np.float32)
    x = tf.Variable(start_at)
    _, _, info, xs = simmering.sample(
        [x], lambda: tf.reduce_sum(double_well(x, height)),
        _config(s, resample_every=s.resample_every), s.n_steps,
        s.seed + 1, trace=lambda: x)
    start = int(s.burn_in * s.n_steps)
    return info, xs.numpy()[start::10].ravel()


def check_double_well(s: ValidationSettings, height: float = 1.0):
    """Moments of a non-Gaussian density against quadrature; returns rows and samples."""
    info, samples = sample_double_well(s, height)
    exact = gibbs_moments(lambda x: double_well(x, height), s.temperature)
    start = int(s.burn_in * s.n_steps)
    t_kin = float(np.mean(info.kinetic_temperature.numpy()[start:]))
    rows = [
        _row("double_well", "mean T_kin / T", t_kin / s.temperature, 1.0, 0.03),
        _row("double_well", "<x^2>", float(np.mean(samples**2)), exact[2], s.tolerance),
        _row("double_well", "<x^4>", float(np.mean(samples**4)), exact[4], s.tolerance),
        _row("double_well", "<x>", float(np.mean(samples)), exact[1], s.tolerance, absolute=True),
    ]
    return rows, samples


def energy_error(s: ValidationSettings, dt: float, duration: float = 50.0) -> float:
    """Max |H(t) − H(0)| of the thermostat-free (NVE) integrator over ``duration``."""
    n = min(s.n_particles, 100)
    k = tf.constant(stiffnesses(n))
    x = tf.Variable(tf.ones(n))
    cfg = _config(s, chain_length=0, dt=dt)
    _, _, info, _ = simmering.sample(
        [x], lambda: tf.reduce_sum(0.5 * k * x * x + 0.1 * x**4), cfg,
        int(round(duration / dt)), s.seed)
    h = info.conserved_energy.numpy()
    return float(np.max(np.abs(h - h[0])))


def check_energy_order(s: ValidationSettings) -> list[dict]:
    """Second order: halving dt divides the NVE energy error by about 4."""
    coarse, fine = energy_error(s, 2 * s.dt), energy_error(s, s.dt)
    return [_row("anharmonic_nve", "energy error ratio dt/(dt/2)", coarse / fine, 4.0, 0.15)]


def run_validation(settings: ValidationSettings) -> tuple[pd.DataFrame, np.ndarray]:
    """All checks; returns the results table and the double-well samples (for the plot)."""
    rows = []
    rows += check_harmonic(settings)
    logger.info("validation: harmonic done")
    dw_rows, samples = check_double_well(settings)
    rows += dw_rows
    logger.info("validation: double well done")
    rows += check_energy_order(settings)
    logger.info("validation: energy order done")
    table = pd.DataFrame(rows)
    table.insert(0, "temperature", settings.temperature)
    return table, samples


def plot_double_well(samples: np.ndarray, temperature: float, path, height: float = 1.0):
    """Histogram of sampled positions over the exact Gibbs density."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.linspace(-2.5, 2.5, 2001)
    w = np.exp(-double_well(x, height) / temperature)
    w /= np.trapezoid(w, x)
    fig, ax = plt.subplots(figsize=(5, 3.5))
    ax.hist(samples, bins=120, range=(-2.5, 2.5), density=True, alpha=0.6, label="Simmering")
    ax.plot(x, w, "k-", lw=1.5, label=r"exact $e^{-U/T}/Z$")
    ax.set_xlabel("x")
    ax.set_ylabel("density")
    ax.set_title(f"Double well, T = {temperature:g}")
    ax.legend()
    fig.tight_layout()
    from eae.io import save_figure

    save_figure(fig, path, dpi=120)


def validation_stage(cfg: dict, csv_path: str, figure_path: str) -> pd.DataFrame:
    """Stage entry point: run the checks, write the CSV and figure; fail loudly if a
    check misses its tolerance (the pipeline should not train with a broken sampler)."""
    from eae.io import write_csv_atomic
    from eae.provenance import make_record, now_iso, record_outputs

    started = now_iso()
    settings = ValidationSettings.from_dict(cfg)
    table, samples = run_validation(settings)
    write_csv_atomic(table, csv_path)
    plot_double_well(samples, settings.temperature, figure_path)
    record = make_record("validation", config=cfg, seeds={"seed": settings.seed}, started=started)
    record_outputs(record, [csv_path, figure_path])
    logger.info("validation results:\n%s", table.to_string(index=False))
    failed = table[~table["passed"]]
    if cfg.get("fail_on_error", True) and len(failed):
        raise RuntimeError("Sampler validation failed:\n" + failed.to_string(index=False))
    return table

"""Settings of the lambda–omega simulation (the ``rd.simulation`` config section).

Split out of :mod:`eae.experiments.rd.simulate` (which re-exports every name here) so
that the numerical modules (:mod:`~eae.experiments.rd.spectral`,
:mod:`~eae.experiments.rd.rotating_etdrk4`, :mod:`~eae.experiments.rd.scipy_rk`) can take
an :class:`RDParams` without importing the stage module that drives them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Mapping

import numpy as np

from eae.support.settings import settings_from

METHODS = ("etdrk4", "rk45", "dop853")


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

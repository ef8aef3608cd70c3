"""Is the encoder ensemble a proper distribution, or does it diffuse without bound?

exp(−L/T) is normalisable only when the loss confines every direction of parameter
space on the scale of T. An encoder has many directions the loss hardly sees (weights
into saturated or dead units, rescalings a decoder can undo); when N_f·T/2 exceeds any
loss they are free, and the encoder random-walks away: ‖θ − θ₀‖ grows like √steps
(measured on the faces model at T = 1e-4: member latent sd 2.5e6, every reconstruction
one flat grey image). An ensemble of a proper density stops moving away from where it
started, so the log–log slope of ‖θ − θ₀‖ against the step count over the last half of
a phase is ≈ 0; free diffusion gives 0.5 and drift 1. A phase is flagged improper when
the slope of any chain exceeds :data:`IMPROPER_SLOPE`. The slope cannot tell free
diffusion from an encoder still drifting downhill (measured on the tiny test trainer:
0.82–0.85 while a cold run still descends, 0.97 at T = 1); both mean the members are not
draws of a stationary ensemble, which is what the flag says.

θ₀ is the encoder's initial weights and the step count is global (training continues
into sampling), so training and ensemble phases are measured on one scale.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np

__all__ = ["IMPROPER_SLOPE", "WELLPOSED_COLUMNS", "displacement_slope", "training_slopes",
           "ensemble_slopes", "wellposed_columns", "store_wellposed_columns", "slope_attrs"]

#: log–log slope of ‖θ − θ₀‖ against steps above which a phase is improper
IMPROPER_SLOPE = 0.25
#: the columns :func:`wellposed_columns` adds to a result's row
WELLPOSED_COLUMNS = ["θ growth train", "θ growth ensemble", "improper"]


def displacement_slope(steps: Sequence[float], displacement: Sequence[float],
                       fraction: float = 0.5) -> float:
    """Least-squares slope of log ‖θ − θ₀‖ against log steps over the last ``fraction``
    of the points (NaN with fewer than 3 usable points)."""
    steps = np.asarray(steps, np.float64)
    disp = np.asarray(displacement, np.float64)
    n = len(steps)
    tail = slice(n - max(1, int(math.ceil(n * fraction))), n)
    x, y = steps[tail], disp[tail]
    ok = (x > 0) & (y > 0) & np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 3 or np.ptp(np.log(x[ok])) == 0:
        return math.nan
    return float(np.polyfit(np.log(x[ok]), np.log(y[ok]), 1)[0])


def training_slopes(history) -> list[float]:
    """Per chain: the slope over the last half of a training history's
    ``param_displacement_c*`` columns against its ``steps``."""
    cols = sorted(c for c in history.columns if c.startswith("param_displacement_c"))
    return [displacement_slope(history["steps"], history[c]) for c in cols]


def ensemble_slopes(ds) -> list[float]:
    """Per chain: the slope over the last half of an ensemble store's draws
    (``param_displacement`` and ``step``, dims (chain, draw))."""
    if "param_displacement" not in ds or "step" not in ds:
        return []
    disp = np.asarray(ds["param_displacement"].values, np.float64)
    steps = np.asarray(ds["step"].values, np.float64)
    return [displacement_slope(steps[c], disp[c]) for c in range(disp.shape[0])]


def _worst(slopes: Sequence[float]) -> float:
    finite = [s for s in slopes if np.isfinite(s)]
    return max(finite) if finite else math.nan


def slope_attrs(prefix: str, slopes: Sequence[float]) -> dict:
    """Store attributes ``<prefix>displacement_slope`` (worst chain) and the per-chain list."""
    return {f"{prefix}displacement_slope": _worst(slopes),
            f"{prefix}displacement_slope_chains": [float(s) for s in slopes]}


def wellposed_columns(train_slope: float, ensemble_slope: float) -> dict:
    """Table columns: the worst chain's slope per phase and a flag naming the improper
    phases ("ok" when neither is; "not measured" when neither was)."""
    cols = {"θ growth train": train_slope, "θ growth ensemble": ensemble_slope}
    bad = [name for name, s in (("train", train_slope), ("ensemble", ensemble_slope))
           if np.isfinite(s) and s > IMPROPER_SLOPE]
    if bad:
        cols["improper"] = "IMPROPER: " + ", ".join(bad)
    elif np.isfinite(train_slope) or np.isfinite(ensemble_slope):
        cols["improper"] = "ok"
    else:
        cols["improper"] = "not measured"
    return cols


def store_wellposed_columns(attrs: Mapping) -> dict:
    """:func:`wellposed_columns` from an ensemble store's attributes."""
    def num(key):
        try:
            return float(attrs.get(key, math.nan))
        except (TypeError, ValueError):
            return math.nan

    return wellposed_columns(num("train_displacement_slope"), num("ensemble_displacement_slope"))

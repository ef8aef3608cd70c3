"""eae.wellposed: telling a proper encoder ensemble from one that diffuses without bound."""

import math

import numpy as np
import pandas as pd
import pytest

from eae import wellposed as W
from eae.temperature import TEMPERATURE_COLUMNS


def _walk(n_steps, n_dims, confine, seed=0):
    """‖x_t‖ of an Ornstein–Uhlenbeck walk (confine > 0) or a free random walk (0)."""
    rng = np.random.default_rng(seed)
    x = np.zeros(n_dims)
    out = []
    for _ in range(n_steps):
        x = (1 - confine) * x + rng.normal(size=n_dims)
        out.append(np.linalg.norm(x))
    return np.arange(1, n_steps + 1), np.array(out)


def test_free_diffusion_grows_like_root_steps_and_is_flagged():
    steps, disp = _walk(4000, 200, confine=0.0)
    slope = W.displacement_slope(steps, disp)
    assert slope == pytest.approx(0.5, abs=0.05) and slope > W.IMPROPER_SLOPE


def test_a_confined_walk_stops_growing():
    steps, disp = _walk(4000, 200, confine=0.05)
    assert abs(W.displacement_slope(steps, disp)) < 0.05


def test_drift_has_slope_one_and_short_series_give_nan():
    steps = np.arange(1, 101)
    assert W.displacement_slope(steps, 3.0 * steps) == pytest.approx(1.0)
    assert math.isnan(W.displacement_slope([1, 2], [1.0, 2.0]))


def test_columns_name_the_improper_phase():
    assert W.wellposed_columns(0.02, 0.49)["improper"] == "IMPROPER: ensemble"
    assert W.wellposed_columns(0.3, 0.49)["improper"] == "IMPROPER: train, ensemble"
    assert W.wellposed_columns(0.1, math.nan)["improper"] == "ok"
    assert W.store_wellposed_columns({})["improper"] == "not measured"
    assert TEMPERATURE_COLUMNS[-len(W.WELLPOSED_COLUMNS):] == W.WELLPOSED_COLUMNS


def test_training_slopes_read_the_history_per_chain():
    steps, free = _walk(400, 100, confine=0.0, seed=1)
    _, held = _walk(400, 100, confine=0.05, seed=2)
    history = pd.DataFrame({"steps": steps, "param_displacement_c0": held,
                            "param_displacement_c1": free})
    slopes = W.training_slopes(history)
    assert slopes[0] < W.IMPROPER_SLOPE < slopes[1]

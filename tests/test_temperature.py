"""Configurational temperature (eae.temperature) and its rows in the sampler validation."""

import numpy as np
import tensorflow as tf

from eae.temperature import configurational_temperature, gradient_and_curvature
from eae.validation import ValidationSettings, check_double_well, check_harmonic


def test_gradient_and_curvature_are_exact_on_a_diagonal_quadratic():
    k = np.linspace(0.5, 5.0, 50).astype(np.float32)
    x = tf.Variable(np.random.default_rng(0).normal(size=50).astype(np.float32))
    grad_sq, curvature = gradient_and_curvature([x], lambda: 0.5 * tf.reduce_sum(k * x * x))
    np.testing.assert_allclose(grad_sq.numpy(), np.sum((k * x.numpy()) ** 2), rtol=1e-5)
    np.testing.assert_allclose(curvature.numpy(), k.sum(), rtol=1e-5)  # Rademacher: exact


def test_hutchinson_trace_is_unbiased_on_a_dense_hessian_and_per_chain():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(3, 20, 20)).astype(np.float32)
    h = np.einsum("cij,ckj->cik", a, a) + np.eye(20, dtype=np.float32)  # [C, 20, 20] SPD
    x = tf.Variable(rng.normal(size=(3, 20)).astype(np.float32))
    potential = lambda: 0.5 * tf.einsum("ci,cij,cj->c", x, h, x)  # noqa: E731
    _, curvature = gradient_and_curvature([x], potential, n_probes=4000, chains=3)
    exact = np.trace(h, axis1=1, axis2=2)
    np.testing.assert_allclose(curvature.numpy(), exact, rtol=0.05)
    assert not np.allclose(exact, exact[0])  # the chains really differ


def test_ratio_of_means():
    assert configurational_temperature([1.0, 3.0], [2.0, 2.0]) == 1.0


def test_validation_reports_configurational_temperature_for_both_thermostats():
    s = ValidationSettings(n_steps=10000)
    for thermostat in ("nhc", "adaptive"):
        rows = check_harmonic(s, thermostat) + check_double_well(s, thermostat=thermostat)[0]
        conf = [r for r in rows if r["quantity"] == "T_conf / T"]
        assert len(conf) == 2
        for row in conf:
            assert row["passed"], row

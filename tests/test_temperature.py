"""Configurational temperature (eae.temperature) and its rows in the sampler validation."""

import numpy as np
import tensorflow as tf

from eae.temperature import (check_temperatures, configurational_temperature,
                             gradient_and_curvature, split_batch_terms, temperature_columns,
                             training_temperatures)
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


def test_split_batch_terms_are_unbiased_where_one_batch_squared_is_not():
    # L(x) = mean_i ½ k (x − d_i)²: each batch's gradient is k (x − mean of its d), so
    # |∇L_a|² carries the batch-mean variance while ∇L_a·∇L_b does not
    rng = np.random.default_rng(2)
    k = np.linspace(0.5, 2.0, 8).astype(np.float32)
    data = rng.normal(size=(4096, 8)).astype(np.float32)
    x = tf.Variable(np.full(8, 0.05, np.float32))
    exact = np.sum((k * (x.numpy() - data.mean(0))) ** 2)
    products, squares, traces = [], [], []
    for trial in range(400):
        idx = rng.choice(len(data), 32, replace=False)
        a, b = data[idx[:16]], data[idx[16:]]
        pot = lambda d: lambda: 0.5 * tf.reduce_mean(tf.reduce_sum(k * (x - d) ** 2, -1))  # noqa: E731
        product, trace = split_batch_terms([x], pot(a), pot(b), seed=(0, trial))
        sq, _ = gradient_and_curvature([x], pot(a))
        products.append(product.numpy()), squares.append(sq.numpy()), traces.append(trace.numpy())
    np.testing.assert_allclose(traces, k.sum(), rtol=1e-5)
    se = np.std(products) / np.sqrt(len(products))
    assert abs(np.mean(products) - exact) < 4 * se
    noise = np.sum(k ** 2 * data.var(0)) / 16  # the bias of one batch's |∇L_a|²
    assert np.mean(squares) > exact + 0.5 * noise


def test_check_temperatures_flags_each_band_per_chain():
    ok = check_temperatures([1.0, 1.02], [2.0, 2.1], [2.0, 2.0])
    assert not ok.flagged and abs(ok.configurational - 1.025) < 1e-12
    hot = check_temperatures([1.0, 1.3], [2.0, 2.0], [2.0, 2.0])
    assert hot.flagged and "chain(s) [1]" in hot.reasons[0] and "T_kin" in hot.reasons[0]
    cold_conf = check_temperatures([1.0, 1.0], [2.0, 1.0], [2.0, 2.0])
    assert cold_conf.flagged and "T_conf" in cold_conf.reasons[0]
    unmeasured = check_temperatures([1.0], [], [])
    assert not unmeasured.flagged and np.isnan(unmeasured.configurational)
    cols = temperature_columns(hot, None)
    assert cols["T flag"] == "FLAGGED: train" and np.isnan(cols["T_kin/T ensemble"])


def test_training_temperatures_pool_the_last_tenth_of_the_history():
    import pandas as pd

    n = 50
    hist = pd.DataFrame({"kinetic_over_target_c0": np.r_[np.full(45, 5.0), np.full(5, 1.0)],
                         "grad_sq_over_T_c0": np.r_[np.full(45, 9.0), np.full(5, 2.0)],
                         "curvature_c0": np.full(n, 2.0)})
    check = training_temperatures(hist)
    assert check.kinetic == 1.0 and check.configurational == 1.0 and not check.flagged


def test_remedy_names_the_temperature_that_is_out():
    from eae.temperature import TemperatureCheck, remedy

    def check(kin, conf):
        return TemperatureCheck(kin, conf, (kin,), (conf,), ("out",))

    assert "thermostat: adaptive" in remedy("nhc", 30, check(3.9, 4.0))
    assert "T_conf high" in remedy("adaptive", 1, check(1.0, 500.0))
    low = remedy("adaptive", 1, check(1.0, 0.4))
    assert "T_conf low" in low and "burn_in" in low and "T_kin off" not in low
    hot = remedy("adaptive", 1, check(1.5, 1.0))
    assert "T_kin off" in hot and "batch_size" in hot and "T_conf" not in hot

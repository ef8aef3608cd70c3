"""Statistical and unit tests of the Simmering (Nosé–Hoover chain) sampler."""

import numpy as np
import pytest
import tensorflow as tf

from eae import sampler as S
from eae.validation import ValidationSettings, check_double_well, energy_error, stiffnesses

T = 0.5


def harmonic_run(n_steps=20000, chain_length=10, sy_order=3, seed=0, **overrides):
    k = tf.constant(stiffnesses(1000))
    x = tf.Variable(tf.zeros(1000))
    cfg = S.SimmeringConfig(temperature=T, dt=0.05, chain_length=chain_length,
                            sy_order=sy_order, **overrides)
    _, _, info, kx2 = S.sample([x], lambda: 0.5 * tf.reduce_sum(k * x * x), cfg, n_steps,
                            seed, trace=lambda: tf.reduce_mean(k * x * x))
    return info, kx2.numpy()


@pytest.mark.parametrize("sy_order,chain_length", [(1, 3), (3, 10), (5, 30)])
def test_equipartition_on_quadratic_potential(sy_order, chain_length):
    info, kx2 = harmonic_run(chain_length=chain_length, sy_order=sy_order)
    burn = 4000
    t_kin = info.kinetic_temperature.numpy()[burn:].mean()
    assert abs(t_kin / T - 1) < 0.03
    # position variance per oscillator is T/k, i.e. <k x^2> = T
    assert abs(kx2[burn:].mean() / T - 1) < 0.05


def test_energy_error_is_second_order_without_thermostat():
    s = ValidationSettings()
    coarse, fine = energy_error(s, 0.1), energy_error(s, 0.05)
    assert 3.5 < coarse / fine < 4.5


def test_conserved_energy_stays_put_with_thermostat():
    info, _ = harmonic_run(n_steps=10000)
    h = info.conserved_energy.numpy()
    # H' scale is N_f T = 500; the drift over 10 000 steps is a tiny fraction of it
    assert abs(h[-1] - h[0]) / (1000 * T) < 1e-3
    assert np.ptp(h) / (1000 * T) < 1e-2


def test_double_well_matches_exact_moments():
    rows, samples = check_double_well(ValidationSettings(n_steps=10000))
    for row in rows:
        assert row["passed"], row
    assert samples.min() < -1 and samples.max() > 1  # both wells visited


@pytest.mark.parametrize("schedule", ["linear", "geometric"])
def test_annealing_reaches_final_temperature(schedule):
    k = tf.constant(stiffnesses(500))
    x = tf.Variable(tf.zeros(500))
    cfg = S.SimmeringConfig(temperature=1.0, final_temperature=0.2, schedule=schedule,
                            anneal_steps=6000, dt=0.05, chain_length=10)
    _, _, info, _ = S.sample([x], lambda: 0.5 * tf.reduce_sum(k * x * x), cfg, 12000, 0)
    target = info.temperature.numpy()
    assert target[0] == pytest.approx(1.0)
    assert target[-1] == pytest.approx(0.2)
    if schedule == "geometric":  # halfway in log space
        assert target[3000] == pytest.approx(np.sqrt(1.0 * 0.2), rel=1e-3)
    else:
        assert target[3000] == pytest.approx(0.6, rel=1e-3)
    t_kin = info.kinetic_temperature.numpy()[-3000:].mean()
    assert abs(t_kin / 0.2 - 1) < 0.05


def test_same_seed_same_trajectory_and_different_seed_differs():
    runs = [harmonic_run(n_steps=500, seed=s)[1] for s in (3, 3, 4)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])


def test_initial_velocities_follow_temperature_over_mass():
    x = tf.Variable(tf.zeros(200000))
    cfg = S.SimmeringConfig(temperature=0.3, mass=2.0)
    sampler = S.Simmering([x], cfg)
    state, _ = sampler.init(S.potential_value_and_grad([x], lambda: tf.reduce_sum(x)), 1)
    velocities = sampler.momenta(state)[0].numpy() / cfg.mass
    assert velocities.var() == pytest.approx(0.3 / 2.0, rel=0.02)


def test_adjacent_seeds_draw_unrelated_velocities_for_every_tensor():
    # before seeds came from fold_in, tensor i of seed s drew what tensor 0 of seed s+i did
    xs = [tf.Variable(tf.zeros(1000)) for _ in range(3)]
    cfg = S.SimmeringConfig(temperature=1.0)
    draws = {}
    for seed in (0, 1):
        sampler = S.Simmering(xs, cfg)
        state, _ = sampler.init(S.potential_value_and_grad(xs, lambda: tf.add_n([tf.reduce_sum(x) for x in xs])), seed)
        draws[seed] = [p.numpy() for p in sampler.momenta(state)]
    pairs = [(a, b) for a in draws[0] for b in draws[1]] + [(draws[0][0], draws[0][1])]
    assert max(abs(np.corrcoef(a, b)[0, 1]) for a, b in pairs) < 0.15


def test_velocity_resampling_happens_on_schedule():
    x = tf.Variable(tf.zeros(10000))
    cfg = S.SimmeringConfig(temperature=1.0, dt=0.01, chain_length=0, resample_every=5)
    vg = S.potential_value_and_grad([x], lambda: 0.0 * tf.reduce_sum(x))
    sampler = S.Simmering([x], cfg)
    state, _ = sampler.init(vg, 0)
    momenta = []
    for _ in range(6):
        state, _, _ = sampler.step(state, vg)
        momenta.append(sampler.momenta(state)[0].numpy())
    # free particles keep their momenta between resamplings; step 5 -> 6 redraws
    np.testing.assert_allclose(momenta[0], momenta[4])
    assert not np.allclose(momenta[4], momenta[5])
    assert momenta[5].var() == pytest.approx(1.0, rel=0.05)


def test_step_calls_value_and_grad_once_and_returns_aux():
    x = tf.Variable(tf.ones(3))
    calls = []

    def vg():
        calls.append(1)
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(x * x)
        return loss, tape.gradient(loss, [x]), {"extra": 2 * x}

    cfg = S.SimmeringConfig(temperature=0.1, dt=0.01)
    sampler = S.Simmering([x], cfg)
    state, _ = sampler.init(vg, 0)
    calls.clear()
    state, info, aux = sampler.step(state, vg)
    assert len(calls) == 1
    np.testing.assert_allclose(aux["extra"].numpy(), 2 * x.numpy())
    assert float(info.loss) == pytest.approx(float(tf.reduce_sum(x * x)), rel=1e-6)


@pytest.mark.parametrize("bad", [dict(temperature=-1.0), dict(sy_order=2), dict(dt=0.0),
                                 dict(schedule="cosine"), dict(chain_length=-1)])
def test_config_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="SimmeringConfig"):
        S.SimmeringConfig(**bad)


def test_suzuki_yoshida_weights_sum_to_one():
    for weights in S.SUZUKI_YOSHIDA.values():
        assert sum(weights) == pytest.approx(1.0)


def test_sampled_mlp_loss_sits_above_adam_optimum_and_falls_with_temperature():
    import keras

    rng = np.random.default_rng(0)
    x_data = rng.uniform(-2, 2, size=(256, 1)).astype("float32")
    y_data = (np.sin(2 * x_data) + 0.05 * rng.normal(size=x_data.shape)).astype("float32")
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(16, activation="tanh"),
                              keras.layers.Dense(1)])
    loss_fn = lambda: tf.reduce_mean(tf.square(model(x_data) - y_data))  # noqa: E731
    opt = keras.optimizers.Adam(0.01)

    @tf.function
    def fit():
        with tf.GradientTape() as tape:
            loss = loss_fn()
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply_gradients(zip(grads, model.trainable_variables))

    for _ in range(3000):
        fit()
    optimum = float(loss_fn())
    start = [v.numpy() for v in model.trainable_variables]

    def mean_sampled_loss(temperature):
        for v, w in zip(model.trainable_variables, start):
            v.assign(w)
        cfg = S.SimmeringConfig(temperature=temperature, dt=0.01, chain_length=10,
                                resample_every=50)
        _, _, info, _ = S.sample(model.trainable_variables, loss_fn, cfg, 4000, seed=1)
        return info.loss.numpy()[1000:].mean()

    hot, cold = mean_sampled_loss(1e-3), mean_sampled_loss(1e-4)
    assert hot > cold > optimum


@pytest.mark.parametrize("thermostat", ["nhc", "adaptive"])
def test_state_arrays_restore_the_chain_exactly(thermostat):
    """state_arrays/restore carry the whole sampler state, momenta included: a chain
    restored into a fresh sampler continues step for step as the original does."""
    def make():
        x = tf.Variable(np.linspace(-1, 1, 6).astype(np.float32))
        config = S.SimmeringConfig(temperature=T, dt=0.05, thermostat=thermostat)
        sampler = S.Simmering([x], config)
        return x, sampler, S.potential_value_and_grad([x], lambda: tf.reduce_sum(x ** 4))

    x, sampler, vg = make()
    state, _ = sampler.init(vg, seed=[3, 1])
    for _ in range(7):
        state, _, _ = sampler.step(state, vg)
    arrays = sampler.state_arrays(state)
    saved_x = x.numpy()
    for _ in range(5):
        state, _, _ = sampler.step(state, vg)
    x2, sampler2, vg2 = make()
    x2.assign(saved_x)
    state2 = sampler2.restore(arrays)
    for _ in range(5):
        state2, _, _ = sampler2.step(state2, vg2)
    np.testing.assert_array_equal(x2.numpy(), x.numpy())
    np.testing.assert_array_equal(sampler2.momenta(state2)[0].numpy(), sampler.momenta(state)[0].numpy())
    broken = {k: v for k, v in arrays.items() if k != "displacement/0"}
    with pytest.raises(ValueError, match="displacement/0"):
        sampler2.restore(broken)
    with pytest.raises(ValueError, match="lacks"):
        sampler2.restore({k: v for k, v in arrays.items() if k != "xi"})


def test_settings_reject_unknown_keys_naming_the_section():
    from eae.settings import UnknownSettingError

    with pytest.raises(UnknownSettingError, match=r"rd.eae.sampler: unknown setting\(s\) \['temprature'\]"):
        S.SimmeringConfig.from_dict({"temprature": 1e-6}, "rd.eae.sampler")
    assert S.SimmeringConfig.from_dict({"temperature": 1e-6}).temperature == 1e-6

"""Several encoder chains: stacked weights, per-chain thermostats, chain-major batches."""

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from eae.chains import ChainEncoder, chain_mean, chain_seed
from eae.models import conv_encoder, mlp_decoder, mlp_encoder
from eae.sampler import Simmering, SimmeringConfig, potential_value_and_grad
from eae.train import EAETrainer, TrainSettings, batch_indices
from helpers import TINY_DATA as DATA, tiny_trainer


def test_chain_zero_keeps_the_base_seed_and_others_differ():
    assert chain_seed(7, 0) == 7
    assert len({chain_seed(7, c) for c in range(5)}) == 5


@pytest.mark.parametrize("kind", ["mlp", "conv"])
def test_stacked_forward_equals_each_member(kind):
    if kind == "mlp":
        build = lambda s: mlp_encoder(12, (16, 8), 3, seed=s)  # noqa: E731
        x = np.random.default_rng(0).normal(size=(3, 5, 12)).astype(np.float32)
    else:
        build = lambda s: conv_encoder((8, 8, 1), (4,), 3, 5, seed=s)  # noqa: E731
        x = np.random.default_rng(0).normal(size=(3, 5, 8, 8, 1)).astype(np.float32)
    members = [build(chain_seed(1, c)) for c in range(3)]
    enc = ChainEncoder.build(build, 3, seed=1)
    assert enc.batched == (kind == "mlp")
    expected = np.stack([m(x[c]).numpy() for c, m in enumerate(members)])
    np.testing.assert_allclose(enc.forward(tf.constant(x)).numpy(), expected, rtol=1e-5, atol=1e-6)
    # chain-major call and the shared-input form agree with the members too
    flat = enc(tf.constant(x.reshape((15,) + x.shape[2:]))).numpy().reshape(expected.shape)
    np.testing.assert_allclose(flat, expected, rtol=1e-5, atol=1e-6)
    shared = enc.encode_each(tf.constant(x[0])).numpy()
    np.testing.assert_allclose(shared[2], members[2](x[0]).numpy(), rtol=1e-5, atol=1e-6)
    # member() exports one chain as a plain Keras model
    np.testing.assert_allclose(enc.member(1)(x[1]).numpy(), expected[1], rtol=1e-5, atol=1e-6)


def test_chain_mean_groups_rows_by_chain():
    values = tf.constant(np.repeat([[1.0], [2.0], [4.0]], 4, axis=0) * np.ones((12, 3)))
    np.testing.assert_allclose(chain_mean(values, 3).numpy(), [1.0, 2.0, 4.0])


def test_each_chain_has_its_own_thermostat():
    """3 chains × 500 oscillators of different stiffness: every chain equilibrates to T."""
    k = tf.constant(np.array([[0.5], [1.0], [4.0]]) * np.ones((3, 500)), tf.float32)
    x = tf.Variable(tf.random.stateless_normal([3, 500], [1, 2]))
    cfg = SimmeringConfig(temperature=0.3, dt=0.05, chain_length=5, sy_order=3)
    sampler = Simmering([x], cfg, chains=3)
    vg = potential_value_and_grad([x], lambda: 0.5 * tf.reduce_sum(k * x * x, axis=1))
    state, _ = sampler.init(vg, seed=4)
    assert state.ke2.shape == (3,) and state.xi.shape == (5, 3)

    @tf.function
    def run(state, n):
        t_kin = tf.TensorArray(tf.float64, size=n)
        h = tf.TensorArray(tf.float64, size=n)
        for i in tf.range(n):
            state, info, _ = sampler.step(state, vg)
            t_kin = t_kin.write(i, info.kinetic_temperature)
            h = h.write(i, info.conserved_energy)
        return state, t_kin.stack(), h.stack()

    state, t_kin, h = run(state, 4000)
    t_kin, h = t_kin.numpy(), h.numpy()
    np.testing.assert_allclose(t_kin[1000:].mean(axis=0) / 0.3, 1.0, atol=0.03)
    # the extended energy is conserved per chain
    assert np.all(np.ptp(h[1000:], axis=0) / (500 * 0.3) < 1e-2)
    # the potential energy per chain follows equipartition too
    pot = 0.5 * np.sum(k.numpy() * x.numpy() ** 2, axis=1) / 500
    assert np.all(np.abs(pot / (0.5 * 0.3) - 1) < 0.25)


def test_sampler_rejects_variables_without_a_chain_axis():
    with pytest.raises(ValueError, match="leading chain axis"):
        Simmering([tf.Variable(tf.zeros([4, 2]))], SimmeringConfig(), chains=3)


def make_chain_trainer(chains, updates=3, steps=5, **settings):
    return tiny_trainer(updates, steps, chains=chains, **settings)


def test_chains_get_their_own_minibatches():
    trainer = make_chain_trainer(3)
    idx = trainer.indices_for(4, 2).numpy()
    assert idx.shape == (2, 3, 32)
    np.testing.assert_array_equal(idx[:, 0], batch_indices(trainer.n_train, 32, 0, 4, 2))
    assert not np.array_equal(idx[:, 0], idx[:, 1])


def test_several_chains_train_together(tmp_path, caplog):
    # R̂ of a 5-step round may fall below 1, but its bulk ESS cannot exceed 3 × 5
    trainer = make_chain_trainer(3, ess_min_round=100.0)
    with caplog.at_level("WARNING", logger="eae"):
        history = trainer.fit(tmp_path)
    assert len(history) == 3
    for col in ("rhat_loss", "ess_bulk_loss", "ess_tail_loss", "iat_loss", "val_loss"):
        assert np.isfinite(history[col]).all(), col
    assert "chains not converged" in caplog.text and "train.ess_min_round" in caplog.text
    assert "3 of 3 decoder updates in this run ended with unconverged chains" in caplog.text
    w = trainer.encoder.variables[0].numpy()
    assert w.shape[0] == 3 and not np.allclose(w[0], w[1])
    state = trainer.state
    assert state.loss.shape == (3,) and state.xi.shape == (5, 3)


def test_unconverged_round_warnings_are_rate_limited(tmp_path, caplog):
    trainer = make_chain_trainer(2, updates=20, rhat_max=1.0001, ess_min_round=1e9)
    with caplog.at_level("WARNING", logger="eae"):
        trainer.fit(tmp_path)
    per_round = [r for r in caplog.records if "within the round" in r.getMessage()]
    assert len(per_round) == 10  # one per tenth of the 20 updates, every round flagged
    assert "20 of 20 decoder updates" in caplog.text


def test_one_chain_of_a_chain_encoder_is_the_single_chain_run(tmp_path):
    """A ChainEncoder of one chain and a plain Keras encoder train identically."""
    a = make_chain_trainer(1)
    b = EAETrainer(mlp_encoder(16, (32,), 4, seed=0), mlp_decoder(4, (32,), 16, seed=1), [DATA],
                   a.sampler_config, a.settings, val_arrays=[DATA[:50]])
    ha, hb = a.fit(tmp_path / "a"), b.fit(tmp_path / "b")
    pd.testing.assert_series_equal(ha["loss_mean"], hb["loss_mean"])


def test_resume_with_chains_is_exact(tmp_path):
    whole = make_chain_trainer(2, updates=4)
    whole.fit(tmp_path / "whole")
    part = make_chain_trainer(2, updates=4)
    part.fit(tmp_path / "part", stop_after=2)
    resumed = make_chain_trainer(2, updates=4)
    resumed.fit(tmp_path / "part")
    for a, b in zip(whole.encoder.variables + whole.decoder.weights,
                    resumed.encoder.variables + resumed.decoder.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_annealing_runs_across_decoder_updates():
    from eae.train import annealed_sampler_config

    cfg = SimmeringConfig(temperature=1e-5, final_temperature=1e-7, schedule="geometric")
    settings = TrainSettings(decoder_updates=10, encoder_steps=7)
    assert annealed_sampler_config(cfg, settings, 7).anneal_steps == 70
    half = TrainSettings(decoder_updates=10, encoder_steps=7, anneal_updates=5)
    assert annealed_sampler_config(cfg, half, 7).anneal_steps == 35
    constant = SimmeringConfig(temperature=1e-5)
    assert annealed_sampler_config(constant, settings, 7) == constant
    # the logged T is the last step's of each round: steps 4, 9, 14, 19 of 20
    t = make_annealed_history()
    np.testing.assert_allclose(t, 1e-5 * 1e-2 ** (np.array([4, 9, 14, 19]) / 20), rtol=1e-9)


def make_annealed_history():
    build = lambda s: mlp_encoder(16, (32,), 4, seed=s)  # noqa: E731
    trainer = EAETrainer(
        ChainEncoder.build(build, 2, seed=0), mlp_decoder(4, (32,), 16, seed=1), [DATA],
        SimmeringConfig(temperature=1e-5, final_temperature=1e-7, schedule="geometric",
                        dt=0.2, chain_length=5, sy_order=1),
        TrainSettings(decoder_updates=4, encoder_steps=5, batch_size=32, chains=2, log_every_s=0))
    rows = [trainer.run_update() for _ in range(4)]
    return np.array([r["temperature"] for r in rows])

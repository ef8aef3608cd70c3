"""EAE trainer (Algorithm 1): one pass per step, checkpoints, resume, divergence."""

import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pandas as pd
import pytest
import tensorflow as tf

from eae.sampler import SimmeringConfig
from eae.train import EAETrainer, TrainingDiverged, TrainSettings, batch_indices
from helpers import TINY_DATA, tiny_trainer

DATA = TINY_DATA


def make_trainer(updates=4, steps=10, temperature=1e-6, dt=0.2, batch_size=32, **settings):
    return tiny_trainer(updates, steps, temperature, dt, batch_size, **settings)


def weights(trainer):
    return [v.numpy() for v in trainer.encoder.weights + trainer.decoder.weights]


def test_batches_are_a_pure_function_of_the_step():
    whole = batch_indices(100, 10, seed=3, first_step=0, n_steps=25)
    part = batch_indices(100, 10, seed=3, first_step=13, n_steps=12)
    np.testing.assert_array_equal(whole[13:], part)
    # every epoch is a permutation: each index once per 10 steps
    assert sorted(whole[:10].ravel()) == list(range(100))
    assert not np.array_equal(whole[:10], whole[10:20])


def test_a_partial_last_batch_wraps_into_the_next_permutation():
    # 10 samples at batch 4: ⌈10/4⌉ = 3 steps per epoch; step 2 ends epoch 0 with two
    # samples and starts epoch 1 with two, so every batch has 4 samples
    idx = batch_indices(10, 4, seed=5, first_step=0, n_steps=5)
    assert idx.shape == (5, 4)
    stream = idx.ravel()
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:20]) == list(range(10))
    np.testing.assert_array_equal(batch_indices(10, 4, seed=5, first_step=3, n_steps=2), idx[3:])
    assert TrainSettings(encoder_steps=None, encoder_epochs=2, batch_size=32).steps_per_update(50_000) == 3126
    assert TrainSettings(encoder_steps=None, encoder_epochs=1, batch_size=32).steps_per_update(70) == 3


def test_one_forward_backward_per_inner_step():
    calls = []

    def counting_loss(encoder, decoder, batch):
        tf.py_function(lambda: calls.append(1) or 0, [], tf.int32)
        x = batch[0]
        return tf.reduce_mean(tf.square(decoder(encoder(x)) - x))

    trainer = make_trainer(steps=7)
    trainer.loss_fn = counting_loss
    trainer.initialize()
    calls.clear()
    state, info, grads = trainer._round(trainer.state, trainer.indices_for(0, 7))
    assert len(calls) == 7
    assert info.loss.shape == (7, 1)  # [steps, chains]
    # the decoder gradient has one entry per decoder variable, averaged over the steps
    assert len(grads) == len(trainer.decoder.trainable_variables)


def test_training_logs_every_update_and_lowers_the_loss(tmp_path):
    trainer = make_trainer(updates=6, steps=20)
    history = trainer.fit(tmp_path)
    assert list(history["update"]) == [1, 2, 3, 4, 5, 6]
    for column in ("loss_mean", "loss_min", "loss_max", "kinetic_temperature",
                   "conserved_energy_drift", "val_loss", "loss_q50"):
        assert column in history
    assert (history["loss_min"] <= history["loss_mean"]).all()
    assert (history["loss_mean"] <= history["loss_max"]).all()
    assert history["val_loss"].iloc[-1] < history["val_loss"].iloc[0]
    saved = pd.read_csv(tmp_path / "history.csv")
    assert len(saved) == 6
    # the code scale: mean per-unit variance of chain 0's codes of the fixed batch
    from eae.train import CODE_SCALE_BATCH

    x = trainer.train[0][:CODE_SCALE_BATCH].numpy()
    codes = trainer.encoder.encode_each(tf.constant(x))[0].numpy().astype(np.float64)
    assert history["code_scale"].iloc[-1] == pytest.approx(codes.var(axis=0).mean(), rel=1e-5)


def test_decoder_only_moves_on_decoder_updates():
    trainer = make_trainer(steps=5)
    trainer.initialize()
    before = [v.numpy() for v in trainer.decoder.weights]
    enc_before = [v.numpy() for v in trainer.encoder.weights]
    trainer._round(trainer.state, trainer.indices_for(0, 5))
    for a, v in zip(before, trainer.decoder.weights):
        np.testing.assert_array_equal(a, v.numpy())
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(enc_before, trainer.encoder.weights))


def test_resume_matches_uninterrupted_run(tmp_path):
    full = make_trainer(updates=5)
    full.fit(tmp_path / "a")
    part = make_trainer(updates=5)
    part.fit(tmp_path / "b", stop_after=2)
    resumed = make_trainer(updates=5)
    history = resumed.fit(tmp_path / "b")
    assert list(history["update"]) == [1, 2, 3, 4, 5]
    for a, b in zip(weights(full), weights(resumed)):
        np.testing.assert_array_equal(a, b)


def test_checkpoint_with_other_fingerprint_is_ignored(tmp_path):
    first = make_trainer(updates=2)
    first.fit(tmp_path, fingerprint="old")
    again = make_trainer(updates=2)
    history = again.fit(tmp_path, fingerprint="new")
    assert len(history) == 2 and again.update == 2


SIGKILL_SCRIPT = textwrap.dedent("""
    import os, signal, sys
    sys.path.insert(0, {tests!r})
    from test_train import make_trainer
    trainer = make_trainer(updates=6)
    if sys.argv[2] == "kill":
        original = trainer.save_checkpoint
        def save_then_maybe_die(path):
            original(path)
            if trainer.update == 3:
                os.kill(os.getpid(), signal.SIGKILL)
        trainer.save_checkpoint = save_then_maybe_die
    trainer.fit(sys.argv[1])
    import numpy as np
    np.savez(os.path.join(sys.argv[1], "final.npz"),
             *[v.numpy() for v in trainer.encoder.weights + trainer.decoder.weights])
""")


def test_sigkilled_job_resumes_to_the_same_result(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(SIGKILL_SCRIPT.format(tests=os.path.dirname(__file__)))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    killed = subprocess.run([sys.executable, str(script), str(tmp_path / "k"), "kill"], env=env)
    assert killed.returncode == -signal.SIGKILL
    subprocess.run([sys.executable, str(script), str(tmp_path / "k"), "go"], env=env, check=True)
    subprocess.run([sys.executable, str(script), str(tmp_path / "u"), "go"], env=env, check=True)
    a, b = np.load(tmp_path / "k" / "final.npz"), np.load(tmp_path / "u" / "final.npz")
    for key in a.files:
        np.testing.assert_array_equal(a[key], b[key])


def test_divergence_stops_with_a_message_and_keeps_last_good_checkpoint(tmp_path):
    trainer = make_trainer(updates=3, steps=5)
    trainer.fit(tmp_path, stop_after=1)
    good = np.load(tmp_path / "checkpoint.npz")["update"]
    bad = make_trainer(updates=3, steps=5, runaway_factor=1.5)
    bad.sampler_config = SimmeringConfig(temperature=1e-6, dt=0.2, chain_length=0)
    bad.sampler = type(bad.sampler)(bad.enc_vars, bad.sampler_config, chains=bad.chains)
    # thermostat off and a hot start: T_kin runs away from T, which must be reported
    bad.loss_fn = lambda e, d, b: 1e3 * tf.reduce_mean(tf.square(d(e(b[0])) - b[0]))
    with pytest.raises(TrainingDiverged, match="kinetic temperature|NaN"):
        bad.fit(tmp_path)
    assert np.load(tmp_path / "checkpoint.npz")["update"] == good


def test_hot_rounds_are_logged_with_their_likely_cause(caplog):
    import logging

    from eae.train import TrainSettings

    trainer = EAETrainer.__new__(EAETrainer)
    trainer.settings = TrainSettings(decoder_updates=10)
    trainer.update = 0
    from eae import sampler as S

    trainer.sampler_config = S.SimmeringConfig(chain_length=10)
    with caplog.at_level(logging.WARNING, logger="eae"):
        trainer._warn_if_hot(1.5, "decoder update 1")
        assert not caplog.records
        trainer._warn_if_hot(3.0, "decoder update 1")
        trainer._warn_if_hot(3.0, "decoder update 1")  # rate-limited
    assert len(caplog.records) == 1
    assert "3 × T" in caplog.text and "thermostat: adaptive" in caplog.text
    trainer.sampler_config = S.SimmeringConfig(thermostat="adaptive")
    trainer.update = 5
    with caplog.at_level(logging.WARNING, logger="eae"):
        trainer._warn_if_hot(2.5, "decoder update 6")
    assert "reduce sampler.dt" in caplog.text


def test_conserved_energy_drift_is_reported_only_with_exact_gradients(tmp_path):
    # H' is conserved only when every step sees the whole training set
    full = make_trainer(updates=2, steps=5, batch_size=len(DATA)).fit(tmp_path / "a", tmp_path / "ca")
    assert np.isfinite(full["conserved_energy_drift"]).all()
    mini = make_trainer(updates=2, steps=5).fit(tmp_path / "b", tmp_path / "cb")
    assert mini["conserved_energy_drift"].isna().all()


def test_stage_fingerprint_changes_with_settings_data_and_code(tmp_path, monkeypatch):
    import eae.provenance
    from eae.train import stage_fingerprint

    data = tmp_path / "data.bin"
    data.write_bytes(b"abc")
    first = stage_fingerprint({"x": 1}, data, "eae.train")
    assert stage_fingerprint({"x": 1}, data, "eae.train") == first
    assert stage_fingerprint({"x": 2}, data, "eae.train") != first
    assert stage_fingerprint({"x": 1}, data, "eae.sindy") != first  # other code closure
    data.write_bytes(b"abd")
    assert stage_fingerprint({"x": 1}, data, "eae.train") != first
    data.write_bytes(b"abc")
    # an edited sampler (any file the stage's module imports) must not resume old runs
    monkeypatch.setattr(eae.provenance, "source_hash", lambda modules=None: "edited")
    assert stage_fingerprint({"x": 1}, data, "eae.train") != first

"""The notebook API (eae.fit / eae.load / EAEModel): checks of its arguments, training on
vectors and images, sampling that continues the chain, the saved folder, resuming from
checkpoints, the warnings, the progress output and the docstring example."""

import doctest
import io
import json
import logging
import subprocess
import sys
import warnings

import numpy as np
import pytest

import eae
from eae import api, api_state
from eae.support.config import ConfigError

#: tiny MLPs, few steps: every fit takes about a second once TensorFlow has started
TINY = dict(latent_dim=3, decoder_updates=4, encoder_steps=5,
            model={"encoder_hidden": [16], "decoder_hidden": [16]}, train={"tconf_batch": 16})


def data(n=80, d=12, seed=0):
    return np.random.default_rng(seed).random((n, d)).astype("float32")


def quiet_fit(x, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.EAEWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # T_conf of 0/0 at saturated units
        return eae.fit(x, progress=False, **{**TINY, **kw})


def quiet(fn, *args, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.EAEWarning)
        return fn(*args, **kw)


@pytest.fixture(scope="module")
def x():
    return data()


@pytest.fixture(scope="module")
def two_chains(x):
    """Flat keywords over dicts that say otherwise (decoder_updates 50, seed 9)."""
    return quiet_fit(x, chains=2, seed=1, train={"decoder_updates": 50, "seed": 9, "tconf_batch": 16})


def weights(model):
    return [v.numpy() for v in model.trainer.encoder.weights + model.trainer.decoder.weights]


# --------------------------------------------------------------------------- arguments

def test_import_eae_does_not_start_tensorflow():
    code = "import sys, eae; eae.fit; eae.load; assert 'tensorflow' not in sys.modules, 'tf'"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_unknown_keywords_are_type_errors_naming_them(x):
    with pytest.raises(TypeError, match=r"'tau' is a key of sampler=: pass sampler=\{'tau'"):
        eae.fit(x, tau=5.0)
    with pytest.raises(TypeError, match="'decoder_update': did you mean 'decoder_updates'"):
        eae.fit(x, decoder_update=3)
    with pytest.raises(TypeError, match="train= must be a dict"):
        eae.fit(x, train=[("seed", 1)])


@pytest.mark.parametrize("kwargs, key", [
    ({"decoder_updates": 0}, "train.decoder_updates: must be >= 1"),
    ({"sampler": {"temperature": -1.0}}, "sampler.temperature"),
    ({"temperature": "hot"}, "sampler.temperature"),
    ({"thermostat": "nose"}, "sampler.thermostat"),
    ({"model": {"latent_dim": 0}}, "model.latent_dim"),
    ({"train": {"decoder_updatez": 3}}, "train.decoder_updatez: unknown key"),
])
def test_bad_settings_name_their_key(x, kwargs, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        eae.fit(x, **kwargs)


@pytest.mark.parametrize("bad, message", [
    (np.full((10, 3), np.nan, np.float32), "NaN or infinite"),
    (np.concatenate([np.zeros((4, 3)), [[0.0, np.inf, 0.0]]]),
     r"1 NaN or infinite value\(s\), the first in sample 4"),
    (np.full((3, 2), 1e300), "beyond float32"),
    (np.zeros((1, 5)), "at least 2 sample"),
    (np.zeros(5), r"\[n, \.\.\.\]"),
    (np.array([["a", "b"], ["c", "d"]]), "numeric"),
    (np.zeros((4, 0)), "empty axis"),
])
def test_bad_samples_are_value_errors_naming_the_problem(bad, message):
    with pytest.raises(ValueError, match=message):
        eae.fit(bad)


def test_validation_must_match_the_samples(x):
    with pytest.raises(ValueError, match=r"validation has samples of shape \(5,\)"):
        eae.fit(x, validation=np.zeros((4, 5)))


def test_defaults_are_the_datasets_entry_and_flat_keywords_win(two_chains):
    s = two_chains.settings
    assert s["train"]["decoder_updates"] == 4 and s["train"]["seed"] == 1  # over train=
    assert s["train"]["tconf_batch"] == 16 and s["train"]["chains"] == 2
    assert list(two_chains.history["update"]) == [1, 2, 3, 4]
    from eae.support.config import section_defaults

    assert s["sampler"] == {**section_defaults("datasets._.eae.sampler")}  # T 1e-6 is default
    assert s["model_resolved"]["kind"] == "mlp"
    assert s["model_resolved"]["output_activation"] == "sigmoid"  # data in [0, 1]


# --------------------------------------------------------------------------- sampling

def test_ensemble_has_the_stores_dims_and_measured_temperatures(two_chains, x):
    ens = quiet(two_chains.ensemble, x[:7], members=5)
    assert ens.dims == ("chain", "draw", "sample", "unit")
    assert ens.shape == (2, 3, 7, 3)  # 5 members over 2 chains: 3 draws each
    assert ens.attrs["members"] == ens.attrs["n_members"] == 6
    for key in ("ensemble_kinetic_over_target", "ensemble_configurational_over_target",
                "train_kinetic_over_target", "temperature"):
        assert np.isfinite(ens.attrs[key]), key
    assert ens.attrs["last_step"] - ens.attrs["first_step"] == 3
    assert ens["step"].dims == ("chain", "draw") and ens["loss"].shape == (2, 3)
    assert not np.allclose(ens.values[0], ens.values[1])  # two chains, two ensembles


def state_file(model, tmp_path):
    path = tmp_path / "state.npz"
    np.savez(path, **model.trainer.checkpoint_arrays())
    return path


def test_successive_calls_advance_and_a_seed_repeats_a_continuation(two_chains, x, tmp_path):
    xt = x[:6]
    start = state_file(two_chains, tmp_path)
    a = quiet(two_chains.ensemble, xt, members=4, seed=3)
    after_a = quiet(two_chains.ensemble, xt, members=4)
    assert after_a["step"].values.min() > a["step"].values.max()
    assert not np.allclose(a.values, after_a.values)
    two_chains.trainer.load_checkpoint(start)
    again = quiet(two_chains.ensemble, xt, members=4, seed=3)
    np.testing.assert_array_equal(a.values, again.values)
    two_chains.trainer.load_checkpoint(start)
    other = quiet(two_chains.ensemble, xt, members=4, seed=4)
    assert not np.allclose(a.values[:, 1:], other.values[:, 1:])
    two_chains.trainer.load_checkpoint(start)
    unseeded = quiet(two_chains.ensemble, xt, members=4)
    assert not np.allclose(a.values[:, 1:], unseeded.values[:, 1:])
    # a seeded call hands the chain back its own streams
    assert int(two_chains.trainer.state.seed[0]) == 1 and two_chains.trainer.settings.seed == 1


def test_encode_averages_the_latest_ensemble_of_the_same_samples(two_chains, x):
    xt = x[:5]
    ens = quiet(two_chains.ensemble, xt, members=4)
    step = int(two_chains.trainer.state.step)
    z = two_chains.encode(xt)
    assert two_chains.last_members == 4
    np.testing.assert_allclose(z, ens.mean(("chain", "draw")).values, rtol=1e-5, atol=1e-7)
    assert int(two_chains.trainer.state.step) == step  # nothing new was drawn
    z2 = quiet(two_chains.encode, x[5:9], members=6)  # other samples: a new ensemble
    assert z2.shape == (4, 3) and two_chains.last_members == 6
    assert int(two_chains.trainer.state.step) == step + 3


def test_decode_gives_samples_shaped_like_the_input(two_chains, x):
    z = quiet(two_chains.encode, x[:5], members=2)
    assert two_chains.decode(z).shape == (5, 12)
    ens = quiet(two_chains.ensemble, x[:5], members=2)
    assert two_chains.decode(ens.values).shape == (2, 1, 5, 12)
    with pytest.raises(ValueError, match=r"codes \[\.\.\., 3\]"):
        two_chains.decode(np.zeros((2, 4)))


def test_encoders_are_keras_models_of_each_chain(two_chains, x):
    from eae.support.runtime import keras, tf

    xs = two_chains.model_input(x[:4])
    each = two_chains.trainer.encoder.encode_each(tf.constant(xs)).numpy()
    assert isinstance(two_chains.encoder, keras.Model)
    np.testing.assert_allclose(two_chains.encoder(xs).numpy(), each[0], rtol=1e-5, atol=1e-6)
    copies = two_chains.encoders
    assert len(copies) == 2 and all(isinstance(m, keras.Model) for m in copies)
    np.testing.assert_allclose(copies[1](xs).numpy(), each[1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(each[0], each[1])
    assert isinstance(two_chains.decoder, keras.Model)


def test_save_and_load_continue_the_chain_identically(two_chains, x, tmp_path):
    quiet(two_chains.ensemble, x[:3], members=2, seed=7)  # the saved state is after this
    folder = two_chains.save(tmp_path / "my_eae")
    assert {p.name for p in folder.iterdir()} == set(api_state.FILES.values())
    loaded = eae.load(folder, progress=False)
    assert loaded.settings["sampling"] == two_chains.settings["sampling"]
    for a, b in zip(weights(two_chains), weights(loaded)):
        np.testing.assert_array_equal(a, b)
    for seed in (11, None):
        a = quiet(two_chains.ensemble, x[:6], members=4, seed=seed)
        b = quiet(loaded.ensemble, x[:6], members=4, seed=seed)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a["step"].values, b["step"].values)
    record = json.loads((folder / "provenance.json").read_text())
    assert record["seeds"]["train"] == 1 and record["seeds"]["ensembles"][-1] == 7
    assert record["sampling"] == two_chains.settings["sampling"][:len(record["sampling"])]
    assert record["packages"]["tensorflow"] and record["eae_source_sha256"]
    # saving again replaces the model folder; an unrelated folder is never replaced
    two_chains.save(folder)
    (tmp_path / "notes").mkdir()
    with pytest.raises(FileExistsError, match="not a saved EAE model"):
        two_chains.save(tmp_path / "notes")
    np.save(folder / "train_x.npy", x[:10])
    with pytest.raises(ValueError, match="checksum"):
        eae.load(folder)


# --------------------------------------------------------------------------- images

def test_grey_images_train_and_come_back_as_images(capsys):
    rng = np.random.default_rng(2)
    images = (rng.random((40, 6, 5)) - 0.5).astype("float32")  # outside [0, 1]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.EAEWarning)
        model = eae.fit(images, latent_dim=2, decoder_updates=2, encoder_steps=3, dt=0.05,
                        model={"encoder_hidden": [8], "decoder_hidden": [8]}, progress=True)
        assert "eae train 2/2 (100%)" in capsys.readouterr().err  # progress with ETA
        assert model.settings["model_resolved"]["output_activation"] == "linear"
        assert model.model_input(images[:3]).shape == (3, 30)
        z = model.encode(images[:4, :, :, None], members=2)  # with a channel axis too
    assert z.shape == (4, 2) and model.decode(z).shape == (4, 6, 5)
    with pytest.raises(ValueError, match=r"trained on \(6, 5\)"):
        model.encode(images[:4, :5])


def test_rgb_images_train_a_conv_eae():
    rgb = np.random.default_rng(3).random((40, 8, 8, 3)).astype("float32")
    conv = {"kind": "conv", "filters": [4], "kernel": 3, "decoder_base_channels": 4,
            "decoder_filters": [4], "decoder_strides": [2], "decoder_kernel": 3}
    model = quiet_fit(rgb, latent_dim=2, decoder_updates=2, encoder_steps=3, model=conv)
    assert model.settings["model_input_shape"] == [8, 8, 3]
    assert model.encoder.input_shape == (None, 8, 8, 3)
    z = quiet(model.encode, rgb[:5], members=2)
    assert z.shape == (5, 2) and model.decode(z).shape == (5, 8, 8, 3)


# --------------------------------------------------------------------------- runs

def test_same_seed_same_model_and_checkpoints_resume(x, tmp_path, monkeypatch):
    from eae.core.trainer import EAETrainer

    full = quiet_fit(x, seed=5)
    assert all(np.array_equal(a, b) for a, b in zip(weights(full), weights(quiet_fit(x, seed=5))))
    assert not np.allclose(weights(full)[0], weights(quiet_fit(x, seed=6))[0])

    run_update = EAETrainer.run_update

    def killed_after_two(self):
        if self.update == 2:
            raise KeyboardInterrupt  # Ctrl-C in a notebook
        return run_update(self)

    monkeypatch.setattr(EAETrainer, "run_update", killed_after_two)
    with pytest.raises(KeyboardInterrupt):
        quiet_fit(x, seed=5, checkpoint_dir=tmp_path)
    monkeypatch.setattr(EAETrainer, "run_update", run_update)
    with np.load(tmp_path / "checkpoint.npz") as ckpt:
        assert int(ckpt["update"]) == 2
    calls = []
    monkeypatch.setattr(EAETrainer, "run_update", lambda self: calls.append(1) or run_update(self))
    resumed = quiet_fit(x, seed=5, checkpoint_dir=tmp_path)
    assert len(calls) == 2 and list(resumed.history["update"]) == [1, 2, 3, 4]
    for a, b in zip(weights(full), weights(resumed)):
        np.testing.assert_array_equal(a, b)
    calls.clear()
    quiet_fit(x, seed=5, checkpoint_dir=tmp_path, learning_rate=1e-2)  # other settings: afresh
    assert len(calls) == 4


def test_an_absurd_temperature_warns(x):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        model = eae.fit(x, progress=False, **{**TINY, "temperature": 1e2, "decoder_updates": 6})
    said = [w for w in caught if issubclass(w.category, api.TemperatureWarning)]
    assert len(said) == 1 and "T_conf/T outside [0.75, 1.33]" in str(said[0].message)
    assert said[0].filename == __file__  # points at the caller's line
    assert model.flags["T flag"] == "FLAGGED: train"


def test_warnings_follow_the_workflow_flags():
    from eae.core.sampler import SimmeringConfig
    from eae.core.temperature import check_temperatures
    from eae.core.wellposed import IMPROPER_SLOPE

    cfg = SimmeringConfig(thermostat="adaptive")

    def warned(kin, conf, slope):
        attrs = {**check_temperatures([kin], [conf], [1.0]).as_attrs("ensemble_"),
                 "ensemble_displacement_slope": slope}
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            api_state.warn_flags(attrs, "ensemble_", "ensemble", cfg)
        return sorted(w.category.__name__ for w in caught)

    assert warned(1.0, 1.0, 0.0) == []
    assert warned(1.05, 1.3, IMPROPER_SLOPE) == []
    assert warned(1.2, 1.0, 0.0) == ["TemperatureWarning"]
    assert warned(1.0, 0.5, 0.0) == ["TemperatureWarning"]
    assert warned(1.0, 1.0, IMPROPER_SLOPE + 0.01) == ["ImproperEnsembleWarning"]
    assert issubclass(api.TemperatureWarning, UserWarning)


# --------------------------------------------------------------------------- progress

class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere():
    from eae.support.progress import Progress

    log = logging.getLogger("eae")
    before = (log.level, log.propagate, list(log.handlers))
    term = _Terminal()
    with api_state.progress_output(True, term):
        bar = Progress(3, "eae train", log, every_s=0)
        for i in (1, 2, 3):
            bar.update(i, f"loss {i}")
        log.warning("hot")
    text = term.getvalue()
    assert text.count("\r") == 3 and "eae train [####################] 3/3 (100%)" in text
    assert text.endswith("loss 3\nwarning: hot\n")
    plain = io.StringIO()
    with api_state.progress_output(True, plain):
        Progress(2, "ensemble", log, every_s=0).update(2, "x")
    assert plain.getvalue().startswith("INFO ensemble 2/2 (100%) elapsed") and "\r" not in plain.getvalue()
    with api_state.progress_output(False, plain):
        log.info("hidden")
    assert "hidden" not in plain.getvalue()
    assert (log.level, log.propagate, list(log.handlers)) == before


def test_progress_lines_are_the_ones_the_bar_reads():
    from eae.support.progress import Progress

    records = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    log = logging.getLogger("test_api_progress")
    log.addHandler(Keep())
    log.setLevel(logging.INFO)
    Progress(2, "x", log, every_s=0).update(1)
    assert records[0].msg == api_state.PROGRESS_MSG and len(records[0].args) == 7


# --------------------------------------------------------------------------- docs

def test_docstring_example_runs():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", api.EAEWarning)
        result = doctest.testmod(api, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 10 and result.failed == 0

"""Ensemble sampling: decoder frozen, members streamed to Zarr, atomic output."""

import numpy as np
import pytest
import tensorflow as tf
import xarray as xr

from eae.ensemble import sample_ensemble
from eae.io import member_view, open_zarr, read_provenance
from helpers import TINY_DATA as DATA, tiny_trainer as make_trainer


def record_for(trainer):
    x = tf.constant(DATA[:30])
    return lambda: {"latent": (("sample", "unit"), trainer.encoder.encode_each(x).numpy())}


def test_members_stream_to_zarr_with_means_and_diagnostics(tmp_path):
    trainer = make_trainer()
    trainer.initialize()
    decoder_before = [v.numpy() for v in trainer.decoder.weights]
    static = xr.Dataset(coords={"sample": np.arange(30), "unit": np.arange(4)})
    path = sample_ensemble(trainer, record_for(trainer), tmp_path / "ens.zarr", n_members=12,
                           thin=3, chunk_members=5, mean_of=("latent",), static=static,
                           provenance={"stage": "test"})
    ds = member_view(open_zarr(path))
    assert open_zarr(path)["latent"].dims == ("chain", "draw", "sample", "unit")
    assert ds["latent"].dims == ("member", "sample", "unit")
    assert ds.sizes["member"] == 12
    assert open_zarr(path)["latent"].encoding["chunks"][:2] == (1, 5)
    np.testing.assert_allclose(ds["latent_mean"].values, ds["latent"].values.mean(0), rtol=1e-5)
    assert np.isfinite(ds["loss"].values).all() and (ds["kinetic_temperature"].values > 0).all()
    # consecutive members differ (the chain moves) and the decoder stayed frozen
    assert not np.allclose(ds["latent"].values[0], ds["latent"].values[-1])
    for a, v in zip(decoder_before, trainer.decoder.weights):
        np.testing.assert_array_equal(a, v.numpy())
    assert read_provenance(ds)["stage"] == "test"
    assert int(trainer.state.step) == 12 * 3


def test_interrupted_sampling_leaves_no_store(tmp_path):
    trainer = make_trainer()
    calls = []

    def failing_record():
        calls.append(1)
        if len(calls) == 7:
            raise RuntimeError("killed")
        return record_for(trainer)()

    with pytest.raises(RuntimeError):
        sample_ensemble(trainer, failing_record, tmp_path / "ens.zarr", n_members=10,
                        chunk_members=3, mean_of=("latent",))
    assert list(tmp_path.iterdir()) == []


def test_member_view_is_lazy_and_equals_stacking(tmp_path, monkeypatch):
    """member_view reads only the members a selection names (a 1000-member ensemble must
    not be loaded whole) and gives what xarray's stack gives."""
    rng = np.random.default_rng(0)
    latent = rng.standard_normal((3, 5, 7, 2)).astype("float32")
    ds = xr.Dataset({"latent": (("chain", "draw", "sample", "unit"), latent),
                     "loss": (("chain", "draw"), latent[..., 0, 0])},
                    coords={"chain": np.arange(3), "draw": np.arange(5)})
    ds.to_zarr(tmp_path / "ens.zarr", zarr_format=3, consolidated=False)
    stored = open_zarr(tmp_path / "ens.zarr")
    view = member_view(stored)
    expected = stored.load().stack(member=("chain", "draw")).transpose("member", ...)
    assert view["latent"].dims == ("member", "sample", "unit")
    assert not isinstance(view["latent"].variable._data, np.ndarray)  # nothing read yet
    reads = []
    original = xr.Variable.__getitem__

    def counting(self, key):
        reads.append(np.prod([len(range(*k.indices(n))) if isinstance(k, slice) else np.size(k)
                              for k, n in zip(key if isinstance(key, tuple) else (key,), self.shape)]))
        return original(self, key)

    monkeypatch.setattr(xr.Variable, "__getitem__", counting)
    picked = view["latent"].isel(member=[6, 7, 8]).values  # chain 1, draws 1..3
    monkeypatch.undo()
    np.testing.assert_array_equal(picked, expected["latent"].values[6:9])
    np.testing.assert_array_equal(view["latent"].values, expected["latent"].values)
    np.testing.assert_array_equal(view["loss"].values, expected["loss"].values)
    assert list(view["chain"].values) == [0] * 5 + [1] * 5 + [2] * 5
    assert 0 < max(reads) <= 3 * 7 * 2  # the three members, not the 15


def test_store_carries_the_measured_temperatures_of_training_and_sampling(tmp_path):
    import pandas as pd

    from eae.temperature import TEMPERATURE_COLUMNS, ensemble_temperatures, store_temperature_columns

    trainer = make_trainer()
    history = trainer.fit(tmp_path / "model", tmp_path / "ckpt")
    assert {"grad_sq_over_T_c0", "curvature_c0", "kinetic_over_target_c0",
            "configurational_over_target"} <= set(history.columns)
    assert np.isfinite(history["configurational_over_target"]).all()
    assert history["conserved_energy_drift"].isna().all()  # mini-batches: H' not conserved
    steps_before = int(trainer.state.step)
    path = sample_ensemble(trainer, record_for(trainer), tmp_path / "ens.zarr", n_members=6,
                           history=tmp_path / "model" / "history.csv", burn_in=7)
    assert int(trainer.state.step) == steps_before + 7 + 6  # burn-in steps are not recorded
    store = open_zarr(path)
    assert store.attrs["burn_in"] == 7 and store.sizes["draw"] == 6
    assert store["grad_sq"].dims == ("chain", "draw") and (store["curvature"].values != 0).all()
    attrs = store.attrs
    check = ensemble_temperatures(store)  # recomputed from the stored draws
    assert attrs["ensemble_kinetic_over_target"] == pytest.approx(check.kinetic)
    assert attrs["ensemble_configurational_over_target"] == pytest.approx(check.configurational)
    assert attrs["ensemble_temperature_flags"] == list(check.reasons)
    from eae.temperature import training_temperatures

    train = training_temperatures(pd.read_csv(tmp_path / "model" / "history.csv"))
    assert attrs["train_kinetic_over_target"] == pytest.approx(train.kinetic)
    cols = store_temperature_columns(attrs)
    assert list(cols) == TEMPERATURE_COLUMNS
    assert cols["T flag"] == ("ok" if not (check.flagged or train.flagged) else cols["T flag"])
    assert cols["T flag"].startswith("FLAGGED") == (check.flagged or train.flagged)


def test_a_hot_ensemble_that_diffuses_is_flagged_improper(tmp_path, caplog):
    """At T ≫ any loss exp(−L/T) is improper: ‖θ − θ₀‖ keeps growing in training and
    sampling alike, and the store, its table columns and the log say so."""
    from eae.temperature import store_temperature_columns
    from eae.wellposed import IMPROPER_SLOPE

    slopes = {}
    for name, temperature in (("hot", 1.0),):
        trainer = make_trainer(updates=6, steps=20, temperature=temperature, runaway_factor=1e9)
        history = trainer.fit(tmp_path / name / "model")
        assert (history["param_displacement_c0"] > 0).all()
        with caplog.at_level("WARNING", logger="eae"):
            path = sample_ensemble(trainer, record_for(trainer), tmp_path / name / "ens.zarr",
                                   n_members=40, history=history)
        store = open_zarr(path)
        assert store["param_displacement"].dims == ("chain", "draw")
        assert np.all(np.diff(store["step"].values[0]) == 1)
        slopes[name] = (store.attrs["train_displacement_slope"],
                        store.attrs["ensemble_displacement_slope"])
        cols = store_temperature_columns(store.attrs)
        assert cols["θ growth ensemble"] == slopes[name][1]
        slopes[name] += (cols["improper"],)
    assert slopes["hot"][0] > IMPROPER_SLOPE and slopes["hot"][1] > IMPROPER_SLOPE
    assert slopes["hot"][2] == "IMPROPER: train, ensemble"
    assert "improper ensemble: during ensemble sampling" in caplog.text
    assert "free diffusion" in caplog.text and "still drifting" in caplog.text


def test_measured_draws_are_evenly_spaced_and_end_at_the_last():
    from eae.ensemble import measured_draws

    assert measured_draws(10, 3) == {3, 6, 9}
    assert measured_draws(5, 100) == set(range(5)) and measured_draws(5, 0) == set()
    assert len(measured_draws(2000, 100)) == 100 and 1999 in measured_draws(2000, 100)


def test_configurational_temperature_is_measured_on_a_subsample_of_draws(tmp_path):
    from eae.temperature import ensemble_temperatures

    trainer = make_trainer()
    trainer.initialize()
    calls = []
    measure = trainer.measure_configurational
    trainer.measure_configurational = lambda key: calls.append(key) or measure(key)
    store = open_zarr(sample_ensemble(trainer, record_for(trainer), tmp_path / "ens.zarr",
                                      n_members=8, tconf_draws=3))
    assert len(calls) == 3 and store.attrs["tconf_draws"] == 3
    g = store["grad_sq"].values
    assert np.isfinite(g[:, [2, 5, 7]]).all() and np.isnan(np.delete(g, [2, 5, 7], axis=1)).all()
    check = ensemble_temperatures(store)  # pooled over the measured draws only
    t = store.attrs["temperature"]
    expect = g[:, [2, 5, 7]].sum() / t / store["curvature"].values[:, [2, 5, 7]].sum()
    assert check.configurational == pytest.approx(expect)
    assert store.attrs["ensemble_configurational_over_target"] == pytest.approx(expect)
    none = open_zarr(sample_ensemble(trainer, record_for(trainer), tmp_path / "none.zarr",
                                     n_members=4, tconf_draws=0))
    assert "grad_sq" not in none and np.isnan(none.attrs["ensemble_configurational_over_target"])

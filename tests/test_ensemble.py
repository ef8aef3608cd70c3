"""Ensemble sampling: decoder frozen, members streamed to Zarr, atomic output."""

import numpy as np
import pytest
import tensorflow as tf
import xarray as xr

from eae.ensemble import sample_ensemble
from eae.io import member_view, open_zarr, read_provenance
from test_train import DATA, make_trainer


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

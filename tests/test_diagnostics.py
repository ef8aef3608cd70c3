"""Convergence diagnostics (eae.diagnostics) on synthetic chains with known mixing."""

import logging
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.signal import lfilter

from eae import diagnostics as dg
from eae.io import write_zarr


def ar1(phi: float, chains: int, draws: int, seed: int, extra: tuple = ()) -> np.ndarray:
    """Stationary AR(1) chains [chain, draw, *extra] with unit variance: IAT = (1+φ)/(1−φ)."""
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(chains, draws, *extra)) * math.sqrt(1 - phi**2)
    noise[:, 0] = rng.normal(size=(chains, *extra))  # start in the stationary law
    return lfilter([1.0], [1.0, -phi], noise, axis=1, zi=np.zeros((chains, 1, *extra)))[0]


def iat_true(phi: float) -> float:
    return (1 + phi) / (1 - phi)


def scalar_ds(x: np.ndarray, name: str = "loss") -> xr.Dataset:
    return xr.Dataset({name: (("chain", "draw"), x)})


def ensemble_ds(seed: int = 0, chains: int = 4, draws: int = 400) -> xr.Dataset:
    return xr.Dataset({
        "loss": (("chain", "draw"), ar1(0.5, chains, draws, seed)),
        "kinetic_temperature": (("chain", "draw"), 1.0 + 0.1 * ar1(0.2, chains, draws, seed + 1)),
        "latent": (("chain", "draw", "sample", "unit"), ar1(0.3, chains, draws, seed + 2, (3, 2))),
        "data_mean": (("unit",), np.zeros(2)),  # no chain/draw: not a sampled variable
    })


@pytest.mark.parametrize("phi", [0.0, 0.5, 0.8])
def test_iat_of_ar1_matches_theory(phi):
    table = dg.convergence_table(scalar_ds(ar1(phi, 4, 5000, seed=1)))
    row = table.iloc[0]
    assert row["iat"] == pytest.approx(iat_true(phi), rel=0.2)
    assert row["iat"] == pytest.approx(4 * 5000 / row["ess_bulk"])
    assert row["rhat"] < 1.01
    assert row["mean"] == pytest.approx(0.0, abs=0.15)
    assert row["sd"] == pytest.approx(1.0, rel=0.1)


def test_vector_variable_median_iat_and_worst_component():
    phi = 0.6
    x = ar1(phi, 4, 2000, seed=2, extra=(5, 4))
    row = dg.convergence_table(xr.Dataset({"latent": (("chain", "draw", "sample", "unit"), x)})).iloc[0]
    assert (row["elements"], row["analysed"], row["constant"]) == (20, 20, 0)
    assert 4 * 2000 / row["ess_bulk_median"] == pytest.approx(iat_true(phi), rel=0.2)
    assert row["iat"] >= 4 * 2000 / row["ess_bulk_median"]  # the worst component
    assert row["rhat"] >= row["rhat_median"]
    assert row["rhat"] < 1.02
    assert math.isnan(row["mean"]) and math.isnan(row["sd"])


def test_one_stuck_component_sets_the_max_not_the_median():
    x = ar1(0.3, 4, 500, seed=9, extra=(6,))
    x[3, :, 2] += 2.0  # one chain stuck elsewhere in one unit
    row = dg.convergence_table(xr.Dataset({"latent": (("chain", "draw", "unit"), x)})).iloc[0]
    assert row["rhat"] > 1.1
    assert row["rhat_median"] < 1.01


def test_default_variables_and_columns():
    table = dg.convergence_table(ensemble_ds())
    assert list(table.columns) == dg.TABLE_COLUMNS
    assert list(table["variable"]) == ["kinetic_temperature", "latent", "loss"]  # sorted
    assert list(table["elements"]) == [1, 6, 1]
    assert list(table["chains"]) == [4, 4, 4] and list(table["draws"]) == [400] * 3
    assert dg.check_convergence(table, rhat_max=1.05, ess_min=100) == []


def test_shifted_chains_give_large_rhat_and_a_warning():
    x = ar1(0.3, 4, 500, seed=3) + np.array([0.0, 0.0, 0.0, 1.5])[:, None]
    table = dg.convergence_table(scalar_ds(x))
    rhat = table["rhat"].iloc[0]
    assert rhat > 1.1
    warnings = dg.check_convergence(table, rhat_max=1.01, ess_min=10)
    assert len(warnings) == 1
    assert "loss" in warnings[0] and f"{rhat:.3g}" in warnings[0] and "1.01" in warnings[0]
    assert dg.RHAT_KEY in warnings[0]


def test_between_chain_share_of_the_pooled_variance():
    agree = ar1(0.3, 4, 500, seed=4)
    share = dg.convergence_table(scalar_ds(agree))["between_chain_share"].iloc[0]
    assert share < 0.02  # ~ 1/draws × IAT for chains that agree
    offsets = np.array([-3.0, -1.0, 1.0, 3.0])[:, None]  # chain means ±1, ±3; unit noise
    apart = dg.convergence_table(scalar_ds(agree + offsets))
    share = apart["between_chain_share"].iloc[0]
    assert share == pytest.approx(5.0 / (5.0 + np.var(agree)), rel=0.05)
    warnings = dg.check_convergence(apart, rhat_max=100.0, ess_min=0.0)
    assert len(warnings) == 1 and "between chains" in warnings[0] and dg.BETWEEN_KEY in warnings[0]
    assert dg.check_convergence(apart, rhat_max=100.0, ess_min=0.0, between_max=0.95) == []
    single = dg.convergence_table(scalar_ds(agree[:1]))
    assert np.isnan(single["between_chain_share"].iloc[0])


def test_low_ess_warns_with_limit():
    table = dg.convergence_table(scalar_ds(ar1(0.95, 2, 200, seed=4)))
    warnings = dg.check_convergence(table, rhat_max=10.0, ess_min=100)
    assert len(warnings) == 1 and "ESS_bulk of loss" in warnings[0] and dg.ESS_KEY in warnings[0]
    assert dg.check_convergence(table, rhat_max=10.0, ess_min=1) == []


def test_constant_and_nonfinite_components_are_counted_not_used():
    x = ar1(0.2, 4, 300, seed=5, extra=(4,))
    x[:, :, 1] = 3.0  # a frozen unit
    x[2, 17, 3] = np.nan  # a diverged one
    ds = xr.Dataset({"latent": (("chain", "draw", "unit"), x)})
    row = dg.convergence_table(ds).iloc[0]
    assert (row["constant"], row["nonfinite"], row["analysed"]) == (1, 1, 4)
    clean = dg.convergence_table(xr.Dataset({"latent": (("chain", "draw", "unit"), x[:, :, [0, 2]])}))
    for col in ("rhat", "ess_bulk", "ess_tail", "rhat_median"):
        assert row[col] == pytest.approx(clean[col].iloc[0])
    warnings = dg.check_convergence(dg.convergence_table(ds), rhat_max=1.1, ess_min=10)
    assert len(warnings) == 1 and "NaN/inf" in warnings[0]


def test_all_constant_variable_is_nan_not_an_error():
    table = dg.convergence_table(scalar_ds(np.full((3, 50), 2.0)))
    row = table.iloc[0]
    assert row["constant"] == 1
    assert all(math.isnan(row[c]) for c in ("rhat", "ess_bulk", "ess_tail", "iat"))
    assert row["mean"] == 2.0 and row["sd"] == 0.0
    assert dg.check_convergence(table) == []


def test_single_chain_uses_halves():
    row = dg.convergence_table(scalar_ds(ar1(0.5, 1, 4000, seed=6))).iloc[0]
    assert row["chains"] == 1
    assert row["rhat"] < 1.01
    assert row["iat"] == pytest.approx(iat_true(0.5), rel=0.2)
    drift = ar1(0.5, 1, 4000, seed=6) + np.linspace(0, 3, 4000)  # non-stationary chain
    assert dg.convergence_table(scalar_ds(drift))["rhat"].iloc[0] > 1.1


def test_missing_dims_or_too_few_draws_raise_naming_the_variable():
    ds = xr.Dataset({"loss": (("chain", "step"), np.zeros((2, 10)))})
    with pytest.raises(ValueError, match="'loss'.*draw"):
        dg.convergence_table(ds, ["loss"])
    with pytest.raises(ValueError, match="chain, draw"):
        dg.convergence_table(ds)
    with pytest.raises(ValueError, match="'kinetic_temperature'.*3 draws"):
        dg.convergence_table(scalar_ds(np.ones((2, 3)), "kinetic_temperature"))
    with pytest.raises(ValueError, match="'nope'"):
        dg.convergence_table(ensemble_ds(), ["nope"])


def test_max_elements_is_a_deterministic_subset():
    x = ar1(0.3, 2, 100, seed=7, extra=(50, 8))
    ds = xr.Dataset({"latent": (("chain", "draw", "sample", "unit"), x)})
    a = dg.convergence_table(ds, max_elements=30)
    b = dg.convergence_table(ds, max_elements=30)
    assert (a["elements"].iloc[0], a["analysed"].iloc[0]) == (400, 30)
    pd.testing.assert_frame_equal(a, b)
    full = dg.convergence_table(ds)
    assert a["rhat"].iloc[0] <= full["rhat"].iloc[0]
    assert a["ess_bulk"].iloc[0] >= full["ess_bulk"].iloc[0]


def test_trace_diagnostics_agrees_with_table():
    x = ar1(0.5, 4, 200, seed=8)
    row = dg.convergence_table(scalar_ds(x)).iloc[0]
    d = dg.trace_diagnostics(x.T)  # [steps, chains]
    assert set(d) == {"rhat", "ess_bulk", "ess_tail", "iat"}
    for key in d:
        assert d[key] == pytest.approx(row[key], rel=1e-12)
    assert 1.5 < d["iat"] < 5


def test_trace_diagnostics_is_nan_safe():
    for bad in (np.zeros((3, 4)), np.ones((100, 4)), np.array([[1.0, np.nan]] * 20)):
        d = dg.trace_diagnostics(bad)
        assert all(math.isnan(v) for v in d.values()), bad.shape


def test_figure_is_written(tmp_path):
    path = dg.diagnostics_figure(ensemble_ds(), tmp_path / "diag.png",
                                 variables=("loss", "kinetic_temperature", "latent", "absent"),
                                 max_lag=50, dpi=50)
    assert path.exists() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert path.stat().st_size > 1000


def test_stage_writes_csv_and_png_and_logs_warnings(tmp_path, caplog):
    ds = ensemble_ds(draws=300)
    ds["loss"] = ds["loss"] + xr.DataArray([0.0, 0.0, 2.0, 2.0], dims="chain")
    store = write_zarr(ds, tmp_path / "ensemble.zarr")
    out_csv, out_png = tmp_path / "tables" / "diag.csv", tmp_path / "figs" / "diag.png"
    with caplog.at_level(logging.WARNING, logger="eae"):
        table, warnings = dg.diagnostics_stage(store, out_csv, out_png, rhat_max=1.01,
                                               ess_min=50, provenance={"stage": "test"})
    assert out_csv.stat().st_size > 0 and out_png.stat().st_size > 0
    written = pd.read_csv(out_csv).set_index("variable")
    assert sorted(written.index) == ["kinetic_temperature", "latent", "loss"]  # Zarr sorts them
    assert written.loc["loss", "rhat"] == pytest.approx(table.set_index("variable").loc["loss", "rhat"])
    assert len(warnings) == 1 and warnings[0].startswith("R̂ of loss")
    assert "R̂ of loss" in caplog.text
    assert (tmp_path / "tables" / "diag.csv.provenance.json").exists()

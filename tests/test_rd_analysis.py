"""Analysis of the SINDy coefficient ensemble: KDE modes, Table 4, frequencies, figures."""

import json
import math

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eae import rd_analysis as ra
from eae.sindy import library_names, synthetic_oscillator

TERMS = library_names()
LATENTS = ["z1", "z2"]


# -- KDE modes ---------------------------------------------------------------------------


def test_kde_mode_finds_the_dominant_mode_of_a_bimodal_sample():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(-1.0, 0.1, 700), rng.normal(2.0, 0.1, 300)])
    assert ra.kde_mode(x) == pytest.approx(-1.0, abs=0.05)
    # the mean lies between the modes, far from both
    assert abs(x.mean() - ra.kde_mode(x)) > 0.5
    assert ra.kde_mode(-x) == pytest.approx(1.0, abs=0.05)


def test_kde_mode_is_robust_to_degenerate_samples():
    assert ra.kde_mode(np.full(50, 0.3)) == pytest.approx(0.3)
    assert ra.kde_mode(np.array([2.5])) == 2.5
    assert math.isnan(ra.kde_mode(np.array([])))
    assert math.isnan(ra.kde_mode(np.array([np.nan, np.inf])))
    with_nan = np.concatenate([np.random.default_rng(1).normal(0.7, 0.05, 200), [np.nan, np.inf]])
    assert ra.kde_mode(with_nan) == pytest.approx(0.7, abs=0.03)
    # two distinct values only: a finite answer within the range
    assert 0.0 <= ra.kde_mode(np.array([0.0, 1.0])) <= 1.0


def test_kde_mode_2d_and_degenerate_pairs():
    rng = np.random.default_rng(2)
    a = np.concatenate([rng.normal(1, 0.1, 600), rng.normal(-1, 0.1, 200)])
    b = np.concatenate([rng.normal(-2, 0.1, 600), rng.normal(2, 0.1, 200)])
    mode, grid = ra.kde_mode_2d(a, b)
    assert mode == pytest.approx((1.0, -2.0), abs=0.1)
    assert grid is not None and grid[2].shape == grid[0].shape
    mode, grid = ra.kde_mode_2d(np.ones(20), rng.normal(size=20))  # singular covariance
    assert grid is None and mode[0] == 1.0


# -- Table 4 --------------------------------------------------------------------------------


def _coefficients(n_members=400, omega=0.9, noise=0.02, seed=0):
    """Ensemble of Ξ for ż1 = −ω z2, ż2 = ω z1 plus noise, and a bimodal sin(z1) row."""
    rng = np.random.default_rng(seed)
    c = rng.normal(0, noise, (n_members, len(TERMS), 2))
    c[:, TERMS.index("z2"), 0] += -omega
    c[:, TERMS.index("z1"), 1] += omega
    # bimodal coefficient: mode 0.5 (60 %), other mode −1.4 → mean ≈ −0.26, mode 0.5
    bimodal = np.where(rng.random(n_members) < 0.6, 0.5, -1.4)
    c[:, TERMS.index("sin(z1)"), 0] += bimodal
    # mean 0.3 but mode 0.05: not significant
    skew = np.where(rng.random(n_members) < 0.8, 0.05, 1.3)
    c[:, TERMS.index("z1^3"), 1] += skew
    return c


def test_summary_and_table4_layout_and_significance():
    c = _coefficients()
    summary = ra.coefficient_summary(c, TERMS, LATENTS)
    assert len(summary) == 22
    table = ra.table4(summary)
    assert list(table["term"]) == TERMS
    assert list(table.columns) == ["term", "z1dot_mean", "z1dot_mode", "z1dot_significant",
                                   "z2dot_mean", "z2dot_mode", "z2dot_significant"]
    row = table.set_index("term")
    assert row.loc["z2", "z1dot_mean"] == pytest.approx(-0.9, abs=0.01)
    assert row.loc["z2", "z1dot_significant"] and row.loc["z1", "z2dot_significant"]
    assert not row.loc["z1", "z1dot_significant"]
    # bimodal: both |mean| and |mode| > 0.1 → significant, with the mode at the big peak
    assert row.loc["sin(z1)", "z1dot_mode"] == pytest.approx(0.5, abs=0.05)
    assert row.loc["sin(z1)", "z1dot_mean"] == pytest.approx(0.6 * 0.5 - 0.4 * 1.4, abs=0.08)
    assert row.loc["sin(z1)", "z1dot_significant"]
    # mean above, mode below the threshold → not significant
    assert row.loc["z1^3", "z2dot_mean"] > 0.1
    assert abs(row.loc["z1^3", "z2dot_mode"]) < 0.1
    assert not row.loc["z1^3", "z2dot_significant"]
    md = ra.table4_markdown(table, 0.1)
    lines = md.splitlines()
    assert lines[0].startswith("| term |") and lines[0].count("|") == 6
    assert len([l for l in lines if l.startswith("| ")]) == 1 + len(TERMS)
    z2_row = next(l for l in lines if l.startswith("| z2 |"))
    assert z2_row.split("|")[2].strip().startswith("**-0.9")  # significant → bold
    z1_row = next(l for l in lines if l.startswith("| z1 |"))
    assert "**" not in z1_row.split("|")[2]  # ż1: z1 is not significant


def test_correlation_matrix_and_top_linear_pairs():
    rng = np.random.default_rng(3)
    c = rng.normal(0, 1, (500, len(TERMS), 2))
    # A[0,1] (z2 in ż1) and A[1,0] (z1 in ż2) anti-correlated, as under a rescaling of z
    c[:, TERMS.index("z1"), 1] = -c[:, TERMS.index("z2"), 0] + rng.normal(0, 0.05, 500)
    c[:, TERMS.index("z2^3"), 1] = 0.0  # a constant coefficient
    corr = ra.correlation_matrix(c)
    labels = ra.coefficient_labels(TERMS, LATENTS)
    i = labels.index("z\u03071: z2")
    j = labels.index("z\u03072: z1")
    assert corr[i, j] == pytest.approx(-1.0, abs=0.01)
    k = labels.index("z\u03072: z2^3")
    assert np.all(np.isnan(corr[k])) and np.all(np.isnan(corr[:, k]))
    assert np.allclose(np.diag(np.delete(np.delete(corr, k, 0), k, 1)), 1.0)
    pairs = ra.top_linear_pairs(c, TERMS, LATENTS, n_pairs=2)
    assert {pairs[0][0], pairs[0][1]} == {(0, 1), (1, 0)}
    assert pairs[0][2] == pytest.approx(-1.0, abs=0.01)


# -- models and frequencies ------------------------------------------------------------------


def _oscillator_xi(omega=0.9):
    xi = np.zeros((len(TERMS), 2))
    xi[TERMS.index("z2"), 0] = -omega
    xi[TERMS.index("z1"), 1] = omega
    return xi


def test_linear_block_and_frequencies_of_a_known_oscillator():
    xi = _oscillator_xi(0.9)
    a = ra.linear_block(xi, TERMS, LATENTS)
    assert np.allclose(a, [[0, -0.9], [0.9, 0]])
    assert ra.eigen_frequency(a) == pytest.approx(0.9)
    assert ra.product_frequency(a) == pytest.approx(0.9)
    # the sine slope adds to the linear part at z = 0
    xi[TERMS.index("sin(z2)"), 0] = -0.3
    assert ra.linear_block(xi, TERMS, LATENTS, include_sines=True)[0, 1] == pytest.approx(-1.2)
    assert math.isnan(ra.product_frequency(np.eye(2)))
    assert ra.eigen_frequency(np.diag([-1.0, -2.0])) == 0.0


def test_integrate_model_reproduces_the_analytic_solution_and_frequency():
    t = np.linspace(0, 40, 801)
    traj = ra.integrate_model(_oscillator_xi(0.9), np.array([1.0, 0.0]), t)
    assert np.allclose(traj[:, 0], np.cos(0.9 * t), atol=1e-6)
    assert np.allclose(traj[:, 1], np.sin(0.9 * t), atol=1e-6)
    assert ra.series_frequency(t, traj) == pytest.approx(0.9, rel=1e-3)


def test_integrate_model_stops_at_a_blow_up():
    xi = np.zeros((len(TERMS), 2))
    xi[TERMS.index("z1^2"), 0] = 1.0  # ż1 = z1²: blows up at t = 1 from z1 = 1
    t = np.linspace(0, 2, 201)
    traj = ra.integrate_model(xi, np.array([1.0, 0.0]), t, bound=100.0)
    assert np.all(np.isfinite(traj[t < 0.95]))
    assert np.all(np.isnan(traj[t > 1.0]))
    assert math.isnan(ra.series_frequency(t, traj))


def test_series_frequency_needs_no_whole_periods():
    t = np.arange(200) * 0.05  # 10 time units: 1.45 periods at ω = 0.91
    y = np.stack([1.3 * np.cos(0.91 * t + 0.3) + 0.2, np.sin(0.91 * t + 0.3)], 1)
    assert ra.series_frequency(t, y) == pytest.approx(0.91, rel=1e-6)
    noisy = y + np.random.default_rng(0).normal(0, 0.05, y.shape)
    assert ra.series_frequency(t, noisy) == pytest.approx(0.91, rel=0.01)
    assert math.isnan(ra.series_frequency(t, np.exp(-t)))  # decay: no oscillation
    assert math.isnan(ra.series_frequency(t[:3], y[:3]))


def test_data_frequency_of_a_rotating_pattern():
    ds = synthetic_oscillator(n=6, n_snapshots=600, omega=0.91, quadratic=0.0, n_train=300,
                              n_val=100)
    order = np.argsort(ds["time"].values)
    t = ds["time"].values[order]
    assert ra.data_frequency(t, ds["x"].values[order]) == pytest.approx(0.91, rel=2e-3)


def test_identified_models_threshold():
    c = _coefficients()
    summary = ra.coefficient_summary(c, TERMS, LATENTS)
    sig = ra.identified_models(c, summary, TERMS, LATENTS, "significant")
    full = ra.identified_models(c, summary, TERMS, LATENTS, "all")
    assert sig["mean"][TERMS.index("z1^3"), 1] == 0.0
    assert full["mean"][TERMS.index("z1^3"), 1] > 0.1
    assert np.count_nonzero(sig["mode"]) == int(summary["significant"].sum())
    eqs = ra.equation_strings(sig["mean"], TERMS, LATENTS)
    assert eqs[0].startswith("dz1/dt = ") and "z2" in eqs[0]


def test_analysis_params_reject_unknown_keys():
    with pytest.raises(ValueError, match="rd.analysis: unknown setting"):
        ra.AnalysisParams.from_dict({"treshold": 0.1})
    with pytest.raises(ValueError, match="model_terms"):
        ra.AnalysisParams.from_dict({"model_terms": "some"})


def test_schema_defaults_equal_analysis_params(repo_root):
    import yaml

    schema = yaml.safe_load((repo_root / "workflow/schemas/rd_analysis.schema.yaml").read_text())
    props = schema["properties"]["rd"]["properties"]["analysis"]["properties"]
    defaults = {k: v["default"] for k, v in props.items()}
    assert defaults == vars(ra.AnalysisParams())


# -- the stage on a synthetic ensemble -------------------------------------------------------


def _write_stores(tmp_path, omega=0.9, n_members=60, velocities=True):
    from eae.io import write_zarr

    data = synthetic_oscillator(n=6, n_snapshots=500, dt=0.1, omega=omega, n_test=250,
                                n_train=200, n_val=50, quadratic=0.0)
    write_zarr(data, tmp_path / "dataset.zarr")
    test = data.isel(sample=np.flatnonzero(data["split"].values == 2))
    t = test["time"].values
    rng = np.random.default_rng(0)
    z = np.stack([np.cos(omega * t), np.sin(omega * t)], 1)
    codes = z[None] + rng.normal(0, 0.01, (n_members,) + z.shape)
    coeffs = _oscillator_xi(omega)[None] + rng.normal(0, 0.02, (n_members, len(TERMS), 2))
    z_dot = omega * np.stack([-np.sin(omega * t), np.cos(omega * t)], 1)
    z_dot = z_dot[None] + rng.normal(0, 0.01, (n_members,) + z.shape)
    ds = xr.Dataset(
        {"coefficients": (("member", "term", "latent"), coeffs.astype(np.float32)),
         "latent_code": (("member", "sample", "latent"), codes.astype(np.float32)),
         "coefficients_mean": (("term", "latent"), coeffs.mean(0).astype(np.float32)),
         "latent_code_mean": (("sample", "latent"), codes.mean(0).astype(np.float32))},
        coords={"member": np.arange(n_members), "sample": np.arange(len(t)),
                "time": ("sample", t), "term": np.array(TERMS, dtype=object),
                "latent": np.array(LATENTS, dtype=object)})
    if velocities:
        ds["latent_velocity"] = (("member", "sample", "latent"), z_dot.astype(np.float32))
    write_zarr(ds, tmp_path / "coefficients.zarr", provenance={"config": {"members": n_members}})
    return tmp_path / "coefficients.zarr", tmp_path / "dataset.zarr"


def test_rd_analysis_stage_writes_every_output(tmp_path):
    coeff_path, data_path = _write_stores(tmp_path)
    results = tmp_path / "results"
    outputs = dict(table_csv=results / "tables/table4.csv", table_md=results / "tables/table4.md",
                   fig_correlation=results / "figures/rd_fig4_correlation.png",
                   fig_kde=results / "figures/rd_fig1d_kde.png",
                   fig_dynamics=results / "figures/rd_fig1ef_dynamics.png",
                   frequency=results / "rd/frequency.csv",
                   identifiability=results / "tables/table4_identifiability.md",
                   sensitivity=results / "rd/sindy_sensitivity.csv",
                   vs_paper=results / "tables/table4_vs_paper.md")
    res = ra.rd_analysis_stage({"n_member_trajectories": 3, "sensitivity_members": 20},
                               coeff_path, data_path, outputs)
    for path in outputs.values():
        assert path.exists() and path.stat().st_size > 0
    for key in ("fig_correlation", "fig_kde", "fig_dynamics"):
        assert outputs[key].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    table = pd.read_csv(outputs["table_csv"])
    assert list(table["term"]) == TERMS and len(table.columns) == 9
    assert set(table["z1dot_status"]) <= {"robust", "depends"}
    # codes within [-1, 1]: sin z ≈ z, so the linear block is not fixed by the data
    sens = pd.read_csv(outputs["sensitivity"])
    assert len(sens) == 4 * (2 * 11) + 4 * (2 * 11) + 4 * (2 * 12)  # ridges x libraries x terms
    assert sens.groupby(["library", "ridge"]).ngroups == 12
    fitted = sens[sens["library"] == "as fitted"]
    assert fitted["linear_block_ill_posed"].all() and (fitted["condition_number"] > 1e2).all()
    report = outputs["identifiability"].read_text()
    assert "sin(z1)" in report and "≈ 0 (Gram eigenvalue" in report and "(ill-posed)" in report
    for setting in sens.groupby(["library", "ridge"]).first().itertuples():
        assert setting.omega_integrated == pytest.approx(0.9, rel=0.05), setting.Index
    md = outputs["table_md"].read_text()
    assert "mean model (significant terms): ω of the integrated model" in md
    assert "reproduces the dynamics" in md
    vs = outputs["vs_paper"].read_text()
    assert "| z1 | **-0.00 / -0.01** |" not in vs  # a zero coefficient is not significant
    assert "**0.47 / 0.48**" in vs and "**-1.98 / -1.98**" in vs  # the paper's column
    paper = vs.split("| paper: mean model |")[1].split("\n")[0].split("|")
    # the paper's linear block [[0.47, 1.00], [-1.98, -1.37]]: eigenvalues -0.45 ± 1.065i
    assert float(paper[0]) == pytest.approx(1.065, abs=2e-3)
    assert float(paper[1]) == pytest.approx(np.sqrt(1.98), abs=2e-3)
    assert "| ours: mean model (significant terms) |" in vs and "(reproduces)" in vs
    freq = pd.read_csv(outputs["frequency"])
    assert freq.loc[0, "source"] == "simulation"
    assert freq.loc[0, "omega"] == pytest.approx(0.9, rel=0.01)
    traj = freq[freq["method"].str.startswith("integrated")].set_index("source")["omega"]
    assert set(traj.index) >= {"mean model (all terms)", "mode model (significant terms)"}
    assert traj["mean model (all terms)"] == pytest.approx(0.9, rel=0.01)
    assert traj["mean model (significant terms)"] == pytest.approx(0.9, rel=0.01)
    lin = freq[freq["method"] == "eigenvalues of the linear block"].set_index("source")
    assert lin.loc["mean model (all terms)", "omega"] == pytest.approx(0.9, rel=0.02)
    assert lin["note"].str.startswith("ill-posed").all()
    # on a circle z1 ≈ z1^3 + z1 z2^2 too, which moves ξ[z1] without ξ[sin z1]: the
    # Jacobian at 0 is not fixed either
    jac = freq[freq["method"].str.contains("Jacobian at 0")]
    assert jac["note"].str.startswith("ill-posed").all()
    sidecar = results / "provenance/rd/frequency.csv.json"
    assert json.loads(sidecar.read_text())["stage"] == "rd_analysis"
    assert res["equations"]["mean model (significant terms)"][0].startswith("dz1/dt = -0.9")


def test_identifiability_report_needs_stored_velocities(tmp_path):
    coeff_path, data_path = _write_stores(tmp_path, n_members=10, velocities=False)
    outputs = {k: tmp_path / f"out/{k}.{ext}" for k, ext in
               (("table_csv", "csv"), ("table_md", "md"), ("fig_correlation", "png"),
                ("fig_kde", "png"), ("fig_dynamics", "png"), ("frequency", "csv"),
                ("identifiability", "md"), ("sensitivity", "csv"), ("vs_paper", "md"))}
    res = ra.rd_analysis_stage({"n_member_trajectories": 1}, coeff_path, data_path, outputs)
    assert res["identifiability"] is None
    assert "no `latent_velocity`" in outputs["identifiability"].read_text()
    assert "z1dot_status" not in pd.read_csv(outputs["table_csv"]).columns


def test_rd_analysis_stage_rejects_a_wrong_store(tmp_path):
    from eae.io import write_zarr

    coeff_path, data_path = _write_stores(tmp_path)
    write_zarr(xr.Dataset({"loss": ("member", np.zeros(3))}), tmp_path / "bad.zarr")
    with pytest.raises(ValueError, match="coefficients"):
        ra.rd_analysis_stage({}, tmp_path / "bad.zarr", data_path,
                             {k: tmp_path / f"{k}.out" for k in
                              ("table_csv", "table_md", "fig_correlation", "fig_kde",
                               "fig_dynamics", "frequency", "identifiability",
                               "sensitivity", "vs_paper")})
    assert not (tmp_path / "table_csv.out").exists()


def test_a_functional_orthogonal_to_every_near_null_direction_is_well_posed():
    from eae import identifiability as ident
    from eae.sindy import library_names

    names = library_names()
    rng = np.random.default_rng(0)
    z = rng.uniform(-0.05, 0.05, (400, 2))  # tiny codes: sin z = z to 1e-4, nothing else
    theta = ident.make_library("as fitted", names).theta(z)
    combos = ident.near_null_combinations(theta)
    assert combos and all(lam < ident.NULL_EIGENVALUE for lam, _, _ in combos)
    # z − sin z ≈ 0 leaves ξ[z] and ξ[sin z] apart unfixed, but not their sum
    assert ident.ill_posed(combos, names, {"z1": 1.0}, theta)
    assert not ident.ill_posed(combos, names, {"z1": 1.0, "sin(z1)": 1.0}, theta)
    assert not ident.ill_posed([], names, {"z1": 1.0}, theta)

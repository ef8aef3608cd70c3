"""Temperature sweep: point tags, per-point configs, the recommendation rule, one tiny
point end to end with the table, and that adding a temperature plans only that point."""

import copy
import json
import math
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from helpers import planned_jobs, run_snakemake  # noqa: E402
import xarray as xr  # noqa: E402

from eae import sweep  # noqa: E402
from eae import workflow as wf  # noqa: E402
from eae.config import ConfigError, check_config, validate_config  # noqa: E402


TINY_MODEL = {"kind": "mlp", "encoder_hidden": [8], "latent_dim": 3, "decoder_hidden": [8]}


def sweep_cfg(**over):
    cfg = validate_config({"sweep": over})["sweep"]
    return cfg


# --------------------------------------------------------------------------- tags


@pytest.mark.parametrize("temperature, tag", [(1e-8, "T1e-08"), (2.5e-7, "T2.5e-07"),
                                              (1.0, "T1e+00"), (1.234567e-5, "T1.234567e-05")])
def test_constant_tag_round_trip(temperature, tag):
    assert sweep.constant_tag(temperature) == tag
    assert sweep.parse_tag(tag) == {"kind": "constant", "temperature": temperature}


def test_annealed_tag_round_trip_and_bad_tags():
    tag = sweep.annealed_tag(1e-6, 1e-8, "geometric")
    assert tag == "anneal_1e-06_1e-08_geometric"
    assert sweep.parse_tag(tag) == {"kind": "annealed", "from": 1e-6, "to": 1e-8,
                                    "schedule": "geometric"}
    assert sweep.parse_tag("anneal_1e-05_3e-09_linear")["schedule"] == "linear"
    for bad in ("T", "Tabc", "T-1e-08", "anneal_1e-06_1e-08", "anneal_1e-06_1e-08_cosine", "x1e-08"):
        with pytest.raises(ValueError):
            sweep.parse_tag(bad)
    with pytest.raises(ValueError, match="schedule"):
        sweep.annealed_tag(1e-6, 1e-8, "constant")


def test_default_points_and_duplicates():
    cfg = sweep_cfg(temperatures=[1e-7, 1e-9, 1e-5])
    # default annealed run: hottest to coldest, geometric
    assert sweep.point_tags(cfg) == ["T1e-07", "T1e-09", "T1e-05", "anneal_1e-05_1e-09_geometric"]
    assert sweep.point_tags(sweep_cfg(temperatures=[1e-7], annealed=[])) == ["T1e-07"]
    with pytest.raises(ValueError, match="twice"):
        sweep.point_tags(sweep_cfg(temperatures=[1e-7, 1.0000000001e-7]))


# --------------------------------------------------------------------------- configs


def experiment_eae():
    full = validate_config({"mnist": {"eae": {
        "sampler": {"temperature": 3e-8, "final_temperature": 1e-9, "schedule": "linear", "dt": 0.1},
        "train": {"decoder_updates": 40, "encoder_steps": 7, "batch_size": 16, "chains": 1},
        "ensemble": {"members": 500, "thin": 3, "chunk_members": 11},
    }}})
    return full["mnist"]["eae"]


def test_point_config_merges_over_the_experiment():
    eae = experiment_eae()
    before = copy.deepcopy(eae)
    cfg = sweep_cfg(temperatures=[1e-8, 1e-6], annealed=[{"from": 1e-6, "to": 1e-8, "schedule": "linear"}],
                    train={"decoder_updates": 5, "chains": 3}, ensemble={"members": 12, "thin": 2})

    const = sweep.point_config(eae, cfg, "T1e-06")
    assert const["sampler"]["temperature"] == 1e-6
    # the experiment's annealing must not leak into a constant point
    assert const["sampler"]["final_temperature"] is None
    assert const["sampler"]["schedule"] == "constant"
    assert const["sampler"]["dt"] == 0.1  # everything else from <experiment>.eae
    assert const["model"] == eae["model"]
    assert const["train"]["decoder_updates"] == 5 and const["train"]["chains"] == 3
    # null overrides keep the experiment's value
    assert const["train"]["encoder_steps"] == 7 and const["train"]["batch_size"] == 16
    assert const["ensemble"] == {"members": 12, "thin": 2, "chunk_members": 11, "burn_in": 0, "tconf_draws": 100}

    ann = sweep.point_config(eae, cfg, "anneal_1e-06_1e-08_linear")
    assert ann["sampler"]["temperature"] == 1e-6
    assert ann["sampler"]["final_temperature"] == 1e-8
    assert ann["sampler"]["schedule"] == "linear"
    assert ann["train"] == const["train"]

    assert eae == before  # not mutated
    with pytest.raises(ValueError, match="not configured"):
        sweep.point_config(eae, cfg, "T1e-07")


def test_point_params_do_not_depend_on_the_other_points():
    config = validate_config({"sweep": {"temperatures": [1e-9, 1e-8, 1e-6]}})
    grown = copy.deepcopy(config)
    grown["sweep"]["temperatures"].append(1e-7)
    for tag in ("T1e-08", "anneal_1e-06_1e-09_geometric"):
        assert sweep.point_params(config, "mnist", tag) == sweep.point_params(grown, "mnist", tag)
    grown["analysis"]["dpi"] = 33  # a figure setting reruns no point
    assert sweep.point_params(config, "mnist", "T1e-08") == sweep.point_params(grown, "mnist", "T1e-08")
    with pytest.raises(ValueError, match="unknown experiment 'no_such_experiment'"):
        sweep.point_params(config, "no_such_experiment", "T1e-08")
    assert wf.sweep_inputs("frey") == {"data": "results/data/frey.zarr"}


def test_every_experiment_with_data_is_a_sweep_experiment():
    assert set(wf.sweep_experiments()) == {"mnist", "frey", "faces", "rd"}
    assert wf.sweep_inputs("rd") == {"data": "results/rd/dataset.zarr"}
    for name in ("faces", "rd"):
        assert validate_config({"sweep": {"experiment": name}})["sweep"]["experiment"] == name
    with pytest.raises(ConfigError, match="sweep.experiment = 'no_such_experiment'; allowed: "
                                          "mnist, frey, faces, rd, digits"):
        check_config({"sweep": {"experiment": "no_such_experiment"},
                      "datasets": {"digits": {"path": "data/digits.npz"}}}, check_files=False)
    config = check_config({"sweep": {"experiment": "digits"},
                           "datasets": {"digits": {"path": "data/digits.npz"}}}, check_files=False)
    assert config["sweep"]["experiment"] == "digits"


def test_faces_point_params_start_from_the_faces_run_config():
    from eae.faces import ensemble_config

    config = validate_config({
        "faces": {"temperatures": [1e-4, 1e-6], "sampler": {"dt": 0.05, "final_temperature_factor": 0.1},
                  "train": {"decoder_updates": 9, "encoder_epochs": 2}, "ensemble": {"n_test": 7}},
        "sweep": {"experiment": "faces", "temperatures": [1e-8, 1e-6], "train": {"chains": 3}},
    })
    params = sweep.point_params(config, "faces", "T1e-08")
    eae = params["eae"]
    assert eae == sweep.point_config(ensemble_config(config["faces"], 1e-8), config["sweep"], "T1e-08")
    assert eae["temperature"] == 1e-8 and eae["sampler"]["temperature"] == 1e-8
    # constant point: the faces' own annealing (final_temperature_factor) is superseded
    assert eae["sampler"]["final_temperature"] is None and eae["sampler"]["schedule"] == "constant"
    assert "final_temperature_factor" not in eae["sampler"] and eae["sampler"]["dt"] == 0.05
    assert eae["model"] == {**config["faces"]["model"], "kind": "conv"}
    assert eae["train"]["decoder_updates"] == 9 and eae["train"]["encoder_epochs"] == 2
    assert eae["train"]["chains"] == 3  # sweep.train over faces.train
    assert eae["ensemble"]["n_test"] == 7 and eae["ensemble"]["members"] == 100  # sweep.ensemble
    assert "temperatures" not in eae and "report" not in eae and "data" not in eae
    ann = sweep.point_params(config, "faces", "anneal_1e-06_1e-08_geometric")["eae"]
    assert ann["temperature"] == 1e-6 and ann["sampler"]["temperature"] == 1e-6
    assert ann["sampler"]["final_temperature"] == 1e-8 and ann["sampler"]["schedule"] == "geometric"
    # the faces' own temperatures and the sweep's other points do not enter
    grown = copy.deepcopy(config)
    grown["faces"]["temperatures"] = [1e-3]
    grown["sweep"]["temperatures"].append(1e-7)
    assert sweep.point_params(grown, "faces", "T1e-08") == params


def test_rd_point_params_start_from_rd_eae():
    config = validate_config({
        "rd": {"eae": {"sampler": {"temperature": 3e-7, "dt": 0.07},
                       "loss": {"lambda_x_dot": 0.25}, "ensemble": {"test_loss": True}}},
        "sweep": {"experiment": "rd", "temperatures": [1e-8, 1e-6], "train": {"decoder_updates": 4}},
    })
    params = sweep.point_params(config, "rd", "T1e-06")
    eae, rd = params["eae"], config["rd"]["eae"]
    assert eae == sweep.point_config(rd, config["sweep"], "T1e-06")
    assert eae["sampler"]["temperature"] == 1e-6 and eae["sampler"]["dt"] == 0.07
    assert eae["sampler"]["schedule"] == "constant" and eae["sampler"]["final_temperature"] is None
    assert eae["model"] == rd["model"] and eae["loss"] == rd["loss"]
    assert eae["loss"]["lambda_x_dot"] == 0.25 and eae["ensemble"]["test_loss"] is True
    assert eae["train"]["decoder_updates"] == 4
    assert eae["train"]["encoder_steps"] == rd["train"]["encoder_steps"]
    assert "temperature" not in eae  # no top-level temperature where the experiment has none
    # not mnist.eae's settings
    assert eae["model"] != sweep.point_params(config, "mnist", "T1e-06")["eae"]["model"]
    grown = copy.deepcopy(config)
    grown["sweep"]["temperatures"].append(1e-7)
    grown["mnist"]["eae"]["sampler"]["dt"] = 0.01
    assert sweep.point_params(grown, "rd", "T1e-06") == params


# --------------------------------------------------------------------------- rule


def table(mses, temps=(1e-9, 1e-8, 1e-7, 1e-6), extra=()):
    rows = [{"point": sweep.constant_tag(t), "kind": "constant", "temperature": t, "test_mse": m}
            for t, m in zip(temps, mses)]
    rows += list(extra)
    return pd.DataFrame(rows).sample(frac=1.0, random_state=1)  # order must not matter


def test_rule_picks_the_hottest_qualifying_temperature():
    # threshold 1.5 x 0.25 = 0.375 exactly: equality qualifies
    anneal = {"point": "anneal_1e-06_1e-09_geometric", "kind": "annealed", "temperature": 1e-9,
              "test_mse": 0.01}
    rec = sweep.recommend(table([0.25, 0.3, 0.375, 0.5], extra=[anneal]), 1.5)
    assert rec["recommended_temperature"] == 1e-7 and rec["recommended_point"] == "T1e-07"
    assert rec["threshold_mse"] == 0.375 and rec["coldest_test_mse"] == 0.25
    assert not rec["fallback"]
    assert [c["qualifies"] for c in rec["candidates"]] == [True, True, True, False]
    assert "mse_factor" in rec["rule"] and "coldest" in rec["rule"]
    # not monotone: the hottest qualifying one wins over a failing middle one
    rec = sweep.recommend(table([0.25, 0.5, 0.3], temps=(1e-9, 1e-8, 1e-7)), 1.5)
    assert rec["recommended_temperature"] == 1e-7
    # tie in MSE between two qualifying temperatures: the hotter
    rec = sweep.recommend(table([0.25, 0.3, 0.3], temps=(1e-9, 1e-8, 1e-7)), 1.5)
    assert rec["recommended_temperature"] == 1e-7
    # the same temperature twice (hand-made table): the lower MSE
    rec = sweep.recommend(table([0.25, 0.3, 0.28], temps=(1e-9, 1e-7, 1e-7)), 1.5)
    assert rec["recommended_test_mse"] == 0.28


def test_rule_falls_back_to_the_coldest():
    rec = sweep.recommend(table([0.25, 0.3, 0.375]), 0.5)  # nobody, not even the coldest
    assert rec["fallback"] and rec["recommended_temperature"] == 1e-9
    rec = sweep.recommend(table([math.nan, 0.3, 0.375]), 1.5)  # coldest failed to score
    assert rec["fallback"] and rec["recommended_point"] == "T1e-09"
    rec = sweep.recommend(table([0.25, math.nan, 0.375]), 1.5)  # a NaN never qualifies
    assert rec["recommended_temperature"] == 1e-7
    assert rec["candidates"][1]["qualifies"] is False
    with pytest.raises(ValueError, match="constant"):
        sweep.recommend(table([], extra=[{"point": "a", "kind": "annealed", "temperature": 1.0,
                                          "test_mse": 1.0}]), 1.5)


def test_rule_leaves_out_points_not_at_their_temperature():
    flagged = "FLAGGED: train"
    frame = table([0.25, 0.3, 0.375, 0.5]).assign(**{"T flag": "ok"})
    frame.loc[frame["point"] == "T1e-09", "T flag"] = flagged  # the coldest: a noise-heated run
    rec = sweep.recommend(frame, 1.5)
    # the reference is now the coldest unflagged run, 0.3 -> threshold 0.45
    assert rec["coldest_point"] == "T1e-08" and rec["threshold_mse"] == pytest.approx(0.45)
    assert rec["recommended_point"] == "T1e-07"
    assert rec["excluded"] == [{"point": "T1e-09", "temperature": 1e-9, "T flag": flagged,
                                "improper": None}]
    assert "T1e-09" not in [c["point"] for c in rec["candidates"]]
    frame.loc[frame["point"] == "T1e-07", "T flag"] = flagged  # the winner is flagged too
    assert sweep.recommend(frame, 1.5)["recommended_point"] == "T1e-08"
    # every point flagged: nothing is recommended, and the reason says why
    rec = sweep.recommend(frame.assign(**{"T flag": flagged}), 1.5)
    assert rec["recommended_point"] is None and rec["recommended_temperature"] is None
    assert "flagged" in rec["reason"] and len(rec["excluded"]) == 4
    # an improper (non-stationary) ensemble is left out as well, even at its target T
    frame = frame.assign(**{"T flag": "ok", "improper": "ok"})
    frame.loc[frame["point"] == "T1e-06", "improper"] = "IMPROPER: ensemble"
    rec = sweep.recommend(frame, 1.5)
    assert [e["point"] for e in rec["excluded"]] == ["T1e-06"]
    assert rec["recommended_point"] == "T1e-07"
    # tables from before the measurement (no column, or NaN) are not flagged
    assert sweep.recommend(table([0.25, 0.3]), 1.5)["excluded"] == []


def test_convergence_flags():
    row = {"rhat_loss": 1.01, "ess_bulk_loss": 80.0, "ess_tail_loss": 30.0,
           "rhat_latent": 1.3, "ess_bulk_latent": math.nan, "ess_tail_latent": 90.0}
    assert sweep.convergence_flags(row, 1.05, 50) == "R̂: latent; ESS: loss"
    assert sweep.convergence_flags(row, 1.0, 95) == "R̂: loss, latent; ESS: loss, latent"
    assert sweep.convergence_flags(row, 1.5, 10) == ""


# --------------------------------------------------------------------------- one point


def write_tiny_images(path, n_train=48, n_val=8, n_test=24, shape=(6, 6), seed=0):
    """A tiny MNIST-like store (images in [0, 1], 3 labelled classes, split flags)."""
    from eae.io import write_zarr

    rng = np.random.default_rng(seed)
    n = n_train + n_val + n_test
    pixels = shape[0] * shape[1]
    labels = np.tile(np.arange(3), n // 3 + 1)[:n].astype(np.int64)
    images = np.clip(rng.random((3, pixels))[labels] + 0.05 * rng.standard_normal((n, pixels)), 0, 1)
    split = np.repeat(np.array([0, 1, 2], np.int8), [n_train, n_val, n_test])
    write_zarr(xr.Dataset({
        "images": (("sample", "row", "col"), images.reshape(n, *shape).astype(np.float32)),
        "split": (("sample",), split, {"flag_values": [0, 1, 2], "flag_meanings": "train val test"}),
        "labels": (("sample",), labels),
    }, coords={"sample": np.arange(n)}), path)


@pytest.fixture(scope="module")
def tiny_point(tmp_path_factory):
    """The annealed point of a tiny sweep, run by the stage."""
    root = tmp_path_factory.mktemp("sweep")
    data = root / "results" / "data" / "mnist.zarr"
    write_tiny_images(data)
    config = validate_config({
        "mnist": {"eae": {"model": TINY_MODEL,
                          "sampler": {"temperature": 1e-6, "dt": 0.1, "chain_length": 3},
                          "train": {"decoder_updates": 2, "encoder_steps": 4, "batch_size": 8}}},
        "analysis": {"probe": {"k": 3, "folds": 3}, "chunk_members": 3},
        "sweep": {"temperatures": [1e-8, 1e-6], "ensemble": {"members": 10, "thin": 1},
                  "diagnostics": {"test_points": 4, "max_elements": 6}},
    })
    tag = "anneal_1e-06_1e-08_geometric"
    params = sweep.point_params(config, "mnist", tag)
    paths = wf.sweep_point_paths("mnist", tag, root / "results")
    outputs = {k: paths[k] for k in sweep.OUTPUT_KEYS}
    frame = sweep.sweep_point_stage(params, {"data": str(data)}, outputs,
                                    checkpoint_dir=paths["checkpoint"])
    return {"root": root, "frame": frame, "paths": paths, "config": config}


def test_point_stage_writes_a_row_with_finite_numbers(tiny_point):
    frame, paths = tiny_point["frame"], tiny_point["paths"]
    assert list(frame.columns) == sweep.ROW_COLUMNS and len(frame) == 1
    saved = pd.read_csv(paths["row"])
    row = saved.iloc[0]
    assert row["point"] == "anneal_1e-06_1e-08_geometric" and row["kind"] == "annealed"
    assert row["temperature"] == pytest.approx(1e-8) and row["initial_temperature"] == pytest.approx(1e-6)
    # annealed geometrically over all 2 x 4 training steps: the last one (step 7) is at
    # 1e-6 * (1e-8 / 1e-6) ** (7 / 8); ensemble sampling then runs at 1e-8
    assert row["temperature_reached"] == pytest.approx(1e-6 * 1e-2 ** (7 / 8), rel=1e-6)
    assert row["chains"] == 2 and row["draws"] == 5 and row["n_members"] == 10
    assert row["n_test"] == 24 and row["latent_dim"] == 3
    for col in ("test_mse", "loss_mean", "loss_sd", "loss_spread", "rhat", "ess_bulk", "ess_tail",
                "rhat_loss", "ess_bulk_kinetic_temperature", "rhat_latent", "probe_accuracy",
                "tkin_ratio", "wall_s", "train_s", "T_kin/T train", "T_conf/T train",
                "T_kin/T ensemble", "T_conf/T ensemble"):
        assert np.isfinite(row[col]), col
    assert row["T flag"] == "ok" or row["T flag"].startswith("FLAGGED: ")
    assert 0 < row["test_mse"] < 1
    assert 0 <= row["active_units"] <= 3
    assert 0 <= row["probe_accuracy"] <= 1
    assert row["loss_spread"] >= 0 and row["loss_sd"] > 0
    assert row["rhat"] >= max(row["rhat_loss"], row["rhat_latent"]) - 1e-12
    assert row["ess_bulk"] <= row["ess_bulk_loss"] + 1e-9
    assert row["wall_s"] >= row["train_s"] + row["ensemble_s"]
    # the loss spread is that of the store's members
    from eae.io import open_zarr

    loss = np.asarray(open_zarr(paths["ensemble"])["loss"].values, np.float64).ravel()
    assert row["loss_sd"] == pytest.approx(loss.std(ddof=1), rel=1e-6)
    conv = pd.read_csv(paths["convergence"])
    assert set(conv["variable"]) == {"loss", "kinetic_temperature", "latent"}
    assert conv.set_index("variable").loc["latent", "analysed"] == 6  # max_elements
    assert (tiny_point["root"] / "results" / "provenance" / "sweep" / "mnist" /
            "anneal_1e-06_1e-08_geometric" / "row.csv.json").is_file()
    assert (paths["checkpoint"] / "checkpoint.npz").is_file()


def test_point_resumes_training_from_its_checkpoint(tiny_point, tmp_path, caplog):
    """A rerun (killed job, or changed ensemble settings) continues from the training
    checkpoint instead of retraining: the ensemble block is not in its fingerprint."""
    import logging

    config = copy.deepcopy(tiny_point["config"])
    config["sweep"]["ensemble"]["members"] = 8
    tag = "anneal_1e-06_1e-08_geometric"
    params = sweep.point_params(config, "mnist", tag)
    paths = wf.sweep_point_paths("mnist", tag, tmp_path / "results")
    outputs = {k: paths[k] for k in sweep.OUTPUT_KEYS}
    data = tiny_point["root"] / "results" / "data" / "mnist.zarr"
    with caplog.at_level(logging.INFO, logger="eae"):
        frame = sweep.sweep_point_stage(params, {"data": str(data)}, outputs,
                                        checkpoint_dir=tiny_point["paths"]["checkpoint"])
    assert "resuming from" in caplog.text and "at decoder update 2" in caplog.text
    first = pd.read_csv(tiny_point["paths"]["model"] / "history.csv")
    pd.testing.assert_frame_equal(pd.read_csv(paths["model"] / "history.csv"), first)
    assert frame["n_members"].iloc[0] == 8 and frame["draws"].iloc[0] == 4


def test_table_stage_recommends_and_writes_everything(tiny_point, tmp_path):
    row = tiny_point["frame"]
    cold = row.assign(point="T1e-08", kind="constant", schedule="constant", temperature=1e-8,
                      initial_temperature=1e-8, test_mse=0.02, rhat_latent=1.5)
    warm = row.assign(point="T1e-07", kind="constant", schedule="constant", temperature=1e-7,
                      initial_temperature=1e-7, test_mse=0.029)
    hot = row.assign(point="T1e-06", kind="constant", schedule="constant", temperature=1e-6,
                     initial_temperature=1e-6, test_mse=0.031)
    cold, warm, hot = (f.assign(**{"T flag": "ok"}) for f in (cold, warm, hot))
    # the coldest and best-scoring point ran hot: it must not set the threshold
    noisy = cold.assign(point="T1e-09", temperature=1e-9, initial_temperature=1e-9,
                        test_mse=0.001, **{"T flag": "FLAGGED: train, ensemble"})
    csvs = []
    for frame in (hot, cold, row, warm, noisy):
        path = tmp_path / "rows" / f"{frame['point'].iloc[0]}.csv"
        path.parent.mkdir(exist_ok=True)
        frame.to_csv(path, index=False)
        csvs.append(path)
    out = {"csv": tmp_path / "results" / "sweep" / "mnist" / "sweep.csv",
           "md": tmp_path / "results" / "tables" / "sweep_mnist.md",
           "figure": tmp_path / "results" / "figures" / "sweep_mnist.png",
           "json": tmp_path / "results" / "sweep" / "mnist" / "recommended.json"}
    frame, rec = sweep.sweep_table_stage(csvs, {"mse_factor": 1.5, "rhat_max": 1.05, "ess_min": 0,
                                                "dpi": 40}, out)
    assert list(frame["point"]) == ["T1e-09", "T1e-08", "T1e-07", "T1e-06",
                                    "anneal_1e-06_1e-08_geometric"]
    assert rec["recommended_point"] == "T1e-07"  # 0.029 <= 0.03 < 0.031
    assert [e["point"] for e in rec["excluded"]] == ["T1e-09"]
    saved = json.loads(out["json"].read_text())
    assert saved["recommended_temperature"] == 1e-7 and saved["threshold_mse"] == pytest.approx(0.03)
    assert saved["rule"] == sweep.RULE and saved["mse_factor"] == 1.5
    rhat_flags = frame.set_index("point").loc["T1e-08", "flags"].split(";")[0]
    assert rhat_flags.startswith("R̂:") and "latent" in rhat_flags  # rhat_latent 1.5 > 1.05
    md = out["md"].read_text()
    assert "Recommended T = 1e-07" in md and "mse_factor = 1.5" in md
    assert "`T1e-07` **(recommended)**" in md
    assert "left out as flagged: `T1e-09`" in md and "**flagged: train, ensemble**" in md
    assert pd.read_csv(out["csv"])["point"].tolist() == list(frame["point"])
    assert out["figure"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "results" / "provenance" / "sweep" / "mnist" / "recommended.json.json").is_file()
    # all flagged: the stage still writes its outputs, recommending nothing
    for path in csvs:
        pd.read_csv(path).assign(**{"T flag": "FLAGGED: ensemble"}).to_csv(path, index=False)
    frame, rec = sweep.sweep_table_stage(csvs, {"mse_factor": 1.5, "rhat_max": 1.05, "ess_min": 0,
                                                "dpi": 40}, out)
    assert rec["recommended_point"] is None
    assert "**No recommendation**: every constant-temperature point is flagged" in out["md"].read_text()
    assert json.loads(out["json"].read_text())["recommended_point"] is None


def _summary_store(path, variables, chains=2, draws=6, seed=0):
    from eae.io import write_zarr
    rng = np.random.default_rng(seed)
    data = {"loss": (("chain", "draw"), rng.random((chains, draws))),
            "kinetic_temperature": (("chain", "draw"), 1e-6 * (1 + 0.1 * rng.random((chains, draws))))}
    data.update({name: (("chain", "draw", "sample", dim), rng.standard_normal((chains, draws, 5, 2)))
                 for name, dim in variables})
    coords = {"latent": np.array(["z1", "z2"], dtype=object)} if any(d == "latent" for _, d in variables) else {}
    write_zarr(xr.Dataset(data, coords=coords), path)
    return path


def test_ensemble_summary_uses_the_stores_code_variable(tmp_path):
    # the SINDy store's codes: latent_code (chain, draw, sample, latent)
    row, table = sweep.ensemble_summary(_summary_store(tmp_path / "rd.zarr", [("latent_code", "latent")]),
                                        test_points=3, max_elements=4)
    assert list(table["variable"]) == ["loss", "kinetic_temperature", "latent"]
    assert table.set_index("variable").loc["latent", "analysed"] == 4  # of 3 points x 2 units
    assert np.isfinite(row["rhat_latent"]) and np.isfinite(row["ess_bulk_latent"])
    assert row["n_members"] == 12 and row["draws"] == 6
    # no code variable at all: loss and T_kin only, latent diagnostics NaN
    row, table = sweep.ensemble_summary(_summary_store(tmp_path / "none.zarr", []))
    assert list(table["variable"]) == ["loss", "kinetic_temperature"]
    assert math.isnan(row["rhat_latent"]) and np.isfinite(row["rhat_loss"])
    assert row["rhat"] == pytest.approx(max(row["rhat_loss"], row["rhat_kinetic_temperature"]))


def _run_point(root, config, experiment, tag, data):
    params = sweep.point_params(config, experiment, tag)
    paths = wf.sweep_point_paths(experiment, tag, root / "results")
    outputs = {k: paths[k] for k in sweep.OUTPUT_KEYS}
    frame = sweep.sweep_point_stage(params, {"data": str(data)}, outputs,
                                    checkpoint_dir=paths["checkpoint"])
    return frame, paths


@pytest.fixture(scope="module")
def rd_point(tmp_path_factory):
    """A constant-temperature point of the SINDy-EAE on a tiny synthetic oscillator."""
    from eae.io import write_zarr
    from eae.sindy import synthetic_oscillator
    root = tmp_path_factory.mktemp("sweep_rd")
    data = root / "results" / "rd" / "dataset.zarr"
    write_zarr(synthetic_oscillator(n=5, n_snapshots=300, dt=0.1, n_test=40, n_train=150,
                                    n_val=30), data)
    config = validate_config({
        "rd": {"eae": {"model": {"encoder_hidden": [16], "decoder_hidden": [16]},
                       "sampler": {"dt": 0.1, "chain_length": 3},
                       "train": {"decoder_updates": 3, "encoder_steps": 5, "batch_size": 32},
                       "ensemble": {"chunk_members": 3}}},
        "analysis": {"chunk_members": 3},
        "sweep": {"experiment": "rd", "temperatures": [1e-7], "annealed": [],
                  "ensemble": {"members": 10, "thin": 1},
                  "diagnostics": {"test_points": 4, "max_elements": 6}},
    })
    frame, paths = _run_point(root, config, "rd", "T1e-07", data)
    return {"frame": frame, "paths": paths, "data": data}


def test_rd_point_writes_a_row(rd_point):
    from eae.io import open_ensemble
    from eae.metrics import load_model
    from eae.rd_data import load_rd_split
    frame, paths = rd_point["frame"], rd_point["paths"]
    assert list(frame.columns) == sweep.ROW_COLUMNS
    row = pd.read_csv(paths["row"]).iloc[0]
    assert row["experiment"] == "rd" and row["point"] == "T1e-07" and row["kind"] == "constant"
    assert row["temperature"] == pytest.approx(1e-7) and row["temperature_reached"] == pytest.approx(1e-7)
    assert (row["latent_dim"], row["n_test"], row["chains"], row["draws"]) == (2, 40, 2, 5)
    assert math.isnan(row["probe_accuracy"])  # no labels
    for col in ("test_mse", "train_loss_final", "val_loss_final", "code_scale", "loss_sd",
                "rhat_loss", "rhat_latent", "ess_bulk_latent", "rhat", "tkin_ratio", "train_s",
                "ensemble_s"):
        assert np.isfinite(row[col]), col
    assert 0 <= row["active_units"] <= 2 and 0 <= row["active_units_all_samples"] <= 2
    assert 1 <= row["active_units_relative"] <= 2 and 0 <= row["pcs_99"] <= 2
    # test MSE: x on the test split against the decoder of the ensemble-mean latent_code
    ens = open_ensemble(paths["ensemble"])
    decoder = load_model(paths["model"] / "decoder.keras")
    x = load_rd_split(rd_point["data"], "test")["x"]
    recon = np.asarray(decoder(ens["latent_code_mean"].values.astype(np.float32)))
    assert row["test_mse"] == pytest.approx(np.mean((recon.astype(np.float64) - x) ** 2), rel=1e-4)
    history = pd.read_csv(paths["model"] / "history.csv")
    assert row["train_loss_final"] == pytest.approx(history["loss_mean"].iloc[-1])
    conv = pd.read_csv(paths["convergence"]).set_index("variable")
    assert list(conv.index) == ["loss", "kinetic_temperature", "latent"]
    assert conv.loc["latent", "analysed"] == 6


@pytest.fixture(scope="module")
def faces_point(tmp_path_factory):
    """An annealed point of the faces EAE on 30 tiny LFW faces (tests/test_faces.py's TINY)."""
    from test_faces import TINY
    from eae.faces import prepare_lfw
    root = tmp_path_factory.mktemp("sweep_faces")
    config = validate_config({
        "faces": {**{k: TINY[k] for k in ("data", "model", "sampler")},
                  "train": {**TINY["train"], "decoder_updates": 2},
                  "ensemble": {"chunk_members": 4, "n_test": 6, "batch_size": 4}},
        "analysis": {"chunk_members": 3},
        "sweep": {"experiment": "faces", "temperatures": [1e-6, 1e-4],
                  "ensemble": {"members": 8, "thin": 1},
                  "diagnostics": {"test_points": 3, "max_elements": 6}},
    })
    data = prepare_lfw(config["faces"]["data"], root / "results" / "data" / "faces.zarr")
    tag = "anneal_1e-04_1e-06_geometric"
    frame, paths = _run_point(root, config, "faces", tag, data)
    return {"frame": frame, "paths": paths, "data": data}


def test_faces_point_writes_a_row_on_the_faces_scale(faces_point):
    from eae.faces import FacesRun, faces_metrics
    frame, paths = faces_point["frame"], faces_point["paths"]
    assert list(frame.columns) == sweep.ROW_COLUMNS
    row = pd.read_csv(paths["row"]).iloc[0]
    assert row["experiment"] == "faces" and row["kind"] == "annealed"
    assert row["temperature"] == pytest.approx(1e-6) and row["initial_temperature"] == pytest.approx(1e-4)
    assert row["latent_dim"] == 8 and row["n_test"] == 6 and row["n_members"] == 8
    assert math.isnan(row["probe_accuracy"])  # no labels
    for col in ("test_mse", "train_loss_final", "val_loss_final", "temperature_reached",
                "rhat_latent", "rhat_loss", "loss_sd", "tkin_ratio"):
        assert np.isfinite(row[col]), col
    assert 0 <= row["active_units"] <= 8 and 0 <= row["active_units_relative"] <= 8
    # the test MSE is faces.csv's: decoder of the ensemble-mean code vs the [0, 1] faces
    report, _, _ = faces_metrics(FacesRun(1e-6, paths["model"], paths["ensemble"]), faces_point["data"])
    assert row["test_mse"] == pytest.approx(report["test_mse"], rel=1e-5)
    assert 0 < row["test_mse"] < 1 and set(pd.read_csv(paths["convergence"])["variable"]) == {"loss", "kinetic_temperature", "latent"}


# --------------------------------------------------------------------------- workflow


def snakemake(repo_root, workdir, *args):
    result = run_snakemake(workdir, *args, configfiles=[repo_root / "config" / "config.yaml"])
    return result.stdout + result.stderr


def test_adding_a_temperature_plans_only_that_point(repo_root, tmp_path):
    """Fake outputs of a finished sweep are touched into Snakemake's records (params
    included), then dry runs show what each config change would rerun."""
    import yaml

    (tmp_path / "config").symlink_to(repo_root / "config")
    base = {"enabled": True, "temperatures": [1e-9, 1e-8, 1e-6],
            "annealed": [{"from": 1e-6, "to": 1e-9, "schedule": "geometric"}]}
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"sweep": base}))
    tags = sweep.point_tags(validate_config({"sweep": base})["sweep"])
    assert len(tags) == 4
    (tmp_path / "results" / "data" / "mnist.zarr").mkdir(parents=True)
    for tag in tags:
        paths = wf.sweep_point_paths("mnist", tag, tmp_path / "results")
        for key in ("model", "ensemble"):
            paths[key].mkdir(parents=True)
        for key in ("row", "convergence"):
            paths[key].write_text("x\n")
    targets = [str(p) for p in wf.sweep_table_paths("mnist").values()]
    for target in targets:
        (tmp_path / target).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / target).write_text("x\n")
    snakemake(repo_root, tmp_path, "base.yaml", "--touch", "--cores", "1",
              "--forcerun", "sweep_point", "sweep_table", "--", *targets)

    def plan(**change) -> dict[str, int]:
        (tmp_path / "change.yaml").write_text(yaml.safe_dump({"sweep": {**base, **change}}))
        return planned_jobs(snakemake(repo_root, tmp_path, "change.yaml", "-n", "--", *targets))

    assert plan() == {}
    # a setting every point depends on reruns every point (so the records hold params)
    assert plan(ensemble={"members": 7}) == {"sweep_point": 4, "sweep_table": 1}
    # a temperature inside the range: only the new point and the table
    assert plan(temperatures=[1e-9, 1e-8, 1e-7, 1e-6]) == {"sweep_point": 1, "sweep_table": 1}
    # the rule's factor: the table only
    assert plan(mse_factor=2.0) == {"sweep_table": 1}


def test_an_rd_sweep_plans_rd_points(repo_root, tmp_path):
    import yaml

    (tmp_path / "config").symlink_to(repo_root / "config")
    (tmp_path / "rd.yaml").write_text(yaml.safe_dump({"sweep": {
        "enabled": True, "experiment": "rd", "temperatures": [1e-8, 1e-6],
        "annealed": [{"from": 1e-6, "to": 1e-8}]}}))
    targets = [str(p) for p in wf.sweep_table_paths("rd").values()]
    out = snakemake(repo_root, tmp_path, "rd.yaml", "-n", "--", *targets)
    jobs = planned_jobs(out)
    assert jobs.get("sweep_point") == 3 and jobs.get("sweep_table") == 1, out[-3000:]
    for tag in ("T1e-08", "T1e-06", "anneal_1e-06_1e-08_geometric"):
        assert f"results/sweep/rd/{tag}/row.csv" in out
    assert "results/sweep/mnist" not in out
    assert "results/rd/dataset.zarr" in out  # the rd data chain feeds the points

"""Faces experiment (SPEC §3.3, Fig 3): CelebA loader on a synthetic folder, the offline
faces, the generic-vs-individual measure, the tiny chain prepare → train → ensemble →
report, the config schema and the rules file."""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from eae.io import member_view
import yaml
from PIL import Image

from eae.config import ConfigError, validate_config
from eae.data import DataError
from eae.faces import (
    CELEBA_IMAGE_DIR,
    CELEBA_SPLIT_FILE,
    crop_and_resize,
    ensemble_faces_stage,
    faces_figure,
    faces_report_stage,
    generic_ratio,
    identification_accuracy,
    load_faces,
    mean_pairwise_distance,
    prepare_celeba,
    prepare_lfw,
    read_partition,
    temperature_from_tag,
    temperature_tag,
    to_float,
    train_config,
    ensemble_config,
    train_faces_stage,
)
from eae.io import read_provenance
from eae.provenance import sidecar_path

REPO = Path(__file__).resolve().parent.parent


# A tiny conv EAE of the SPEC §3.3 kind for 16 x 16 faces.
TINY = {
    "data": {"source": "lfw", "size": 16, "n_images": 30, "fractions": {"train": 0.6, "val": 0.1, "test": 0.3}},
    "model": {"filters": [4, 8], "kernel": 3, "latent_dim": 8, "decoder_base_channels": 4,
              "decoder_filters": [4], "decoder_strides": [4], "decoder_kernel": 3},
    "temperatures": [1.0e-4, 1.0e-6],
    "sampler": {"dt": 0.1, "chain_length": 3, "sy_order": 1},
    "train": {"decoder_updates": 3, "encoder_steps": 2, "batch_size": 8, "val_images": 3,
              "log_every_s": 0, "chains": 2},  # two conv chains: the unrolled chain path
    "ensemble": {"members": 4, "thin": 1, "chunk_members": 3, "n_test": 6},
    "report": {"n_show": 4, "dpi": 50},
}


def schema_validate(section):
    from eae.config import load_schema

    schema = load_schema(REPO / "workflow" / "schemas" / "faces.schema.yaml")
    return validate_config({"faces": section}, {"type": "object", "properties": {"faces": schema}})["faces"]


# --------------------------------------------------------------------------- CelebA


def make_celeba(root: Path, splits=(0, 0, 0, 0, 0, 1, 1, 2, 2, 2), size=(178, 218)) -> Path:
    """A folder in the CelebA layout: numbered JPEGs whose centre 148 x 148 square is
    one colour (blue-ish, brightness by index) and whose border is red."""
    images = root / CELEBA_IMAGE_DIR
    images.mkdir(parents=True)
    w, h = size
    lines = []
    for i, code in enumerate(splits):
        arr = np.zeros((h, w, 3), np.uint8)
        arr[..., 0] = 230  # red border
        top, left = (h - 148) // 2, (w - 148) // 2
        arr[top : top + 148, left : left + 148] = (0, (20 * i) % 256, 200)
        name = f"{i + 1:06d}.jpg"
        Image.fromarray(arr).save(images / name, quality=95)
        lines.append(f"{name} {code}")
    (root / CELEBA_SPLIT_FILE).write_text("\n".join(lines) + "\n")
    return root


def test_celeba_loader_crops_resizes_and_keeps_the_official_split(tmp_path):
    root = make_celeba(tmp_path / "celeba")
    out = prepare_celeba({"path": str(root), "crop": 148, "size": 16, "chunk_images": 3,
                          "workers": 2}, tmp_path / "faces.zarr")
    ds = xr.open_zarr(out, consolidated=False)
    assert ds["images"].dims == ("sample", "row", "col", "channel")
    assert ds.sizes == {"sample": 10, "row": 16, "col": 16, "channel": 3}
    images = ds["images"].values
    assert images.min() >= 0.0 and images.max() <= 1.0
    # stored as 8 bit: every pixel is k/255
    np.testing.assert_allclose(images * 255, np.round(images * 255), atol=1e-4)
    # only the centre crop survives: no red border, the blue square's colour
    assert images[..., 0].max() < 0.1
    np.testing.assert_allclose(images[..., 2].mean(axis=(1, 2)), 200 / 255, atol=0.03)
    np.testing.assert_allclose(images[..., 1].mean(axis=(1, 2)), 20 * np.arange(10) / 255, atol=0.03)
    assert list(ds["split"].values) == [0, 0, 0, 0, 0, 1, 1, 2, 2, 2]
    assert list(ds["source_index"].values) == list(range(10))
    train = load_faces(out, "train")
    assert train.images.dtype == np.uint8 and train.images.shape == (5, 16, 16, 3)
    np.testing.assert_allclose(to_float(train.images), images[:5], atol=1e-6)
    assert read_provenance(out)["stage"] == "faces_prepare"
    # the crop is the centre square: a manual crop + resize gives the stored pixels
    with Image.open(root / CELEBA_IMAGE_DIR / "000004.jpg") as im:
        manual = crop_and_resize(im.convert("RGB"), 148, 16)
    np.testing.assert_array_equal(manual, train.images[3])


def test_celeba_subset_is_seeded_and_keeps_each_images_split(tmp_path):
    root = make_celeba(tmp_path / "celeba", splits=(2, 0, 1, 0, 2, 0, 1, 0))
    a = prepare_celeba({"path": str(root), "size": 8, "n_images": 5, "seed": 3}, tmp_path / "a.zarr")
    b = prepare_celeba({"path": str(root), "size": 8, "n_images": 5, "seed": 3}, tmp_path / "b.zarr")
    da, db = (xr.open_zarr(p, consolidated=False) for p in (a, b))
    np.testing.assert_array_equal(da["source_index"].values, db["source_index"].values)
    codes = np.array([2, 0, 1, 0, 2, 0, 1, 0])
    np.testing.assert_array_equal(da["split"].values, codes[da["source_index"].values])
    assert np.all(np.diff(da["split"].values) >= 0)  # grouped train, val, test


@pytest.mark.parametrize("damage, message", [
    ("no_folder", "CelebA folder not found"),
    ("no_split_file", "split file not found"),
    ("no_image_dir", "image folder not found"),
    ("missing_image", "000003.jpg"),
    ("unreadable_image", "unreadable image"),
    ("bad_split_line", "line 2"),
])
def test_celeba_errors_name_the_problem_and_leave_no_output(tmp_path, damage, message):
    root = make_celeba(tmp_path / "celeba", splits=(0, 0, 0, 1, 2))
    if damage == "no_folder":
        root = tmp_path / "nowhere"
    elif damage == "no_split_file":
        (root / CELEBA_SPLIT_FILE).unlink()
    elif damage == "no_image_dir":
        for f in (root / CELEBA_IMAGE_DIR).iterdir():
            f.unlink()
        (root / CELEBA_IMAGE_DIR).rmdir()
    elif damage == "missing_image":
        (root / CELEBA_IMAGE_DIR / "000003.jpg").unlink()
    elif damage == "unreadable_image":
        (root / CELEBA_IMAGE_DIR / "000004.jpg").write_bytes(b"not a jpeg")
    elif damage == "bad_split_line":
        (root / CELEBA_SPLIT_FILE).write_text("000001.jpg 0\n000002.jpg 7\n")
    out = tmp_path / "out" / "faces.zarr"
    with pytest.raises((FileNotFoundError, DataError), match=message):
        prepare_celeba({"path": str(root), "size": 8, "chunk_images": 2}, out)
    assert not out.exists()
    assert not out.parent.exists() or not any(out.parent.iterdir())  # no temporary store left


def test_read_partition(tmp_path):
    path = tmp_path / "p.txt"
    path.write_text("a.jpg 0\n\nb.jpg 2\n")
    names, codes = read_partition(path)
    assert names == ["a.jpg", "b.jpg"] and list(codes) == [0, 2]


# --------------------------------------------------------------------------- offline faces


def test_lfw_faces_are_resized_split_and_seeded(tmp_path):
    out = prepare_lfw({"size": 32, "seed": 1}, tmp_path / "a.zarr")
    ds = xr.open_zarr(out, consolidated=False)
    assert ds.sizes == {"sample": 100, "row": 32, "col": 32, "channel": 1}
    assert [int((ds["split"] == c).sum()) for c in (0, 1, 2)] == [70, 10, 20]
    assert sorted(ds["source_index"].values) == list(range(100))  # the 100 faces
    again = prepare_lfw({"size": 32, "seed": 1}, tmp_path / "b.zarr")
    np.testing.assert_array_equal(ds["source_index"].values,
                                  xr.open_zarr(again, consolidated=False)["source_index"].values)
    other = prepare_lfw({"size": 32, "seed": 2}, tmp_path / "c.zarr")
    assert not np.array_equal(ds["split"].values[np.argsort(ds["source_index"].values)],
                              xr.open_zarr(other, consolidated=False)["split"].values[
                                  np.argsort(xr.open_zarr(other, consolidated=False)["source_index"].values)])
    # the resize keeps the face: the 32 x 32 image shrunk back matches the 25 x 25 original
    import skimage.data

    face = skimage.data.lfw_subset()[int(ds["source_index"][0])]
    small = np.asarray(Image.fromarray(load_faces(out, "train").images[0, ..., 0]).resize((25, 25)))
    assert np.abs(small / 255.0 - face).mean() < 0.05
    with pytest.raises(DataError, match="only 100 faces"):
        prepare_lfw({"n_images": 150}, tmp_path / "d.zarr")


# --------------------------------------------------------------------------- metrics


def test_generic_ratio_and_identification():
    rng = np.random.default_rng(0)
    faces = rng.uniform(size=(12, 5, 5, 1))
    assert generic_ratio(faces, faces) == pytest.approx(1.0)
    assert identification_accuracy(faces, faces) == 1.0
    generic = np.repeat(faces.mean(0, keepdims=True), 12, axis=0)
    assert generic_ratio(generic, faces) == pytest.approx(0.0, abs=1e-6)
    # halfway to the mean face: distances halve
    assert generic_ratio(0.5 * (faces + generic), faces) == pytest.approx(0.5)
    shuffled = faces[::-1]
    assert identification_accuracy(shuffled, faces) == 0.0
    x = np.array([[0.0, 0.0], [3.0, 4.0], [0.0, 0.0]])
    assert mean_pairwise_distance(x) == pytest.approx(10.0 / 3.0)


def test_generic_share_counts_mean_faces_and_never_a_flat_image():
    from eae.faces import generic_share, generic_verdict

    rng = np.random.default_rng(1)
    mean_face = rng.uniform(size=(6, 6, 1))
    faces = np.clip(mean_face + rng.normal(0, 0.3, (10, 6, 6, 1)), 0, 1)
    assert generic_share(np.repeat(mean_face[None], 4, 0), mean_face) == 1.0
    # a dead decoder: one flat grey image is perfectly "generic" by the ratio, not here
    flat = np.full((10, 6, 6, 1), 0.5)
    assert generic_ratio(flat, faces) == pytest.approx(0.0) and generic_share(flat, mean_face) == 0.0
    assert 0.0 <= generic_share(faces, mean_face) < 1.0
    hot = {"generic_share": 0.9, "generic_share_originals": 0.6, "improper": "ok"}
    assert generic_verdict(hot, {"generic_share": 0.2}) == "reproduced"
    verdict = generic_verdict({**hot, "generic_share": 0.0, "improper": "IMPROPER: train, ensemble"},
                              {"generic_share": 0.2})
    assert verdict.startswith("not reproduced") and "improper" in verdict and "0.00" in verdict


def test_temperature_tags():
    assert temperature_tag(1e-5) == "1e-05"
    assert temperature_from_tag("1e-08", [1e-5, 1e-8]) == 1e-8
    with pytest.raises(ValueError, match="not in faces.temperatures"):
        temperature_from_tag("3e-07", [1e-5, 1e-8])
    cfg = schema_validate(TINY)
    a, b = train_config(cfg, 1e-4), train_config({**cfg, "temperatures": [1e-4, 5e-6]}, 1e-4)
    assert a == b  # adding a temperature does not change another model's settings
    assert a["sampler"]["temperature"] == 1e-4 and a["model"]["kind"] == "conv"
    assert "ensemble" not in a and ensemble_config(cfg, 1e-4)["ensemble"]["members"] == 4


# --------------------------------------------------------------------------- the chain


@pytest.fixture(scope="module")
def tiny_chain(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces") / "results"
    cfg = schema_validate(TINY)
    data = prepare_lfw(cfg["data"], root / "data" / "faces.zarr")
    runs = []
    for t in cfg["temperatures"]:
        base = root / "faces" / f"eae_T{temperature_tag(t)}"
        train_faces_stage(train_config(cfg, t), data, base / "model",
                          checkpoint_dir=root / "checkpoints" / "faces" / f"eae_T{temperature_tag(t)}")
        ensemble_faces_stage(ensemble_config(cfg, t), data, base / "model", base / "ensemble.zarr")
        runs.append((t, base / "model", base / "ensemble.zarr"))
    table = faces_report_stage(cfg["report"], data, runs, root / "figures" / "faces_fig3.png",
                               root / "tables" / "faces.csv")
    return root, cfg, table


def test_training_logs_member_loss_envelopes(tiny_chain):
    root, cfg, _ = tiny_chain
    history = pd.read_csv(root / "faces" / "eae_T1e-06" / "model" / "history.csv")
    assert len(history) == 3
    for col in ("loss_mean", "loss_min", "loss_max", "loss_q05", "loss_q50", "loss_q95", "val_loss"):
        assert np.isfinite(history[col]).all(), col
    assert (history["loss_min"] <= history["loss_q05"]).all()
    assert (history["loss_q95"] <= history["loss_max"]).all()
    for name in ("encoder.keras", "decoder.keras", "final_state.npz"):
        assert (root / "faces" / "eae_T1e-06" / "model" / name).exists()
    assert (root / "checkpoints" / "faces" / "eae_T1e-06" / "checkpoint.npz").exists()


def test_ensemble_store_layout(tiny_chain):
    root, _, _ = tiny_chain
    raw = xr.open_zarr(root / "faces" / "eae_T1e-04" / "ensemble.zarr", consolidated=False)
    assert raw["latent"].dims == ("chain", "draw", "sample", "unit")
    assert raw["latent"].shape == (2, 2, 6, 8)
    ens = member_view(raw)
    assert ens["latent"].shape == (4, 6, 8)
    np.testing.assert_allclose(ens["latent_mean"].values, ens["latent"].values.mean(0), rtol=1e-5, atol=1e-6)
    test = load_faces(root / "data" / "faces.zarr", "test")
    np.testing.assert_array_equal(ens["store_index"].values, test.store_index[:6])
    assert read_provenance(ens)["stage"] == "faces_ensemble"


def test_report_table_figure_and_provenance(tiny_chain):
    root, _, table = tiny_chain
    saved = pd.read_csv(root / "tables" / "faces.csv")
    assert list(saved["role"]) == ["hot", "cold"]
    assert list(saved["temperature"]) == [1e-4, 1e-6]
    assert saved.loc[0, "paper_claim"].startswith(("reproduced", "not reproduced"))
    for col in ("generic_ratio", "generic_share", "generic_share_originals", "test_mse",
                "identification_accuracy", "latent_member_std"):
        assert np.isfinite(saved[col]).all() and (saved[col] >= 0).all(), col
    assert (saved["n_test"] == 6).all() and (saved["n_members"] == 4).all()
    figure = root / "figures" / "faces_fig3.png"
    with Image.open(figure) as im:
        assert im.size[0] > 300 and im.size[1] > 300
    for out in (figure, root / "tables" / "faces.csv"):
        record = yaml.safe_load(sidecar_path(out).read_text())
        assert record["stage"] == "faces_report" and record["output"]["path"] == str(out)


def test_figure_shows_every_temperature(tmp_path):
    rng = np.random.default_rng(0)
    hist = pd.DataFrame({"update": [1, 2, 3], "loss_mean": [0.3, 0.2, 0.1],
                         **{c: [0.2, 0.1, 0.05] for c in ("loss_min", "loss_q05")},
                         **{c: [0.4, 0.3, 0.2] for c in ("loss_max", "loss_q95")}})
    faces = rng.uniform(size=(5, 8, 8, 3)).astype(np.float32)
    path = faces_figure({1e-3: hist, 1e-5: hist, 1e-7: hist}, faces,
                        {t: faces for t in (1e-3, 1e-5, 1e-7)}, tmp_path / "f.png",
                        ratios={1e-3: 0.1, 1e-5: 0.5, 1e-7: 0.9}, n_show=5, dpi=40)
    with Image.open(path) as im:
        w, h = im.size
    # 4 rows of faces (originals + 3 temperatures) below the loss panel
    assert h > 40 * (0.45 + 2.8 + 0.55 + 0.45 + 4 * 0.85) - 2


# --------------------------------------------------------------------------- config + rules


def test_data_and_report_configs_take_the_schema_defaults():
    from eae.faces import resolve_data_config, resolve_report_config

    cfg = resolve_data_config({"size": 32})
    assert cfg["size"] == 32 and cfg["source"] == "lfw" and cfg["crop"] == 148
    assert cfg["fractions"] == {"train": 0.7, "val": 0.1, "test": 0.2} and cfg["workers"] == 4
    assert resolve_data_config(cfg) == cfg
    with pytest.raises(DataError, match=r"faces\.data\.sizes: unknown key \(did you mean 'size'\?\)"):
        resolve_data_config({"sizes": 32})
    with pytest.raises(DataError, match=r"faces\.data\.fractions must be .* sum to 1"):
        resolve_data_config({"fractions": {"train": 0.7, "val": 0.2, "test": 0.2}})
    assert resolve_report_config({"dpi": 60}) == {"dpi": 60, "n_show": 8, "batch_size": 256}
    with pytest.raises(ConfigError, match=r"faces\.report\.n_shown: unknown key"):
        resolve_report_config({"n_shown": 4})


def test_schema_defaults_and_errors():
    cfg = schema_validate({})
    assert cfg["data"]["source"] == "lfw" and cfg["train"]["decoder_updates"] == 700
    assert cfg["model"]["filters"] == [32, 64, 128, 256] and cfg["model"]["latent_dim"] == 256
    assert len(cfg["temperatures"]) == 2 and cfg["ensemble"]["members"] == 1000
    with pytest.raises(ConfigError, match="temperatures"):
        schema_validate({"temperatures": [-1.0]})
    with pytest.raises(ConfigError, match="path"):
        schema_validate({"data": {"source": "celeba"}})
    with pytest.raises(ConfigError, match="unknown key"):
        schema_validate({"sampler": {"temperature": 1e-5}})  # set faces.temperatures instead


def test_rules_plan_one_model_per_temperature(tmp_path):
    # 8 members over 2 chains: the 4 draws per chain that the diagnostics need
    cfg = schema_validate({**TINY, "temperatures": [1e-4, 1e-6, 1e-8],
                           "ensemble": {**TINY["ensemble"], "members": 8}})
    (tmp_path / "config.yaml").write_text(yaml.safe_dump({"faces": cfg}))
    (tmp_path / "Snakefile").write_text(textwrap.dedent(f"""
        configfile: "config.yaml"
        include: "{REPO / 'workflow' / 'rules' / 'common.smk'}"
        include: "{REPO / 'workflow' / 'rules' / 'faces.smk'}"
        rule all:
            input: wf.faces_targets(config)
    """))
    result = subprocess.run([sys.executable, "-m", "snakemake", "-n", "--cores", "2", "-q", "rules"],
                            cwd=tmp_path, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    counts = dict(line.split() for line in result.stdout.splitlines()
                  if line.strip() and line.split()[-1].isdigit() and len(line.split()) == 2)
    assert counts.get("faces_train_eae") == "3" and counts.get("faces_ensemble") == "3"
    assert counts.get("faces_prepare") == "1" and counts.get("faces_report") == "1"


def test_a_diverged_ensemble_leaves_no_store(tiny_chain, tmp_path):
    from eae.train import TrainingDiverged

    root, cfg, _ = tiny_chain
    model = root / "faces" / "eae_T1e-04" / "model"
    broken = tmp_path / "model"
    broken.mkdir()
    with np.load(model / "final_state.npz") as state:
        arrays = dict(state)
    arrays["enc/0"] = np.full_like(arrays["enc/0"], np.nan)  # as after a blown-up chain
    np.savez(broken / "final_state.npz", **arrays)
    out = tmp_path / "ensemble.zarr"
    with pytest.raises(TrainingDiverged, match="non-finite encoder weights"):
        ensemble_faces_stage(ensemble_config(cfg, 1e-4), root / "data" / "faces.zarr", broken, out)
    assert not out.exists() and not any(p.name.startswith(".ensemble.zarr") for p in tmp_path.iterdir())

"""Helpers shared by the tests (import as ``from helpers import …``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from eae.core.temperature import TemperatureCheck
from eae.workflow import image_paths


def config_section(path: str, value: Any) -> Any:
    """``value`` as the config section ``path`` (e.g. ``"rd.eae"``), checked against the
    workflow's schema and filled with its defaults — what a stage receives from the
    workflow (:func:`eae.support.config.section`, which the stages use themselves).
    Raises ``ConfigError`` naming the key of any problem."""
    from eae.support.config import section

    return section(path, value)


def run_snakemake(workdir, *args, configfiles=(), snakefile=None, check: bool = True,
                  timeout: float | None = None):
    """Run the workflow (``python -m snakemake``) in ``workdir`` with the repository's
    Snakefile (or ``snakefile``), the ``configfiles`` layered in order and ``args``;
    returns the CompletedProcess. With ``check`` a non-zero exit fails the test with the
    tail of the output."""
    import subprocess
    import sys

    snakefile = Path(snakefile) if snakefile else Path(__file__).resolve().parents[1] / "Snakefile"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(workdir)]
    if configfiles:
        cmd += ["--configfile", *map(str, configfiles)]
    cmd += [str(a) for a in args]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=workdir, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(result.stdout[-4000:] + result.stderr[-6000:])
    return result


def planned_jobs(output: str) -> dict[str, int]:
    """{rule: count} from the 'Job stats' table of a Snakemake (dry) run's output."""
    jobs: dict[str, int] = {}
    in_table = False
    for line in output.splitlines():
        if line.startswith("Job stats"):
            in_table, jobs = True, {}
            continue
        parts = line.split()
        if in_table and len(parts) == 2 and parts[1].isdigit():
            if parts[0] == "total":
                in_table = False
            else:
                jobs[parts[0]] = int(parts[1])
    return jobs


# --------------------------------------------------------------------------- tiny trainers

def tiny_data(n: int = 400, pixels: int = 16, seed: int = 0):
    """Uniform float32 data [n, pixels]: the training set of :func:`tiny_trainer`."""
    return np.random.default_rng(seed).uniform(size=(n, pixels)).astype("float32")


#: The data every tiny trainer trains on (validation: its first 50 rows).
TINY_DATA = tiny_data()


def tiny_trainer(updates: int = 4, steps: int = 10, temperature: float = 1e-6, dt: float = 0.2,
                 batch_size: int = 32, chains: int | None = None, **settings):
    """An EAE trainer of 16 -> 32 -> 4 MLPs on :data:`TINY_DATA` (Simmering chain length 5,
    first-order half steps), seeded. ``chains``: None for a plain Keras encoder, else a
    :class:`eae.core.chains.ChainEncoder` of that many chains (progress lines off).
    ``settings``: further :class:`eae.core.trainer.TrainSettings` fields."""
    from eae.core.chains import ChainEncoder
    from eae.core.models import mlp_decoder, mlp_encoder
    from eae.core.sampler import SimmeringConfig
    from eae.core.trainer import EAETrainer, TrainSettings

    if chains is None:
        encoder = mlp_encoder(16, (32,), 4, seed=0)
    else:
        encoder = ChainEncoder.build(lambda s: mlp_encoder(16, (32,), 4, seed=s), chains, seed=0)
        settings = {"chains": chains, "log_every_s": 0, **settings}
    return EAETrainer(
        encoder, mlp_decoder(4, (32,), 16, seed=1), [TINY_DATA],
        SimmeringConfig(temperature=temperature, dt=dt, chain_length=5, sy_order=1),
        TrainSettings(decoder_updates=updates, encoder_steps=steps, batch_size=batch_size,
                      **settings),
        val_arrays=[TINY_DATA[:50]],
    )


# --------------------------------------------------------------------------- fake image results
# A tiny results/ tree for one image dataset (data store, EAE/VAE/AE models, an ensemble
# store with known latent structure), for the metrics and figures stages' tests.

FAKE_MODEL = {"kind": "mlp", "encoder_hidden": [8], "latent_dim": 4, "decoder_hidden": [8]}
IMAGE_SHAPE = (8, 6)
N_MEMBERS = 7


def fake_ensemble_latent(labels: np.ndarray, n_members: int = N_MEMBERS, seed: int = 0) -> np.ndarray:
    """(member, sample, 4) codes with known structure:

    dim 0: class-dependent (2·label) + small per-sample noise — active everywhere;
    dim 1: a per-member offset (same for all samples, variance ~0.25): active over all
           samples, constant across samples for each member and for the ensemble mean;
    dim 2: tiny noise (variance 1e-6): inactive everywhere;
    dim 3: iid noise per member and sample, variance 0.5: active per member and over all
           samples; in the ensemble mean the variance is ~0.5/7 ≈ 0.07 (still active).
    """
    rng = np.random.default_rng(seed)
    n = len(labels)
    z = np.empty((n_members, n, 4), np.float32)
    base0 = 2.0 * labels + 0.1 * rng.standard_normal(n)
    offsets = np.linspace(-0.75, 0.75, n_members)  # variance 0.25 for 7 evenly spaced values
    for m in range(n_members):
        z[m, :, 0] = base0 + 0.01 * rng.standard_normal(n)
        z[m, :, 1] = offsets[m]
        z[m, :, 2] = 1e-3 * rng.standard_normal(n)
        z[m, :, 3] = np.sqrt(0.5) * rng.standard_normal(n)
    return z


#: measured temperatures as eae.ensemble writes them (training's last tenth hot on T_conf)
FAKE_TEMPERATURE_ATTRS = {
    **TemperatureCheck(1.01, 40.0, (1.0, 1.02), (30.0, 50.0),
                       ("T_conf/T outside [0.75, 1.33] in chain(s) [0, 1]: 30, 50",)).as_attrs("train_"),
    **TemperatureCheck(0.99, 1.1, (0.98, 1.0), (1.0, 1.2), ()).as_attrs("ensemble_"),
    "train_displacement_slope": 0.05, "ensemble_displacement_slope": 0.48,
}


def write_fake_ensemble(path: Path, z: np.ndarray, labels: np.ndarray | None, chunk: int = 3) -> None:
    """An ensemble store laid out like eae.ensemble.sample_ensemble's: streamed in member
    chunks through ZarrStreamWriter, latent (member, sample, unit), latent_mean added at
    close, per-member loss / kinetic_temperature, labels and coords as static variables."""
    from eae.io import ZarrStreamWriter

    n_members, n, dim = z.shape
    static = xr.Dataset({"labels": ("sample", labels)} if labels is not None else {},
                        coords={"sample": np.arange(n), "unit": np.arange(dim)})
    writer = ZarrStreamWriter(path, "member", static=static)
    for start in range(0, n_members, chunk):
        part = z[start:start + chunk]
        writer.append(xr.Dataset(
            {"latent": (("member", "sample", "unit"), part),
             "loss": (("member",), np.full(len(part), 0.1)),
             "kinetic_temperature": (("member",), np.full(len(part), 1e-3))},
            coords={"member": np.arange(start, start + len(part))}))
    mean = xr.Dataset({"latent_mean": (("sample", "unit"), z.astype(np.float64).mean(0).astype(np.float32))})
    writer.close(extra=mean, attrs={"n_members": n_members, "thin": 1, **FAKE_TEMPERATURE_ATTRS})


def build_fake_results(root: Path, labelled: bool = True, dataset: str = "mnist", seed: int = 0) -> dict:
    """A tiny results/ tree: data store, EAE decoder + ensemble store, VAE and AE models."""
    from eae.io import write_zarr
    from eae.models import build_from_config

    rng = np.random.default_rng(seed)
    rows, cols = IMAGE_SHAPE
    n_train, n_val, n_test = 60, 9, 45
    n = n_train + n_val + n_test
    labels = np.tile(np.arange(3), n // 3 + 1)[:n].astype(np.int64)
    protos = rng.random((3, rows * cols))
    images = np.clip(protos[labels] + 0.05 * rng.standard_normal((n, rows * cols)), 0, 1)
    split = np.repeat(np.array([0, 1, 2], np.int8), [n_train, n_val, n_test])
    data = {
        "images": (("sample", "row", "col"), images.reshape(n, rows, cols).astype(np.float32)),
        "split": (("sample",), split, {"flag_values": [0, 1, 2], "flag_meanings": "train val test"}),
    }
    if labelled:
        data["labels"] = (("sample",), labels)
    results = root / "results"
    paths = image_paths(dataset, results)
    write_zarr(xr.Dataset(data, coords={"sample": np.arange(n)}), paths["data"])

    pixels = rows * cols
    for kind in ("vae", "ae"):
        enc, dec = build_from_config(FAKE_MODEL, pixels, seed=seed + (kind == "vae"), variational=kind == "vae")
        paths[kind].mkdir(parents=True)
        enc.save(paths[kind] / "encoder.keras")
        dec.save(paths[kind] / "decoder.keras")
        (paths[kind] / "history.csv").write_text("epoch,train_loss\n1,0.1\n")
    enc, dec = build_from_config(FAKE_MODEL, pixels, seed=seed + 2)
    paths["eae"].mkdir(parents=True)
    enc.save(paths["eae"] / "encoder.keras")
    dec.save(paths["eae"] / "decoder.keras")

    test_labels = labels[split == 2]
    z = fake_ensemble_latent(test_labels, seed=seed)
    write_fake_ensemble(paths["ensemble"], z, test_labels if labelled else None)
    x_test = images[split == 2].astype(np.float32)
    x_train = images[split == 0].astype(np.float32)
    return {"results": results, "paths": paths, "z": z, "x_test": x_test, "x_train": x_train,
            "labels": test_labels if labelled else None}

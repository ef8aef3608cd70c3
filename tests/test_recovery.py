"""Recovery after a hard kill: the README's commands finish the run, byte-identical.

Snakemake's whole process group (Snakemake and the training job it runs) is killed with
SIGKILL in the middle of EAE training. The documented recovery, ``snakemake --unlock``
and then ``snakemake --rerun-incomplete``, must resume training from its checkpoint and
end with the same tables and model weights as a run that was never interrupted.
"""

import io
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

# Only the MNIST chain (EAE, ensemble, baselines, Table 1), with enough decoder updates
# that the kill lands mid-training.
OVERLAY = """\
frey: {enabled: false}
rd: {enabled: false}
faces: {enabled: false}
sweep: {enabled: false}
mnist:
  eae:
    train: {decoder_updates: 10, encoder_steps: 10}
"""
TARGETS = ["results/tables/table1.csv", "results/tables/table1.md"]
TABLES = ["tables/table1.csv", "tables/table1.md", "mnist/metrics.csv"]


def snakemake_cmd(repo_root: Path, workdir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"),
            "-d", str(workdir), "--configfile", str(repo_root / "config" / "test.yaml"),
            str(workdir / "overlay.yaml"), *args]


def run(cmd: list[str], cwd: Path) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return result


def make_workdir(root: Path) -> Path:
    root.mkdir()
    (root / "overlay.yaml").write_text(OVERLAY)
    return root


def kill_mid_training(repo_root: Path, workdir: Path, timeout_s: float = 600) -> int:
    """Start the run in its own process group; SIGKILL the group once training has
    written a checkpoint. Returns the decoder update the checkpoint had reached."""
    checkpoint = workdir / "results" / "checkpoints" / "mnist" / "eae" / "checkpoint.npz"
    console = workdir / "console.txt"
    with open(console, "w") as out:
        proc = subprocess.Popen(snakemake_cmd(repo_root, workdir, "--cores", "2", *TARGETS),
                                cwd=workdir, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    deadline = time.monotonic() + timeout_s
    try:
        while not checkpoint.exists():
            assert proc.poll() is None, ("the run ended before training wrote a checkpoint:\n"
                                         + console.read_text()[-4000:])
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    with np.load(checkpoint) as ckpt:
        return int(ckpt["update"]) if "update" in ckpt else -1


def model_weights(model_dir: Path) -> dict[str, bytes]:
    """Every weight array of the saved models and of the final sampler state, as bytes
    (a .keras file is a zip whose metadata holds the save time, and HDF5 stores object
    times too, so the arrays are compared, not the files)."""
    import h5py

    out = {}
    for name in ("encoder.keras", "decoder.keras"):
        with zipfile.ZipFile(model_dir / name) as archive:
            weights = h5py.File(io.BytesIO(archive.read("model.weights.h5")), "r")
        with weights:
            weights.visititems(lambda key, obj: out.__setitem__(
                f"{name}/{key}", obj[()].tobytes()) if isinstance(obj, h5py.Dataset) else None)
    with np.load(model_dir / "final_state.npz") as state:
        # the fingerprint hashes the data store, whose provenance attrs hold its write time
        out.update({f"final_state/{key}": state[key].tobytes()
                    for key in state.files if key != "fingerprint"})
    return out


def test_killed_snakemake_recovers_with_unlock_and_rerun_incomplete(repo_root, tmp_path):
    reference = make_workdir(tmp_path / "uninterrupted")
    run(snakemake_cmd(repo_root, reference, "--cores", "2", *TARGETS), reference)

    killed = make_workdir(tmp_path / "killed")
    reached = kill_mid_training(repo_root, killed)
    assert not (killed / "results" / "tables" / "table1.csv").exists()

    # What the README says to run after a killed Snakemake: the lock it left refuses
    # even --rerun-incomplete, --unlock removes it, then --rerun-incomplete redoes the
    # interrupted job (which resumes from its checkpoint).
    rerun = snakemake_cmd(repo_root, killed, "--cores", "2", "--rerun-incomplete", *TARGETS)
    blocked = subprocess.run(rerun, cwd=killed, capture_output=True, text=True, timeout=300)
    assert blocked.returncode != 0 and "unlock" in blocked.stdout + blocked.stderr
    run(snakemake_cmd(repo_root, killed, "--unlock"), killed)
    run(rerun, killed)

    train_log = (killed / "results" / "logs" / "mnist" / "train_eae.log").read_text()
    assert "resuming from" in train_log, train_log[-2000:]
    for rel in TABLES:
        assert (killed / "results" / rel).read_bytes() == (reference / "results" / rel).read_bytes(), rel
    resumed = model_weights(killed / "results" / "mnist" / "eae" / "model")
    uninterrupted = model_weights(reference / "results" / "mnist" / "eae" / "model")
    assert resumed.keys() == uninterrupted.keys()
    assert [k for k in resumed if resumed[k] != uninterrupted[k]] == [], f"killed at update {reached}"

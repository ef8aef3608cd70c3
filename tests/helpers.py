"""Helpers shared by the tests (import as ``from helpers import …``)."""

from __future__ import annotations

from typing import Any


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
    from pathlib import Path

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
    import numpy as np

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

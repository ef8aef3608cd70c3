"""Peak memory of ensemble sampling and reading must not grow with the number of members M.

In a fresh process for M = 100 and for M = 1000 members (each records 10 000 test codes
of 64 floats: 2.6 MB, so holding 1000 members would need 2.6 GB):

  sampling   eae.ensemble.sample_ensemble as the workflow's ``ensemble`` stage runs it
             (eae.ensemble.ensemble_images_stage: a ChainEncoder trainer, the test-set
             codes of every chain per draw, a streamed ``latent_mean``)
  reading    eae.metrics.ensemble_statistics over the store, as the ``metrics`` stage
             reads it (one block of members at a time); it also checks the store holds
             M members whose mean is the stored ``latent_mean``

Prints the peak resident set size after each phase for both M (the process's peak so
far: the reading figure covers both phases) and their ratios (target ≤ 1.10).

    python benchmarks/ensemble_memory.py [--members 100 1000] [--samples 10000] [--chains 4]
    python benchmarks/ensemble_memory.py --quick   # seconds: same code, toy sizes

``--quick`` only checks that the benchmark still runs (tests/test_benchmarks.py); its
figures are labelled as such and mean nothing (both peaks are then TensorFlow's baseline).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import _quick  # benchmarks/_quick.py, beside this script: the shared --quick option

QUICK = {"members": [20, 200], "samples": 1000}
LATENT, INPUT = 64, 784
PHASES = ("sampling", "reading")


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs=2, default=[100, 1000])
    parser.add_argument("--samples", type=int, default=10000, help="test images encoded per draw")
    parser.add_argument("--chains", type=int, default=4, help="encoder chains (config: mnist.eae)")
    parser.add_argument("--chunk-members", type=int, default=50, help="members per Zarr chunk")
    # internal: run one measurement in this process and print it as JSON
    parser.add_argument("--child", nargs=2, metavar=("M", "STORE"), help=argparse.SUPPRESS)
    return _quick.parse_args(parser, QUICK, argv)


def sample_and_measure(members: int, samples: int, chains: int, chunk_members: int,
                       store: str) -> dict:
    """Child side: stream ``members`` draws to ``store``, then read it back; the peak
    RSS of this process (Linux ru_maxrss, KiB) and the time after each phase."""
    import numpy as np
    import tensorflow as tf
    import xarray as xr

    from eae.core.ensemble import draws_per_chain, sample_ensemble
    from eae.experiments.images.metrics import DEFAULTS, ensemble_statistics
    from eae.core.models import mlp_decoder, mlp_encoder
    from eae.core.sampler import SimmeringConfig
    from eae.core.trainer import EAETrainer, TrainSettings, build_chain_encoder

    rng = np.random.default_rng(0)
    train = rng.uniform(size=(2000, INPUT)).astype("float32")
    x_test = tf.constant(rng.uniform(size=(samples, INPUT)).astype("float32"))
    encoder = build_chain_encoder(lambda s: mlp_encoder(INPUT, (128,), LATENT, seed=s), chains, 0)
    trainer = EAETrainer(encoder, mlp_decoder(LATENT, (128,), INPUT, seed=1), [train],
                         SimmeringConfig(temperature=1e-8, dt=0.2, sy_order=1),
                         TrainSettings(encoder_steps=1, batch_size=32, chains=chains,
                                       deterministic=False))
    # record and static variables as in eae.ensemble.ensemble_images_stage
    encode = tf.function(lambda: trainer.encoder.encode_each(x_test))
    static = xr.Dataset(coords={"sample": np.arange(samples), "unit": np.arange(LATENT)})
    start = time.perf_counter()
    sample_ensemble(trainer, lambda: {"latent": (("sample", "unit"), encode().numpy())}, store,
                    n_members=members, thin=1, chunk_members=chunk_members,
                    mean_of=("latent",), static=static)
    result = {"sampling": phase(start)}

    start = time.perf_counter()
    stats = ensemble_statistics(store, DEFAULTS["active_threshold"], DEFAULTS["chunk_members"])
    result["reading"] = phase(start)  # ru_maxrss only grows: the peak of both phases
    # a store that silently lost members would make the memory figures meaningless
    result["members"] = chains * draws_per_chain(members, chains)
    if (stats["n_members"], stats["n_samples"]) != (result["members"], samples):
        raise RuntimeError(f"{store}: {stats['n_members']} members of {stats['n_samples']} "
                           f"codes, expected {result['members']} of {samples}")
    return result


def phase(start: float) -> dict:
    """Seconds since ``start`` and this process's peak RSS so far (Linux: KiB)."""
    import resource

    return {"seconds": time.perf_counter() - start,
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(members: int, args: argparse.Namespace) -> dict:
    """One measurement in a fresh process, so each peak RSS is that run's alone."""
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, os.path.abspath(__file__), "--child", str(members),
               os.path.join(tmp, "ensemble.zarr"), "--samples", str(args.samples),
               "--chains", str(args.chains), "--chunk-members", str(args.chunk_members)]
        out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"M = {members}: the child failed (exit {out.returncode}):\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    args = parse_args()
    if args.child:
        members, store = args.child
        print(json.dumps(sample_and_measure(int(members), args.samples, args.chains,
                                            args.chunk_members, store)))
        return
    note = _quick.note(args)
    t0 = time.perf_counter()
    small, large = (run_child(m, args) for m in args.members)
    print(f"ensemble of an MLP EAE ({args.chains} chains), {args.samples} test codes of "
          f"{LATENT} floats per member, {args.chunk_members} members per chunk; "
          f"data written for M={large['members']}: "
          f"{large['members'] * args.samples * LATENT * 4 / 2**20:.0f} MB{note}")
    for r in (small, large):
        print(f"M = {r['members']:5d}: " + ", ".join(
            f"{name} peak RSS {r[name]['peak_rss_mb']:8.1f} MB in {r[name]['seconds']:6.1f} s"
            for name in PHASES))
    for name in PHASES:
        ratio = large[name]["peak_rss_mb"] / small[name]["peak_rss_mb"]
        print(f"peak memory ratio {name:8s} M={large['members']}/M={small['members']} = "
              f"{ratio:.3f}{note}")
    print(f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""Peak memory of ensemble sampling must not grow with the number of members M.

Runs eae.ensemble.sample_ensemble in a fresh process for M = 100 and M = 1000 (each
member records 10 000 test codes of 64 floats: 2.6 MB, so holding 1000 members
would need 2.6 GB) and prints both peak resident set sizes and their ratio.

    python benchmarks/ensemble_memory.py [--members 100 1000] [--samples 10000]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import json, os, resource, sys, time
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np, tensorflow as tf
from eae.ensemble import sample_ensemble
from eae.models import mlp_decoder, mlp_encoder
from eae.sampler import SimmeringConfig
from eae.train import EAETrainer, TrainSettings

members, samples, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
train = rng.uniform(size=(2000, 784)).astype("float32")
test = tf.constant(rng.uniform(size=(samples, 784)).astype("float32"))
trainer = EAETrainer(mlp_encoder(784, (128,), 64, seed=0), mlp_decoder(64, (128,), 784, seed=1),
                     [train], SimmeringConfig(temperature=1e-8, dt=0.2, sy_order=1),
                     TrainSettings(encoder_steps=1, batch_size=32, deterministic=False))
encode = tf.function(lambda: trainer.encoder(test))
start = time.perf_counter()
sample_ensemble(trainer, lambda: {"latent": (("sample", "unit"), encode().numpy())}, out,
                n_members=members, thin=1, chunk_members=50, mean_of=("latent",))
print(json.dumps({"members": members, "seconds": time.perf_counter() - start,
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
"""


def run(members: int, samples: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run([sys.executable, "-c", CHILD, str(members), str(samples),
                              os.path.join(tmp, "ens.zarr")],
                             capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--members", type=int, nargs=2, default=[100, 1000])
    parser.add_argument("--samples", type=int, default=10000)
    args = parser.parse_args()
    t0 = time.perf_counter()
    small, large = (run(m, args.samples) for m in args.members)
    for r in (small, large):
        print(f"M = {r['members']:5d}: peak RSS {r['peak_rss_mb']:8.1f} MB, {r['seconds']:.1f} s")
    print(f"peak memory ratio M={large['members']}/M={small['members']} = "
          f"{large['peak_rss_mb'] / small['peak_rss_mb']:.3f} "
          f"(data written: {large['members'] * args.samples * 64 * 4 / 2**20:.0f} MB); "
          f"total {time.perf_counter() - t0:.0f} s")


if __name__ == "__main__":
    main()

"""C encoder chains stepped together vs C single-chain steps (MNIST MLP EAE, one process).

Both do the same work: C chains × S EAE inner steps (one forward/backward pass of
batch 32 per chain and step, Simmering on the encoder, decoder-gradient sum).

  together   one trainer with ``chains = C``: stacked weights, batched matmuls,
             per-chain thermostats, one compiled round of S steps
  separate   one single-chain trainer, run C times for S steps (its usual path:
             the fused per-tensor kernel)

Runs alternate and the median of several repeats is reported, since one machine's
timings drift. Prints ms per chain-step and the ratio together / separate
(target ≤ 1.05 on CPU).

On a GPU a single chain's batch-32 step is bound by kernel launches and host round
trips, not arithmetic; the batched form launches the same number of kernels for C
times the work, so the ratio should fall towards 1/C until the device is saturated.

    python benchmarks/chains.py [--chains 4] [--steps 100] [--repeats 7]
    python benchmarks/chains.py --quick   # seconds: same code, toy sizes

``--quick`` only checks that the benchmark still runs (tests/test_benchmarks.py); its
figures are labelled as such and mean nothing.
"""

from __future__ import annotations

import argparse
import os
import time

import _quick  # benchmarks/_quick.py, beside this script: the shared --quick option

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from eae.core.chains import ChainEncoder  # noqa: E402
from eae.core.models import mlp_decoder, mlp_encoder  # noqa: E402
from eae.core.sampler import SimmeringConfig  # noqa: E402
from eae.core.trainer import EAETrainer, TrainSettings  # noqa: E402

# --quick sizes: a quick run's time goes into compiling the two rounds, not stepping them.
QUICK = {"steps": 5, "repeats": 2}


def make_trainer(data, chains, cfg):
    encoder = ChainEncoder.build(lambda s: mlp_encoder(784, (512, 256), 64, seed=s), chains, 0)
    trainer = EAETrainer(encoder, mlp_decoder(64, (256, 512), 784, seed=1), [data], cfg,
                         TrainSettings(encoder_steps=1, batch_size=32, chains=chains,
                                       deterministic=False))
    trainer.initialize()
    return trainer


def round_runner(trainer, steps):
    indices = trainer.indices_for(0, steps)

    def run():
        trainer.state, _, grads = trainer._round(trainer.state, indices)
        _ = grads[0].numpy()  # wait for the result

    return run


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=7)
    return _quick.parse_args(parser, QUICK, argv)


def main():
    args = parse_args()
    note = _quick.note(args)

    data = np.random.default_rng(0).uniform(size=(5000, 784)).astype("float32")
    cfg = SimmeringConfig(temperature=1e-8, dt=0.2, chain_length=10, sy_order=1)
    together = round_runner(make_trainer(data, args.chains, cfg), args.steps)
    single = round_runner(make_trainer(data, 1, cfg), args.steps)

    def separate():
        for _ in range(args.chains):
            single()

    loops = {"together": together, "separate": separate}
    for fn in loops.values():  # compile and warm up
        fn()
    times = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, fn in loops.items():
            start = time.perf_counter()
            fn()
            times[name].append((time.perf_counter() - start) / (args.chains * args.steps))
    median = {name: float(np.median(t)) for name, t in times.items()}
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"MNIST MLP EAE 784-512-256-64, batch 32 per chain, C = {args.chains} chains x "
          f"{args.steps} steps, {args.repeats} repeats on {device} "
          f"({tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} threads)"
          f"{note}")
    for name, value in median.items():
        print(f"  {name:9s} {1e3 * value:8.3f} ms per chain-step")
    print(f"ratio together/separate = {median['together'] / median['separate']:.3f}{note}")


if __name__ == "__main__":
    main()

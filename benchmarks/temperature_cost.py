"""Cost of measuring the configurational temperature, against the round it qualifies
(MNIST MLP EAE, default settings, one process).

Once per decoder update (and per ensemble draw) the trainer measures T_conf on two
disjoint batches of ``tconf_batch`` samples per chain: one gradient on batch a, one on
batch b and a Hutchinson Hessian-vector product on both (eae.temperature). A round is
``encoder_steps`` Simmering steps of batch 32 per chain.

  round      one decoder update's encoder round (50 steps, 4 chains, adaptive thermostat)
  tconf      one T_conf measurement at the default tconf_batch (and at tconf_batch / 4)

Runs alternate and the median of several repeats is reported. Prints milliseconds and
the ratio T_conf measurement / round, i.e. the overhead per decoder update.

    python benchmarks/temperature_cost.py [--steps 50] [--repeats 7] [--tconf-batch 128]
    python benchmarks/temperature_cost.py --quick   # seconds: same code, toy sizes

``--quick`` only checks that the benchmark still runs (tests/test_benchmarks.py); its
figures are labelled as such and mean nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
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

QUICK = {"steps": 3, "repeats": 2, "chains": 2, "tconf_batch": 16}


def make_trainer(data, args, tconf_batch):
    encoder = ChainEncoder.build(lambda s: mlp_encoder(784, (512, 256), 64, seed=s),
                                 args.chains, 0)
    cfg = SimmeringConfig(temperature=1e-8, dt=0.2, thermostat="adaptive")
    trainer = EAETrainer(encoder, mlp_decoder(64, (256, 512), 784, seed=1), [data], cfg,
                         TrainSettings(encoder_steps=args.steps, batch_size=32,
                                       chains=args.chains, tconf_batch=tconf_batch,
                                       deterministic=False))
    trainer.initialize()
    return trainer


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--tconf-batch", dest="tconf_batch", type=int, default=128)
    return _quick.parse_args(parser, QUICK, argv)


def main():
    args = parse_args()
    note = _quick.note(args)
    data = np.random.default_rng(0).uniform(size=(4000, 784)).astype("float32")
    small = max(1, args.tconf_batch // 4)
    trainer = make_trainer(data, args, args.tconf_batch)
    indices = trainer.indices_for(0, args.steps)

    def round_():
        trainer.state, _, grads = trainer._round(trainer.state, indices)
        _ = grads[0].numpy()

    def tconf(batch):
        def run():
            # same trainer (one compiled round); a new batch size retraces once, in warm-up
            trainer.settings = dataclasses.replace(trainer.settings, tconf_batch=batch)
            trainer.measure_configurational(int(time.perf_counter_ns() % 1000))
        return run

    loops = {"round": round_, f"tconf b={args.tconf_batch}": tconf(args.tconf_batch),
             f"tconf b={small}": tconf(small)}
    for fn in loops.values():  # compile and warm up
        fn()
    times = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, fn in loops.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    median = {name: float(np.median(t)) for name, t in times.items()}
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"MNIST MLP EAE 784-512-256-64, C = {args.chains} chains, round of {args.steps} "
          f"steps of batch 32, {args.repeats} repeats on {device}{note}")
    for name, value in median.items():
        print(f"  {name:14s} {1e3 * value:9.2f} ms")
    for batch in (args.tconf_batch, small):
        print(f"ratio tconf b={batch}/round = "
              f"{median[f'tconf b={batch}'] / median['round']:.3f}{note}")


if __name__ == "__main__":
    main()

"""Per-step cost of Simmering vs Adam on the MNIST MLP autoencoder, in one process.

Both need one forward/backward pass per step; the thermostat adds only element-wise
work and one float64 reduction per half step. Three loops run the same compiled
structure (a tf.range loop over pre-drawn mini-batches of 32):

  adam        Adam on all autoencoder weights (a plain AE training step)
  simmering   Simmering on all autoencoder weights (sampler vs optimizer)
  eae         the EAE inner step: Simmering on the encoder + decoder-gradient sum

  eae_adaptive        the EAE step with the adaptive thermostat, no Langevin noise
  eae_adaptive_k      the same at the default langevin_every (noise every k steps)

Runs alternate and the median of several repeats is reported, since one machine's
timings drift. Prints per-step milliseconds, the ratios to Adam (target ≤ 1.10) and the
adaptive thermostat's cost against the chain's EAE step (targets: ≤ 1.05 without noise,
≤ 1.2 at the default langevin_every).

    python benchmarks/sampler_vs_adam.py [--steps 200] [--repeats 7] [--chain 30]
    python benchmarks/sampler_vs_adam.py --quick   # seconds: same code, toy sizes

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

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from eae import sampler as simmering  # noqa: E402
from eae.core.models import mlp_decoder, mlp_encoder  # noqa: E402
from eae.core.trainer import EAETrainer, TrainSettings, batch_indices, mse_loss  # noqa: E402

# --quick sizes. Compiling, not stepping, is what a quick run spends its time on: 5 steps
# make the warm-up's indices[:5] the timed shape (one trace per loop), and the graph
# unrolls the Nosé–Hoover chain link by link (chain 30: ~7 s to compile per loop, 3: ~1 s).
QUICK = {"steps": 5, "repeats": 2, "chain": 3}


def build(seed=0):
    return mlp_encoder(784, (512, 256), 64, seed=seed), mlp_decoder(64, (256, 512), 784, seed=seed + 1)


def adam_loop(encoder, decoder, data):
    variables = encoder.trainable_variables + decoder.trainable_variables
    opt = keras.optimizers.Adam(1e-3)
    opt.build(variables)

    @tf.function
    def run(indices):
        for i in tf.range(tf.shape(indices)[0]):
            with tf.GradientTape() as tape:
                loss = mse_loss(encoder, decoder, (tf.gather(data, indices[i]),))
            opt.apply_gradients(zip(tape.gradient(loss, variables), variables))
        return loss

    return run


def simmering_loop(encoder, decoder, data, cfg):
    variables = encoder.trainable_variables + decoder.trainable_variables

    def vg_for(idx):
        return simmering.potential_value_and_grad(
            variables, lambda: mse_loss(encoder, decoder, (tf.gather(data, idx),)))

    sampler = simmering.Simmering(variables, cfg)
    state, _ = sampler.init(vg_for(tf.range(32)), 0)

    @tf.function
    def run(state, indices):
        for i in tf.range(tf.shape(indices)[0]):
            state, _, _ = sampler.step(state, vg_for(indices[i]))
        return state

    holder = {"state": state}

    def call(indices):
        holder["state"] = run(holder["state"], indices)

    return call


def eae_loop(encoder, decoder, data, cfg):
    trainer = EAETrainer(encoder, decoder, [data.numpy()], cfg,
                         TrainSettings(encoder_steps=1, batch_size=32, deterministic=False))
    trainer.initialize()

    def call(indices):
        trainer.state, _, _ = trainer._round(trainer.state, indices)

    return call


def time_call(fn, indices) -> float:
    start = time.perf_counter()
    fn(indices)
    # results are pulled to the host by the loops' outputs; a tiny read syncs devices
    _ = float(tf.reduce_sum(tf.zeros(1)))
    return (time.perf_counter() - start) / int(indices.shape[0])


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--chain", type=int, default=30, help="Nosé–Hoover chain length")
    parser.add_argument("--sy-order", type=int, default=3)
    return _quick.parse_args(parser, QUICK, argv)


def main():
    args = parse_args()
    note = _quick.note(args)

    rng = np.random.default_rng(0)
    data = tf.constant(rng.uniform(size=(5000, 784)).astype("float32"))
    indices = tf.constant(batch_indices(5000, 32, 0, 0, args.steps))
    cfg = simmering.SimmeringConfig(temperature=1e-6, dt=1e-3, chain_length=args.chain,
                                    sy_order=args.sy_order)
    adaptive = dataclasses.replace(cfg, thermostat="adaptive")
    loops = {
        "adam": adam_loop(*build(), data),
        "simmering": simmering_loop(*build(), data, cfg),
        "eae": eae_loop(*build(), data, cfg),
        "eae_adaptive": eae_loop(*build(), data,
                                 dataclasses.replace(adaptive, langevin_friction=0.0)),
        "eae_adaptive_k": eae_loop(*build(), data, adaptive),
    }
    for fn in loops.values():  # compile and warm up
        fn(indices[:5])
        fn(indices)
    times = {name: [] for name in loops}
    for _ in range(args.repeats):
        for name, fn in loops.items():
            times[name].append(time_call(fn, indices))
    median = {name: float(np.median(t)) for name, t in times.items()}
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    print(f"MNIST MLP 784-512-256-64 autoencoder, batch 32, {args.steps} steps x "
          f"{args.repeats} repeats on {device}; NHC chain {args.chain}, SY order {args.sy_order}"
          f"{note}")
    for name, value in median.items():
        print(f"  {name:10s} {1e3 * value:8.3f} ms/step")
    print(f"ratio simmering/adam = {median['simmering'] / median['adam']:.3f}{note}")
    print(f"ratio eae/adam       = {median['eae'] / median['adam']:.3f}{note}")
    print(f"ratio adaptive (no Langevin noise)/nhc eae step = "
          f"{median['eae_adaptive'] / median['eae']:.3f}{note}")
    print(f"ratio adaptive (langevin_every {adaptive.langevin_every})/nhc eae step = "
          f"{median['eae_adaptive_k'] / median['eae']:.3f}{note}")


if __name__ == "__main__":
    main()

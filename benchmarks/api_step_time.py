"""Time per decoder update: ``eae.fit`` against the workflow's trainer (one process).

Both train the same EAE on the same data with the same settings (a ``datasets:``
entry's defaults: MLP 784-256-128-16, adaptive thermostat, batch 32, T_conf measured
every update, a validation loss):

  eae.fit    the notebook API on an array in memory (``progress=True``, its default)
  workflow   :func:`eae.experiments.images.eae.image_trainer` on a prepared data store
             from the same config blocks, then ``EAETrainer.fit`` as the training stage
             runs it (with its fingerprint; checkpoint and history written after every
             update)

A decoder update is the whole loop body: a round of encoder steps, the Adam step, the
T_conf measurement, the checkpoint and history writes, the progress line. Its time is
taken between successive updates (``EAETrainer.run_update`` is wrapped to note when each
starts), after the first updates (compilation) are left out; runs alternate and the
median over repeats is reported, since one machine's timings drift. Prints ms per
update, each call's fixed cost (building, compiling, checks) and the ratio
eae.fit / workflow per update (target <= 1.05).

    python benchmarks/api_step_time.py [--updates 12] [--steps 50] [--repeats 3]
    python benchmarks/api_step_time.py --quick   # seconds: same code, toy sizes

``--quick`` only checks that the benchmark still runs (tests/test_benchmarks.py); its
figures are labelled as such and mean nothing.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import _quick  # benchmarks/_quick.py, beside this script: the shared --quick option

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import xarray as xr  # noqa: E402

import eae  # noqa: E402
from eae.core.models import resolve_model  # noqa: E402
from eae.core.trainer import EAETrainer, stage_fingerprint  # noqa: E402
from eae.experiments.images.data import SPLIT_CODES  # noqa: E402
from eae.experiments.images.eae import image_trainer  # noqa: E402
from eae.support.config import section  # noqa: E402
from eae.support.io import write_zarr  # noqa: E402
from eae.support.runtime import tf  # noqa: E402

QUICK = {"n": 200, "side": 8, "hidden": 16, "steps": 3, "updates": 5, "skip": 2, "repeats": 1}

#: update start times of the run in progress (filled by the wrapped run_update)
STARTS: list[float] = []
_run_update = EAETrainer.run_update


def _timed_run_update(self):
    STARTS.append(time.perf_counter())
    return _run_update(self)


def per_update(call, skip: int) -> tuple[float, float]:
    """(median seconds between successive updates after the first ``skip``, seconds of
    the whole call not spent in updates)."""
    STARTS.clear()
    t0 = time.perf_counter()
    call()
    total = time.perf_counter() - t0
    gaps = np.diff(STARTS[skip:])
    step = float(np.median(gaps))
    return step, total - step * len(STARTS)


def write_store(path: Path, x: np.ndarray, n_val: int, side: int) -> Path:
    """A prepared image store as the workflow's data stage writes it: the samples
    (train, then ``n_val`` for validation) and two test samples (training reads none,
    but the stage loads a test split)."""
    x = np.concatenate([x, x[:2]])
    split = np.full(len(x), SPLIT_CODES["train"], np.int8)
    split[-n_val - 2:] = SPLIT_CODES["val"]
    split[-2:] = SPLIT_CODES["test"]
    ds = xr.Dataset({"images": (("sample", "row", "col"), x.reshape(len(x), side, side)),
                     "split": (("sample",), split)},
                    coords={"sample": np.arange(len(x))}, attrs={"unit_interval": True})
    return write_zarr(ds, path)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n", type=int, default=5000, help="samples (a tenth for validation)")
    parser.add_argument("--side", type=int, default=28, help="images side x side")
    parser.add_argument("--hidden", type=int, default=None,
                        help="one hidden layer of this width (default: the schema's MLP)")
    parser.add_argument("--steps", type=int, default=50, help="encoder steps per update")
    parser.add_argument("--updates", type=int, default=12, help="decoder updates per run")
    parser.add_argument("--skip", type=int, default=2, help="first updates left out")
    parser.add_argument("--repeats", type=int, default=3)
    return _quick.parse_args(parser, QUICK, argv)


def main():
    args = parse_args()
    note = _quick.note(args)
    warnings.simplefilter("ignore", eae.api.EAEWarning)  # short runs reach no equilibrium
    EAETrainer.run_update = _timed_run_update

    rng = np.random.default_rng(0)
    x = rng.random((args.n, args.side * args.side)).astype("float32")
    n_val = max(2, args.n // 10)
    model = {"latent_dim": 16}
    if args.hidden:
        model.update(encoder_hidden=[args.hidden], decoder_hidden=[args.hidden])
    train = {"decoder_updates": args.updates, "encoder_steps": args.steps}
    blocks = {"model": section("datasets._.model", model),
              "sampler": section("datasets._.eae.sampler", {}),
              "train": section("datasets._.eae.train", train)}
    # the workflow gets the concrete block (what a datasets: entry resolves to)
    cfg = {**blocks, "model": resolve_model(blocks["model"], (args.side, args.side), True)}

    with tempfile.TemporaryDirectory() as tmp:
        store = write_store(Path(tmp) / "data.zarr", x, n_val, args.side)
        images = x.reshape(len(x), args.side, args.side)

        def api():
            eae.fit(images[:-n_val], validation=images[-n_val:], model=model, train=train)

        def workflow():
            trainer, _ = image_trainer(cfg, store)
            fingerprint = stage_fingerprint(cfg, store, "eae.experiments.images.eae")
            with tempfile.TemporaryDirectory() as out:
                trainer.fit(out, fingerprint=fingerprint)

        runs = {"eae.fit": api, "workflow": workflow}
        times = {name: [] for name in runs}
        for _ in range(args.repeats):
            for name, run in runs.items():
                times[name].append(per_update(run, args.skip))

    step = {name: float(np.median([t[0] for t in ts])) for name, ts in times.items()}
    fixed = {name: float(np.median([t[1] for t in ts])) for name, ts in times.items()}
    device = "GPU" if tf.config.list_physical_devices("GPU") else "CPU"
    arch = cfg["model"]
    print(f"EAE MLP {args.side * args.side}-{'-'.join(map(str, arch['encoder_hidden']))}-"
          f"{arch['latent_dim']}, {args.n - n_val} samples, batch 32, {args.steps} encoder steps "
          f"per update, {args.updates} updates ({args.skip} left out) x {args.repeats} repeats on "
          f"{device} ({tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()} "
          f"threads){note}")
    for name in runs:
        print(f"  {name:9s} {1e3 * step[name]:9.2f} ms per decoder update, "
              f"{fixed[name]:6.2f} s fixed per call")
    print(f"ratio api/workflow = {step['eae.fit'] / step['workflow']:.3f} per decoder update "
          f"(target <= 1.05){note}")


if __name__ == "__main__":
    main()

"""The pieces behind :mod:`eae.api`: input checks, settings, the trainer, progress
output, the warnings after training and sampling, and the saved folder.

Kept apart from :mod:`eae.api` so that the public module reads as its API. Nothing here
imports TensorFlow at module level: ``import eae.api`` stays cheap and a bad argument
fails before TensorFlow starts.
"""

from __future__ import annotations

import contextlib
import dataclasses
import difflib
import hashlib
import json
import logging
import os
import shutil
import sys
import warnings
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

logger = logging.getLogger("eae")

#: The saved folder's layout version (``settings.json`` ``format``); bumped on change.
SAVE_FORMAT = "eae-api-1"
#: What each flat keyword of :func:`eae.fit` overrides: the block it belongs to.
FLAT_KEYS = {
    "latent_dim": "model",
    "temperature": "sampler", "thermostat": "sampler", "dt": "sampler",
    "decoder_updates": "train", "encoder_steps": "train", "batch_size": "train",
    "learning_rate": "train", "chains": "train", "seed": "train",
}
#: The ``datasets:`` entry sections the blocks are checked against (one schema, one set
#: of defaults for a notebook and the workflow).
SECTIONS = {"model": "datasets._.model", "sampler": "datasets._.eae.sampler",
            "train": "datasets._.eae.train"}
ENSEMBLE_SECTION = "datasets._.eae.ensemble"
#: The message :class:`eae.support.progress.Progress` logs (args: label, done, total,
#: percent, elapsed, ETA, message); tests pin it, so a change there shows up here.
PROGRESS_MSG = "%s %d/%d (%.0f%%) elapsed %s ETA %s %s"
#: Files of a saved model folder.
FILES = {"settings": "settings.json", "data": "train_x.npy", "state": "final_state.npz",
         "history": "history.csv", "provenance": "provenance.json",
         "encoder": "encoder.keras", "decoder": "decoder.keras"}


class EAEWarning(UserWarning):
    """Base of the warnings :mod:`eae.api` issues about a trained or sampled EAE."""


class TemperatureWarning(EAEWarning):
    """The measured T_kin/T or T_conf/T left the bands of :mod:`eae.core.temperature`
    (what the workflow's tables flag as ``T flag``)."""


class ImproperEnsembleWarning(EAEWarning):
    """‖θ − θ₀‖ kept growing (:mod:`eae.core.wellposed`): the members are no draws of a
    stationary ensemble (what the workflow's tables flag as ``improper``)."""


# --------------------------------------------------------------------------- arguments

def reject_unknown(unknown: Mapping[str, Any]) -> None:
    """TypeError naming keywords :func:`eae.fit` does not take, with the block a key
    belongs to when it is a setting of one (``tau`` -> ``sampler={'tau': ...}``)."""
    if not unknown:
        return
    from eae.support.config import section_defaults

    keys = {block: set(section_defaults(path)) for block, path in SECTIONS.items()}
    hints = []
    for name in sorted(unknown):
        blocks = [b for b, k in keys.items() if name in k]
        close = difflib.get_close_matches(name, list(FLAT_KEYS) + ["validation", "model", "sampler",
                                                                   "train", "checkpoint_dir",
                                                                   "progress"], n=1)
        if blocks:
            hints.append(f"{name!r} is a key of {blocks[0]}=: pass {blocks[0]}={{{name!r}: ...}}")
        elif close:
            hints.append(f"{name!r}: did you mean {close[0]!r}?")
        else:
            hints.append(f"{name!r}")
    raise TypeError("fit() got unexpected keyword argument(s): " + "; ".join(hints))


def merged_settings(flat: Mapping[str, Any], blocks: Mapping[str, Any]) -> dict[str, dict]:
    """The model / sampler / train blocks with the flat keywords (those not None) laid
    over them, each checked and filled as the section of a ``datasets:`` entry, so that
    defaults and errors (:class:`eae.support.config.ConfigError` naming e.g.
    ``train.decoder_updates``) are the workflow's."""
    from eae.support.config import section

    out = {}
    for name, path in SECTIONS.items():
        block = blocks.get(name)
        if block is not None and not isinstance(block, Mapping):
            raise TypeError(f"{name}= must be a dict of {name} settings, got {type(block).__name__}")
        value = dict(block or {})
        value.update({k: v for k, v in flat.items() if FLAT_KEYS[k] == name and v is not None})
        out[name] = section(path, value, where=name)
    return out


def ensemble_options(members: Any, thin: Any, burn_in: Any) -> dict:
    """Checked sampling settings of one :meth:`eae.api.EAEModel.ensemble` call (the
    schema's ``ensemble`` block: its ranges, its defaults for the rest)."""
    from eae.support.config import section

    given = {"members": members, "thin": thin, "burn_in": burn_in}
    return section(ENSEMBLE_SECTION, {k: v for k, v in given.items() if v is not None},
                   where="ensemble")


def check_seed(seed: Any) -> int | None:
    if seed is None:
        return None
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def check_samples(x: Any, name: str = "x", min_samples: int = 1,
                  sample_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """``x`` as float32 [n, ...] after the checks a user's array needs: numeric, a sample
    axis, at least ``min_samples`` samples, no empty axis, finite; with ``sample_shape``
    its samples must have that shape (grey images may add or drop a last axis of 1)."""
    try:
        arr = np.asarray(x)
    except Exception as err:  # ragged lists and the like
        raise ValueError(f"{name} must be a numeric array [n, ...]: {err}") from None
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"{name} must be a numeric array (bool, int or float), got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{name} must be [n, ...] with one sample per row (vectors [n, d], images "
                         f"[n, rows, cols] or [n, rows, cols, 1|3]); got shape {arr.shape}")
    if arr.shape[0] < min_samples:
        raise ValueError(f"{name} needs at least {min_samples} sample(s), got {arr.shape[0]}")
    if 0 in arr.shape[1:]:
        raise ValueError(f"{name} has an empty axis: shape {arr.shape}")
    if sample_shape is not None:
        arr = _match_shape(arr, tuple(sample_shape), name)
    with np.errstate(over="ignore"):  # reported below, as a ValueError naming the sample
        out = arr.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        first = int(np.flatnonzero(bad.reshape(len(out), -1).any(axis=1))[0])
        # float64 values beyond float32's range turn infinite only in the cast
        overflow = arr.dtype.kind == "f" and np.isfinite(arr).all()
        what = "value(s) beyond float32's range" if overflow else "NaN or infinite value(s)"
        raise ValueError(f"{name} holds {int(bad.sum())} {what}, the first in sample {first}; "
                         "remove or impute them")
    return out


def _match_shape(arr: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    got = tuple(arr.shape[1:])
    if got == shape:
        return arr
    if got + (1,) == shape or got == shape + (1,):  # grey images with or without channel
        return arr.reshape((len(arr),) + shape)
    raise ValueError(f"{name} has samples of shape {got}; the model was trained on {shape}")


def data_stats(x: np.ndarray) -> dict:
    """What a saved model records of its training data (and what decides
    ``output_activation: auto``)."""
    lo, hi = float(x.min()), float(x.max())
    return {"n": int(len(x)), "sample_shape": [int(s) for s in x.shape[1:]], "dtype": str(x.dtype),
            "min": lo, "max": hi, "mean": float(x.mean(dtype=np.float64)),
            "std": float(x.std(dtype=np.float64)), "unit_interval": bool(lo >= 0 and hi <= 1),
            "sha256": array_digest(x)}


def array_digest(x: np.ndarray) -> str:
    digest = hashlib.sha256(str((x.shape, x.dtype.str)).encode())
    digest.update(memoryview(np.ascontiguousarray(x)).cast("B"))
    return digest.hexdigest()


# --------------------------------------------------------------------------- the trainer

def build_trainer(model_cfg: Mapping, sampler: Mapping, train: Mapping, x_model: np.ndarray,
                  val_model: np.ndarray | None = None):
    """The workflow's :class:`eae.core.trainer.EAETrainer` for arrays already in the
    model's layout, built as :func:`eae.experiments.images.eae.image_trainer` builds it:
    seeded decoder, :func:`eae.core.trainer.build_chain_encoder` of the same builder,
    :func:`eae.core.trainer.mse_loss`, settings from the validated blocks."""
    from eae.core.models import build_from_config
    from eae.core.sampler import SimmeringConfig
    from eae.core.trainer import EAETrainer, TrainSettings, build_chain_encoder, mse_loss

    shape = x_model.shape[1:]
    seed = train["seed"]
    _, decoder = build_from_config(model_cfg, shape, seed=seed)
    encoder = build_chain_encoder(lambda s: build_from_config(model_cfg, shape, seed=s)[0],
                                  train.get("chains", 1), seed)
    return EAETrainer(encoder, decoder, [x_model], SimmeringConfig.from_dict(dict(sampler)),
                      TrainSettings.from_dict(dict(train)), loss_fn=mse_loss,
                      val_arrays=[val_model] if val_model is not None and len(val_model) else None)


@contextlib.contextmanager
def seeded(trainer, seed: int | None) -> Iterator[None]:
    """While open, the trainer draws its mini-batches and Langevin noise from ``seed``
    (mixed with the training seed) instead of the chain's own streams; both return on
    exit. Positions, momenta and the step advance as usual, so the same seed from the
    same state gives the same draws and the next unseeded call continues the chain."""
    if seed is None:
        yield
        return
    from eae.support.runtime import tf

    if trainer.state is None:
        trainer.initialize()
    settings, state_seed = trainer.settings, trainer.state.seed
    words = np.random.SeedSequence([int(settings.seed), int(seed), 0x5EED]).generate_state(2)
    trainer.settings = dataclasses.replace(settings, seed=int(words[0]) & 0x7FFFFFFF)
    trainer.state = trainer.state._replace(seed=tf.constant([int(w) for w in words], tf.int64))
    try:
        yield
    finally:
        trainer.settings = settings
        trainer.state = trainer.state._replace(seed=state_seed)


# --------------------------------------------------------------------------- progress

class BarHandler(logging.Handler):
    """Progress records as one redrawn ``\\r`` line with a bar; other records as lines."""

    def __init__(self, stream):
        super().__init__()
        self.stream = stream
        self._open = 0  # length of the bar line on screen (0: none)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if record.msg == PROGRESS_MSG and len(record.args or ()) == 7:
                self._bar(*record.args)
            else:
                self._close()
                self.stream.write(f"{record.levelname.lower()}: {record.getMessage()}\n")
            self.stream.flush()
        except Exception:  # noqa: BLE001 (logging's contract: never raise from emit)
            self.handleError(record)

    def _bar(self, label, done, total, pct, elapsed, eta, message) -> None:
        filled = int(round(20 * done / max(total, 1)))
        text = (f"{label} [{'#' * filled}{'.' * (20 - filled)}] {done}/{total} ({pct:.0f}%) "
                f"{elapsed} ETA {eta} {message}".rstrip())
        # wrapping would break the \r redraw
        width = max(20, shutil.get_terminal_size((100, 20)).columns - 1)
        text = text[:width]
        self.stream.write("\r" + text.ljust(self._open))
        self._open = len(text)
        if done >= total:
            self._close()

    def _close(self) -> None:
        if self._open:
            self.stream.write("\n")
            self._open = 0

    def close(self) -> None:
        self._close()
        super().close()


def redraws(stream) -> bool:
    """Whether ``stream`` shows a ``\\r`` redraw: a terminal, or a Jupyter kernel's
    output stream (not a TTY, yet it renders carriage returns)."""
    try:
        if stream.isatty():
            return True
    except (AttributeError, ValueError):
        return False
    return type(stream).__module__.startswith("ipykernel")


@contextlib.contextmanager
def progress_output(enabled: bool, stream=None) -> Iterator[None]:
    """Make the trainer's progress lines (logger ``eae``, INFO) visible while open: a
    bar on a terminal or in a notebook, plain lines otherwise, on stderr. A logger
    someone configured already (handlers on ``eae``, e.g.
    :func:`eae.support.progress.setup_logging`) is left alone, and so is everything
    with ``enabled`` false."""
    log = logging.getLogger("eae")
    if not enabled or log.handlers:
        yield
        return
    stream = stream or sys.stderr
    if redraws(stream):
        handler: logging.Handler = BarHandler(stream)
    else:
        handler = logging.StreamHandler(stream)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    level, propagate = log.level, log.propagate
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.propagate = False  # the root's handlers would print every line a second time
    log.addHandler(handler)
    try:
        yield
    finally:
        log.removeHandler(handler)
        handler.close()
        log.setLevel(level)
        log.propagate = propagate


# --------------------------------------------------------------------------- warnings

def training_attrs(history) -> dict:
    """training's ``train_…`` attrs as an ensemble store carries them (temperatures of
    the last tenth, ‖θ − θ₀‖ slopes): :func:`eae.core.ensemble._training_attrs`."""
    from eae.core.ensemble import _training_attrs

    return _training_attrs(history) if len(history) else {}


def warn_flags(attrs: Mapping, prefix: str, phase: str, sampler_config) -> list[str]:
    """Warn (:class:`TemperatureWarning`, :class:`ImproperEnsembleWarning`) about what
    the workflow's tables flag for one phase (``train_`` / ``ensemble_`` attrs); returns
    the messages. The bands and the slope limit are those of :mod:`eae.core.temperature`
    and :mod:`eae.core.wellposed`."""
    from eae.core.temperature import TemperatureCheck, remedy
    from eae.core.wellposed import IMPROPER_SLOPE

    said = []
    check = TemperatureCheck.from_attrs(attrs, prefix)
    if check is not None and check.flagged:
        cause = remedy(sampler_config.thermostat, sampler_config.chain_length, check)
        said.append(f"{phase} not at its target T: {'; '.join(check.reasons)}; likely cause: {cause}")
        warnings.warn(TemperatureWarning(said[-1]), stacklevel=3)
    slope = attrs.get(f"{prefix}displacement_slope", float("nan"))
    if slope is not None and np.isfinite(slope) and slope > IMPROPER_SLOPE:
        said.append(f"{phase}: ‖θ − θ₀‖ keeps growing (log–log slope {slope:.2f} > "
                    f"{IMPROPER_SLOPE} against steps), so the members are no draws of a "
                    "stationary ensemble: exp(−L/T) does not confine the encoder at this T "
                    "(lower temperature) or it is still descending (more updates or steps)")
        warnings.warn(ImproperEnsembleWarning(said[-1]), stacklevel=3)
    return said


# --------------------------------------------------------------------------- the folder

def is_model_folder(path: Path) -> bool:
    try:
        return json.loads((path / FILES["settings"]).read_text()).get("format") == SAVE_FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def write_folder(path: str | os.PathLike, trainer, meta: Mapping, x: np.ndarray, history,
                 record: Mapping) -> Path:
    """Publish a saved model at ``path`` atomically: written under a hidden name beside
    it, then renamed into place (:func:`eae.support.io.replace_dir`), so an interrupted
    save leaves the old folder or none, never half of one. A folder that is not a saved
    model is never replaced."""
    from eae.support.io import atomic_path, replace_dir, write_csv_atomic, write_text_atomic

    path = Path(path)
    if path.exists() and not is_model_folder(path):
        raise FileExistsError(f"{path} exists and is not a saved EAE model; choose another path")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        trainer.save_models(tmp)  # encoder.keras, decoder.keras, final_state.npz
        with atomic_path(tmp / FILES["data"]) as part:
            np.save(part, x)
        write_csv_atomic(history, tmp / FILES["history"])
        write_text_atomic(tmp / FILES["settings"], json.dumps(meta, indent=2, sort_keys=True))
        write_text_atomic(tmp / FILES["provenance"],
                          json.dumps(record, indent=2, sort_keys=True, default=str))
        replace_dir(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return path


def read_folder(path: str | os.PathLike) -> tuple[dict, np.ndarray]:
    """(settings.json, training samples) of a saved model, checked: its format and the
    samples' checksum."""
    path = Path(path)
    if not (path / FILES["settings"]).exists():
        raise FileNotFoundError(f"{path} is not a saved EAE model (no {FILES['settings']})")
    meta = json.loads((path / FILES["settings"]).read_text())
    if meta.get("format") != SAVE_FORMAT:
        raise ValueError(f"{path}: saved as format {meta.get('format')!r}; this eae reads "
                         f"{SAVE_FORMAT!r}")
    x = np.load(path / FILES["data"])
    if array_digest(x) != meta["data"]["sha256"]:
        raise ValueError(f"{path / FILES['data']}: checksum differs from the one saved "
                         "(the file was changed or damaged)")
    return meta, x

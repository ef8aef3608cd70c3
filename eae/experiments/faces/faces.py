"""Faces experiment (SPEC §3.3, paper Section 4.3, Fig 3): convolutional EAEs at
several temperatures, and how "generic" their reconstructions are.

Data (``results/data/faces.zarr``, one store whatever the source):

* ``images`` (sample, row, col, channel): pixels in [0, 1]. Stored as uint8 with the
  CF ``scale_factor`` 1/255 (lossless for 8-bit sources such as JPEG, 4× smaller than
  float32), so ``xarray.open_zarr`` decodes it to k/255 (float64) while
  :func:`load_faces` hands out the raw uint8 (training keeps 4× less in memory and
  converts on the fly, see :func:`uint8_mse_loss`). ``channel`` is 3 for CelebA, 1 for
  the offline faces.
* ``split`` (sample,) int8, 0/1/2 = train/val/test (CF flag attrs); samples are stored
  grouped by split, each group in source order, so one split is a contiguous slab.
* ``source_index`` (sample,) int64: CelebA — the line of the image in
  ``list_eval_partition.txt`` (0-based; image ``000001.jpg`` is line 0); offline — the
  index in ``skimage.data.lfw_subset()``.

Sources: ``celeba`` — a user-supplied folder with ``img_align_celeba/*.jpg`` and
``list_eval_partition.txt`` (the official split); every image is centre-cropped to
``crop`` × ``crop`` pixels (default 148, the crop of most CelebA VAE work; 140 is the
other common choice) and resized to ``size`` × ``size`` with Pillow's antialiased
bilinear filter, streamed to the store ``chunk_images`` at a time (memory holds one
chunk, never the 200 000 images). ``lfw`` (offline default) — the first ``n_images``
(≤ 100, the faces) of scikit-image's ``lfw_subset()`` (25 × 25 grayscale), resized to
``size`` and split at random (seeded) in ``fractions``.

Stages: :func:`prepare_faces_stage`, :func:`train_faces_stage` (one EAE per
temperature, the shared :class:`eae.core.trainer.EAETrainer`), :func:`ensemble_faces_stage`
(test-face latents of M encoder samples, decoder frozen, streamed to Zarr) and
:func:`faces_report_stage` (Fig 3 and ``faces.csv``).

The "generic vs individual" measure (:func:`generic_ratio`): the mean pairwise
Euclidean distance between the reconstructions of different test faces divided by
that between the originals. 1 means reconstructions differ from each other as much as
the faces do; 0 means every face is reconstructed as the same image — which a dead
decoder's flat grey output also achieves. Hence :func:`generic_share`: the share of
test reconstructions that correlate ≥ 0.9 with the training mean face (a constant
image counts as a failure), beside the same share of the test faces themselves. The
paper's claim (a hot EAE reconstructs every face as one generic *face*) is marked
reproduced (column ``paper_claim`` of the hot row) only when the hot ensemble is
stationary (:mod:`eae.core.wellposed`) and its generic share exceeds both the originals'
and the cold model's.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import xarray as xr

from eae.experiments.images.data import SPLIT_CODES, SPLITS, DataError, random_split
from eae.support.io import ZarrStreamWriter, write_csv_atomic
from eae.support.progress import Progress
from eae.core.temperature import store_temperature_columns
from eae.support.provenance import make_record, now_iso, record_outputs

log = logging.getLogger("eae")

__all__ = [
    "DATA_DEFAULTS",
    "CELEBA_IMAGE_DIR",
    "CELEBA_SPLIT_FILE",
    "LFW_N_FACES",
    "resolve_data_config",
    "read_partition",
    "crop_and_resize",
    "prepare_celeba",
    "prepare_lfw",
    "prepare_faces_stage",
    "FaceSplit",
    "load_faces",
    "to_float",
    "temperature_tag",
    "temperature_from_tag",
    "temperature_tags",
    "raw_inputs",
    "faces_targets",
    "train_config",
    "ensemble_config",
    "uint8_mse_loss",
    "faces_trainer",
    "FACES",
    "train_faces_stage",
    "ensemble_faces_stage",
    "mean_pairwise_distance",
    "generic_ratio",
    "generic_share",
    "identification_accuracy",
    "FacesRun",
    "faces_metrics",
    "faces_table_stage",
    "faces_figure",
    "faces_report_stage",
]

CELEBA_IMAGE_DIR = "img_align_celeba"
CELEBA_SPLIT_FILE = "list_eval_partition.txt"
#: lfw_subset(): the first 100 of its 200 images are faces, the rest background patches.
LFW_N_FACES = 100
SOURCES = ("lfw", "celeba")
PIXEL_SCALE = 1.0 / 255.0  # float64: decodes 255 to exactly 1.0

#: Defaults of ``faces.data`` (workflow/schemas/faces.schema.yaml).
DATA_DEFAULTS: dict[str, Any] = {
    "source": "lfw",
    "path": None,
    "crop": 148,
    "size": 64,
    "n_images": None,
    "fractions": {"train": 0.7, "val": 0.1, "test": 0.2},
    "seed": 0,
    "chunk_images": 1000,
    "workers": 4,
}

#: Defaults of ``faces.report``.
REPORT_DEFAULTS: dict[str, Any] = {"n_show": 8, "dpi": 120, "batch_size": 256}


# --------------------------------------------------------------------------- config


def _is_int(value: Any, minimum: int) -> bool:
    ok = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    return ok and value >= minimum


def resolve_data_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``faces.data`` over :data:`DATA_DEFAULTS`, checked; unknown keys raise DataError."""
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DATA_DEFAULTS))
    if unknown:
        raise DataError(f"faces.data: unknown key(s) {unknown}; known: {sorted(DATA_DEFAULTS)}")
    out = copy.deepcopy(DATA_DEFAULTS)
    out.update({k: (dict(v) if isinstance(v, Mapping) else v) for k, v in cfg.items()})
    if out["source"] not in SOURCES:
        raise DataError(f"faces.data.source must be one of {list(SOURCES)}, got {out['source']!r}")
    for key, minimum in (("crop", 1), ("size", 4), ("seed", 0), ("chunk_images", 1),
                         ("workers", 1)):
        if not _is_int(out[key], minimum):
            raise DataError(f"faces.data.{key} must be an integer >= {minimum}, got {out[key]!r}")
    if out["n_images"] is not None and not _is_int(out["n_images"], 1):
        raise DataError(f"faces.data.n_images must be null or an integer >= 1, got {out['n_images']!r}")
    fr = out["fractions"]
    if set(fr) != set(SPLITS):
        raise DataError(f"faces.data.fractions needs exactly the keys {list(SPLITS)}, got {sorted(fr)}")
    values = [float(fr[s]) for s in SPLITS]
    if min(values) < 0 or values[0] <= 0 or abs(sum(values) - 1.0) > 1e-6:
        raise DataError(f"faces.data.fractions must be >= 0 (train > 0) and sum to 1, got {fr}")
    return out


# --------------------------------------------------------------------------- images


def crop_and_resize(image, crop: int | None, size: int):
    """Centre ``crop`` × ``crop`` square of a PIL image (None: no crop), resized to
    ``size`` × ``size`` (Pillow bilinear, antialiased when shrinking) -> uint8 array
    [size, size, channels]."""
    from PIL import Image

    if crop is not None:
        w, h = image.size
        if w < crop or h < crop:
            raise DataError(f"image of {w} x {h} pixels is smaller than the crop {crop} x {crop}")
        left, top = (w - crop) // 2, (h - crop) // 2
        image = image.crop((left, top, left + crop, top + crop))
    if image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    arr = np.asarray(image, dtype=np.uint8)
    return arr[..., None] if arr.ndim == 2 else arr


def _load_celeba_image(path: Path, crop: int, size: int) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    if not path.is_file():
        raise FileNotFoundError(f"CelebA image listed in {CELEBA_SPLIT_FILE} not found: {path}")
    try:
        with Image.open(path) as im:
            rgb = im.convert("RGB")  # forces the decode: a truncated file fails here
    except (OSError, UnidentifiedImageError, SyntaxError, ValueError) as err:
        raise DataError(f"unreadable image {path}: {err}") from err
    try:
        return crop_and_resize(rgb, crop, size)
    except DataError as err:
        raise DataError(f"{path}: {err}") from None


def read_partition(path: str | os.PathLike) -> tuple[list[str], np.ndarray]:
    """(file names, split codes int8) from CelebA's ``list_eval_partition.txt``
    (``<name>.jpg <0|1|2>`` a line: 0 train, 1 val, 2 test)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CelebA split file not found: {path}")
    names, codes = [], []
    with open(path) as fh:
        for number, line in enumerate(fh, start=1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
                raise DataError(
                    f"{path}, line {number}: expected '<image>.jpg <0|1|2>', got {line.strip()!r}")
            names.append(parts[0])
            codes.append(int(parts[1]))
    if not names:
        raise DataError(f"{path}: no images listed")
    if len(set(names)) != len(names):
        raise DataError(f"{path}: an image is listed more than once")
    return names, np.asarray(codes, dtype=np.int8)


def _grouped_by_split(keep: np.ndarray, codes: np.ndarray) -> np.ndarray:
    """``keep`` reordered train, val, test (source order inside each)."""
    keep = np.sort(np.asarray(keep))
    return np.concatenate([keep[codes[keep] == SPLIT_CODES[s]] for s in SPLITS])


# --------------------------------------------------------------------------- store


def _chunk_dataset(images: np.ndarray, codes: np.ndarray, source_index: np.ndarray,
                   first: int) -> xr.Dataset:
    ds = xr.Dataset(
        {
            # float32 k/255 in memory; encoded back to the exact uint8 k on disk
            "images": (("sample", "row", "col", "channel"),
                       images.astype(np.float32) / np.float32(255.0),
                       {"long_name": "pixel intensity in [0, 1]", "units": "1"}),
            "split": (("sample",), codes.astype(np.int8),
                      {"flag_values": list(SPLIT_CODES.values()), "flag_meanings": " ".join(SPLITS)}),
            "source_index": (("sample",), source_index.astype(np.int64),
                             {"long_name": "index of the image in its source"}),
        },
        coords={"sample": np.arange(first, first + len(images))},
    )
    ds["images"].encoding.update({"dtype": "uint8", "scale_factor": PIXEL_SCALE,
                                  "_FillValue": None})
    return ds


def _write_store(out_path, chunks: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
                 n: int, size: int, channels: int, attrs: dict, record_fn) -> Path:
    """Stream (images uint8, split codes, source indices) chunks into one atomic store."""
    static = xr.Dataset(coords={"row": np.arange(size), "col": np.arange(size),
                                "channel": np.arange(channels)})
    writer = ZarrStreamWriter(out_path, "sample", static=static)
    counts = dict.fromkeys(SPLITS, 0)
    progress = Progress(n, "prepare faces")
    done = 0
    try:
        for images, codes, source_index in chunks:
            with warnings.catch_warnings():
                # k/255 floats packed back into uint8 k: there are no NaNs to need a _FillValue
                warnings.filterwarnings("ignore", message="saving variable .* integer dtype")
                writer.append(_chunk_dataset(images, codes, source_index, done))
            for s in SPLITS:
                counts[s] += int((codes == SPLIT_CODES[s]).sum())
            done += len(images)
            progress.update(done)
        if done == 0:
            raise DataError("faces: no images selected")
        record = record_fn(counts)
        path = writer.close(attrs={**attrs, "split_counts": counts}, provenance=record)
    except BaseException:
        writer.abort()
        raise
    log.info("wrote %s: %s", out_path, counts)
    return path


def prepare_celeba(cfg: Mapping[str, Any] | None, out_path: str | os.PathLike) -> Path:
    """CelebA from ``cfg["path"]`` (a folder with ``img_align_celeba/`` and
    ``list_eval_partition.txt``) into ``out_path``: official split, centre crop
    ``crop``, resize to ``size``, RGB. ``n_images`` (null: all) keeps a seeded random
    subset, each image keeping its official split. Streamed in chunks of
    ``chunk_images``, decoded by ``workers`` threads; a missing folder, split file or
    image, or an unreadable image raises naming it and leaves no output."""
    started = now_iso()
    cfg = resolve_data_config({**dict(cfg or {}), "source": "celeba"})
    if not cfg["path"]:
        raise DataError("faces.data.path must name the CelebA folder when source is 'celeba'")
    root = Path(cfg["path"]).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"faces.data.path: CelebA folder not found: {root}")
    image_dir = root / CELEBA_IMAGE_DIR
    if not image_dir.is_dir():
        raise FileNotFoundError(f"CelebA image folder not found: {image_dir}")
    split_file = root / CELEBA_SPLIT_FILE
    names, codes = read_partition(split_file)
    keep = np.arange(len(names))
    if cfg["n_images"] is not None and cfg["n_images"] < len(names):
        rng = np.random.default_rng(cfg["seed"])
        keep = rng.choice(len(names), size=cfg["n_images"], replace=False)
    order = _grouped_by_split(keep, codes)
    crop, size, step = cfg["crop"], cfg["size"], cfg["chunk_images"]

    def chunks():
        with ThreadPoolExecutor(cfg["workers"]) as pool:  # PIL releases the GIL decoding
            for start in range(0, len(order), step):
                idx = order[start : start + step]
                paths = [image_dir / names[i] for i in idx]
                images = np.stack(list(pool.map(lambda p: _load_celeba_image(p, crop, size), paths)))
                yield images, codes[idx], idx

    def record(counts):
        return make_record(
            "prepare_faces", config=cfg, seeds={"subset": cfg["seed"]},
            inputs=[split_file], started=started,
            extra={"split_counts": counts, "image_folder": str(image_dir),
                   "split_rule": f"official ({CELEBA_SPLIT_FILE})"})

    attrs = {"dataset": "celeba", "source": "celeba", "crop": crop, "size": size,
             "resize": "Pillow bilinear (antialiased)",
             "split_rule": f"official ({CELEBA_SPLIT_FILE})"}
    log.info("CelebA: %d of %d images, centre crop %d, resize to %d", len(order), len(names),
             crop, size)
    return _write_store(out_path, chunks(), len(order), size, 3, attrs, record)


def _lfw_faces() -> tuple[np.ndarray, str | None]:
    try:
        import skimage
        import skimage.data
    except ImportError as err:
        raise DataError("faces.data.source 'lfw' needs scikit-image (pip install scikit-image)") from err
    images = np.asarray(skimage.data.lfw_subset())
    if images.ndim != 3 or images.shape[0] < LFW_N_FACES:
        raise DataError(f"skimage.data.lfw_subset(): unexpected shape {images.shape}")
    file = Path(skimage.data.__file__).parent / "lfw_subset.npy"
    return images[:LFW_N_FACES], (str(file) if file.is_file() else None)


def prepare_lfw(cfg: Mapping[str, Any] | None, out_path: str | os.PathLike) -> Path:
    """The offline faces: the first ``n_images`` (default and at most 100: the faces)
    of ``skimage.data.lfw_subset()``, 8-bit, resized from 25 × 25 to ``size``,
    grayscale (1 channel), seeded random split in ``fractions``."""
    from PIL import Image

    started = now_iso()
    cfg = resolve_data_config({**dict(cfg or {}), "source": "lfw"})
    faces, file = _lfw_faces()
    n = cfg["n_images"] or LFW_N_FACES
    if n > LFW_N_FACES:
        raise DataError(
            f"faces.data.n_images = {n}: lfw_subset() has only {LFW_N_FACES} faces "
            "(its other 100 images are not faces)")
    u8 = np.round(np.clip(faces[:n], 0.0, 1.0) * 255.0).astype(np.uint8)
    images = np.stack([crop_and_resize(Image.fromarray(a), None, cfg["size"]) for a in u8])
    codes = random_split(n, cfg["fractions"], np.random.default_rng(cfg["seed"]))
    order = _grouped_by_split(np.arange(n), codes)
    split_rule = f"seeded random split, fractions {cfg['fractions']}"

    def record(counts):
        import skimage

        return make_record(
            "prepare_faces", config=cfg, seeds={"split": cfg["seed"]},
            inputs=[file] if file else [], started=started,
            extra={"split_counts": counts, "split_rule": split_rule,
                   "source_data": f"skimage.data.lfw_subset() (scikit-image {skimage.__version__})"})

    attrs = {"dataset": "lfw_subset", "source": "lfw", "size": cfg["size"],
             "resize": "Pillow bilinear from 25 x 25", "split_rule": split_rule}
    chunks = iter([(images[order], codes[order], order)])
    return _write_store(out_path, chunks, n, cfg["size"], 1, attrs, record)


def prepare_faces_stage(cfg: Mapping[str, Any] | None, out_path: str | os.PathLike) -> Path:
    """Stage ``prepare_faces``: the source that ``cfg["source"]`` names."""
    source = dict(cfg or {}).get("source", DATA_DEFAULTS["source"])
    if source == "celeba":
        return prepare_celeba(cfg, out_path)
    if source == "lfw":
        return prepare_lfw(cfg, out_path)
    raise DataError(f"faces.data.source must be one of {list(SOURCES)}, got {source!r}")


@dataclass
class FaceSplit:
    """One split of a faces store: ``images`` uint8 [n, rows, cols, channels],
    ``store_index`` (positions in the store) and ``source_index``."""

    images: np.ndarray
    store_index: np.ndarray
    source_index: np.ndarray

    def __len__(self) -> int:
        return len(self.images)


def _open_raw(path) -> xr.Dataset:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"faces store not found: {path}")
    # Undecoded: images stay uint8 (the scale_factor is applied by to_float when needed).
    return xr.open_zarr(path, consolidated=False, mask_and_scale=False)


def _as_uint8(images: np.ndarray) -> np.ndarray:
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images, 0.0, 1.0) * 255.0).astype(np.uint8)  # a float store


def load_faces(path: str | os.PathLike, split: str, limit: int | None = None) -> FaceSplit:
    """The first ``limit`` (None: all) images of one split, as uint8 (see :func:`to_float`)."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    ds = _open_raw(path)
    idx = np.flatnonzero(ds["split"].values == SPLIT_CODES[split])
    if limit is not None:
        idx = idx[: int(limit)]
    if len(idx) == 0:
        empty = np.zeros((0,) + tuple(ds["images"].shape[1:]), np.uint8)
        return FaceSplit(empty, idx, idx.astype(np.int64))
    # the split is contiguous in the store: read one slab, not scattered chunks
    sub = ds.isel(sample=slice(int(idx[0]), int(idx[-1]) + 1)).isel(sample=idx - idx[0])
    return FaceSplit(_as_uint8(sub["images"].values), idx,
                     sub["source_index"].values.astype(np.int64))


def load_faces_at(path: str | os.PathLike, store_index: np.ndarray) -> np.ndarray:
    """uint8 images at given store positions."""
    ds = _open_raw(path)
    return _as_uint8(ds["images"].isel(sample=np.asarray(store_index)).values)


def to_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1]."""
    return np.asarray(images, np.float32) * np.float32(PIXEL_SCALE)


# --------------------------------------------------------------------------- training


def temperature_tag(temperature: float) -> str:
    """The temperature as it appears in paths: ``1e-05``, ``2.5e-08`` (always with an
    exponent, at most 7 significant digits)."""
    mantissa, exponent = f"{float(temperature):.6e}".split("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    return f"{mantissa}e{exponent}"


def temperature_from_tag(tag: str, temperatures: Iterable[float]) -> float:
    """The configured temperature whose :func:`temperature_tag` is ``tag``."""
    temperatures = [float(t) for t in temperatures]
    tags = temperature_tags({"temperatures": temperatures})
    if tag not in tags:
        raise ValueError(f"temperature {tag!r} is not in faces.temperatures {tags}")
    return temperatures[tags.index(tag)]


def temperature_tags(cfg: Mapping[str, Any]) -> list[str]:
    """Path tags of ``faces.temperatures`` (checked to be distinct)."""
    temperatures = [float(t) for t in cfg["temperatures"]]
    tags = [temperature_tag(t) for t in temperatures]
    if len(set(tags)) != len(tags):
        raise ValueError(f"faces.temperatures {temperatures} are not distinct at 7 significant digits")
    return tags


def raw_inputs(cfg: Mapping[str, Any]) -> dict[str, str]:
    """Files rule prepare_faces tracks: CelebA's split file (the images are read by
    the job); nothing for the offline faces."""
    data = cfg["data"]
    if data.get("source") == "celeba":
        return {"split_file": os.path.join(str(data.get("path")), CELEBA_SPLIT_FILE)}
    return {}


def faces_targets(cfg: Mapping[str, Any]) -> list[str]:
    """Fig 3 and faces.csv when ``faces.enabled`` (for the workflow's default target)."""
    if not cfg.get("enabled", True):
        return []
    return ["results/figures/faces_fig3.png", "results/tables/faces.csv"]


def train_config(cfg: Mapping[str, Any], temperature: float) -> dict[str, Any]:
    """What one EAE's training depends on: model, sampler (with this temperature), train.

    The other temperatures are left out, so adding one to the list retrains nothing."""
    sampler = {**dict(cfg.get("sampler", {})), "temperature": float(temperature)}
    factor = sampler.pop("final_temperature_factor", None)
    if factor is not None:
        sampler["final_temperature"] = float(temperature) * float(factor)
    return {
        "temperature": float(temperature),
        "model": {**dict(cfg.get("model", {})), "kind": "conv"},
        "sampler": sampler,
        "train": dict(cfg.get("train", {})),
    }


def ensemble_config(cfg: Mapping[str, Any], temperature: float) -> dict[str, Any]:
    """:func:`train_config` plus the ``ensemble`` block."""
    return {**train_config(cfg, temperature), "ensemble": dict(cfg.get("ensemble", {}))}


def uint8_mse_loss(encoder, decoder, batch):
    """Mean squared error per pixel of uint8 images, scaled to [0, 1] on the fly."""
    from eae.support.runtime import tf

    from eae.core.chains import chain_mean, chains_of

    x = tf.cast(batch[0], tf.float32) * (1.0 / 255.0)
    err = tf.square(decoder(encoder(x, training=False), training=False) - x)
    return chain_mean(err, chains_of(encoder))


def faces_trainer(run_cfg: Mapping[str, Any], data_path):
    """An :class:`eae.core.trainer.EAETrainer` of the SPEC §3.3 conv EAE for one temperature
    (``run_cfg`` from :func:`train_config`); channels and size follow the data."""
    from eae.core.models import build_from_config
    from eae.core.sampler import SimmeringConfig
    from eae.core.trainer import EAETrainer, TrainSettings, build_chain_encoder

    train = load_faces(data_path, "train")
    if len(train) == 0:
        raise DataError(f"{data_path}: no training images")
    n_val = run_cfg["train"].get("val_images", 256)
    val = load_faces(data_path, "val", limit=n_val) if n_val else None
    seed = int(run_cfg["train"].get("seed", 0))
    shape = train.images.shape[1:]
    _, decoder = build_from_config(run_cfg["model"], shape, seed=seed)
    encoder = build_chain_encoder(lambda s: build_from_config(run_cfg["model"], shape, seed=s)[0],
                                  int(run_cfg["train"].get("chains", 1)), seed)
    trainer = EAETrainer(
        encoder, decoder, [train.images],
        SimmeringConfig.from_dict(run_cfg["sampler"], "faces.sampler"),
        TrainSettings.from_dict(run_cfg["train"], "faces.train", ignore=("val_images",)),
        loss_fn=uint8_mse_loss,
        val_arrays=[val.images] if val is not None and len(val) else None,
    )
    return trainer


def _faces_trainer(run_cfg: Mapping[str, Any], data_path):
    return faces_trainer(run_cfg, data_path), None


def _describe(trainer, splits, run_cfg) -> str:
    return (f"faces EAE T = {run_cfg['temperature']:g}: {trainer.n_train} training images "
            f"{tuple(trainer.train[0].shape[1:])}, {trainer.steps_per_update} encoder steps per "
            f"decoder update, N_f = {trainer.sampler.n_dof}")


def train_faces_stage(run_cfg: Mapping[str, Any], data_path, out_dir, checkpoint_dir=None) -> pd.DataFrame:
    """Stage ``train_faces_eae``: train one temperature's EAE (``run_cfg`` from
    :func:`train_config`, resuming from ``checkpoint_dir``) and save encoder.keras,
    decoder.keras, final_state.npz and history.csv (per decoder update: member-loss
    mean, min, max and quantiles) — :func:`eae.experiments.base.train_stage` of :data:`FACES`."""
    from eae.experiments.base import train_stage

    return train_stage(FACES, run_cfg, data_path, out_dir, checkpoint_dir)


def _recording(trainer, splits, run_cfg, data_path):
    """Latents of the first ``ensemble.n_test`` test faces per member, with a divergence
    guard; per sample ``store_index`` / ``source_index`` of the face."""
    from eae.support.runtime import tf

    from eae.experiments.base import Recording
    from eae.core.trainer import TrainingDiverged

    ens = run_cfg["ensemble"]
    test = load_faces(data_path, "test", limit=ens["n_test"])
    if len(test) == 0:
        raise DataError(f"{data_path}: no test images")
    x_test = tf.constant(to_float(test.images))
    batch = int(ens["batch_size"])
    encode_batch = tf.function(lambda x: trainer.encoder.encode_each(x))  # [C, n, latent]
    weights_finite = tf.function(lambda: tf.reduce_all(
        [tf.reduce_all(tf.math.is_finite(v)) for v in trainer.enc_vars]))

    def record():
        z = np.concatenate([encode_batch(x_test[s : s + batch]).numpy()
                            for s in range(0, len(test), batch)], axis=1)
        # ReLU maps NaN to 0 on CPU, so NaN weights can hide behind finite codes: check all
        if not (np.all(np.isfinite(z)) and bool(weights_finite())
                and np.all(np.isfinite(trainer.state.ke2.numpy()))):
            # sample_ensemble has no divergence guard of its own; raising here aborts the
            # store, so a diverged chain never leaves NaN codes behind as a result
            raise TrainingDiverged(
                f"non-finite encoder weights or latent codes while sampling the ensemble at T = {run_cfg['temperature']:g} "
                "(the chain diverged with the decoder frozen); lower the temperature or dt, "
                "or raise the mass")
        return {"latent": (("sample", "unit"), z)}

    static = xr.Dataset(
        {"store_index": ("sample", test.store_index.astype(np.int64)),
         "source_index": ("sample", test.source_index)},
        coords={"sample": np.arange(len(test)),
                "unit": np.arange(int(trainer.encoder.output_shape[-1]))},
    )
    return Recording(record, static, ("latent",))


def ensemble_faces_stage(run_cfg: Mapping[str, Any], data_path, model_dir, out_path) -> Path:
    """Stage ``faces_ensemble``: latents of the first ``ensemble.n_test`` test faces
    under M encoder samples (decoder frozen, continuing the training chain), streamed
    to Zarr: latent (member, sample, unit), latent_mean (sample, unit), and per sample
    ``store_index`` / ``source_index`` of the face — :func:`eae.core.ensemble.ensemble_stage`
    of :data:`FACES`."""
    from eae.core.ensemble import ensemble_stage

    return ensemble_stage(FACES, run_cfg, data_path, model_dir, out_path)


def _spec():
    from eae.experiments.base import ExperimentSpec

    return ExperimentSpec(name="faces", module="eae.experiments.faces.faces", trainer=_faces_trainer,
                          recording=_recording, train_name="train_faces_eae",
                          ensemble_name="faces_ensemble", describe=_describe)


#: One temperature's faces EAE as an :class:`eae.experiments.base.ExperimentSpec`.
FACES = _spec()


# --------------------------------------------------------------------------- metrics


def _flat64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def pairwise_distances(x: np.ndarray) -> np.ndarray:
    """Euclidean distance matrix [n, n] of the rows of ``x`` (any shape, flattened)."""
    a = _flat64(x)
    sq = np.einsum("ij,ij->i", a, a)
    d2 = sq[:, None] + sq[None, :] - 2.0 * (a @ a.T)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(np.maximum(d2, 0.0))  # round-off can make tiny distances negative


def mean_pairwise_distance(x: np.ndarray) -> float:
    """Mean Euclidean distance over all pairs of different samples."""
    n = len(x)
    if n < 2:
        raise ValueError("mean_pairwise_distance needs at least two samples")
    d = pairwise_distances(x)
    return float(d[np.triu_indices(n, 1)].mean())


def generic_ratio(reconstructions: np.ndarray, originals: np.ndarray) -> float:
    """Mean pairwise distance of the reconstructions of different faces divided by
    that of the originals: 1 = as individual as the faces, 0 = one generic face."""
    return mean_pairwise_distance(reconstructions) / mean_pairwise_distance(originals)


#: a reconstruction is the generic face when it correlates at least this with the mean face
GENERIC_CORRELATION = 0.9


def generic_share(images: np.ndarray, mean_face: np.ndarray,
                  threshold: float = GENERIC_CORRELATION) -> float:
    """Share of ``images`` whose Pearson correlation over pixels with the training mean
    face is at least ``threshold``. A constant image has no correlation and counts as
    a failure, never as generic: a dead decoder's flat grey output is no face at all
    (:func:`generic_ratio` reports it as perfectly generic)."""
    x = _flat64(images)
    m = np.asarray(mean_face, np.float64).ravel()
    x = x - x.mean(axis=1, keepdims=True)
    m = m - m.mean()
    if not len(x):
        return math.nan
    norms = np.linalg.norm(x, axis=1) * np.linalg.norm(m)
    ok = (norms > 0) & (np.abs(x).max(axis=1) > 1e-6)  # (near-)constant images fail
    corr = np.where(ok, (x @ m) / np.where(ok, norms, 1.0), -np.inf)
    return float(np.mean(corr >= threshold))


def identification_accuracy(reconstructions: np.ndarray, originals: np.ndarray) -> float:
    """Fraction of reconstructions whose nearest original (Euclidean) is their own face."""
    r, o = _flat64(reconstructions), _flat64(originals)
    d2 = (r * r).sum(1)[:, None] + (o * o).sum(1)[None, :] - 2.0 * (r @ o.T)
    return float(np.mean(np.argmin(d2, axis=1) == np.arange(len(r))))


@dataclass
class FacesRun:
    """One temperature's trained model and ensemble."""

    temperature: float
    model_dir: Path
    ensemble_path: Path


def _decode(decoder, z: np.ndarray, batch_size: int) -> np.ndarray:
    out = [np.asarray(decoder(z[s : s + batch_size], training=False))
           for s in range(0, len(z), batch_size)]
    return np.concatenate(out).astype(np.float32)


def _latent_spread(ens: xr.Dataset, chunk: int = 50) -> tuple[float, float]:
    """(RMS over samples and units of the member-to-member std of the code,
    RMS over units of the face-to-face std of the ensemble-mean code), streamed over members."""
    n = ens.sizes["member"]
    total = sq = 0.0
    for s in range(0, n, chunk):
        z = ens["latent"].isel(member=slice(s, s + chunk)).values.astype(np.float64)
        total = total + z.sum(0)
        sq = sq + (z * z).sum(0)
    mean = total / n
    within = np.maximum(sq / n - mean * mean, 0.0)
    between = ens["latent_mean"].values.astype(np.float64).var(axis=0)
    return float(np.sqrt(within.mean())), float(np.sqrt(between.mean()))


def _roles(temperatures: Sequence[float]) -> list[str]:
    if len(temperatures) == 1:
        return ["only"]
    hot, cold = max(temperatures), min(temperatures)
    return ["hot" if t == hot else "cold" if t == cold else "intermediate" for t in temperatures]


def train_mean_face(data_path) -> np.ndarray:
    """The mean training face (float64 [rows, cols, channels]), what "generic" compares to."""
    return to_float(load_faces(data_path, "train").images).astype(np.float64).mean(axis=0)


def faces_metrics(run: FacesRun, data_path, batch_size: int = 256,
                  mean_face: np.ndarray | None = None) -> tuple[dict, np.ndarray, np.ndarray]:
    """Per temperature: the table row, the originals and their reconstructions
    (decoder applied to the ensemble-mean code), both float32 [n, rows, cols, channels].
    ``mean_face``: :func:`train_mean_face` (read from ``data_path`` when not given)."""
    from eae.support.runtime import keras

    from eae.support.io import member_view

    store = xr.open_zarr(run.ensemble_path, consolidated=False)
    ens = member_view(store)
    originals = to_float(load_faces_at(data_path, ens["store_index"].values))
    decoder = keras.saving.load_model(Path(run.model_dir) / "decoder.keras", compile=False)
    recon = _decode(decoder, ens["latent_mean"].values.astype(np.float32), batch_size)
    if recon.shape != originals.shape:
        raise ValueError(f"decoder output {recon.shape[1:]} differs from the faces {originals.shape[1:]}")
    history = pd.read_csv(Path(run.model_dir) / "history.csv")
    last = history.iloc[-1]
    within, between = _latent_spread(ens)
    if mean_face is None:
        mean_face = train_mean_face(data_path)
    row = {
        "temperature": run.temperature,
        "n_test": len(originals),
        "n_members": int(ens.sizes["member"]),
        "test_mse": float(np.mean((recon.astype(np.float64) - originals) ** 2)),
        "pairwise_distance_reconstructions": mean_pairwise_distance(recon),
        "pairwise_distance_originals": mean_pairwise_distance(originals),
        "generic_ratio": generic_ratio(recon, originals),
        "generic_share": generic_share(recon, mean_face),
        "generic_share_originals": generic_share(originals, mean_face),
        "identification_accuracy": identification_accuracy(recon, originals),
        "latent_member_std": within,
        "latent_face_std": between,
        "decoder_updates": int(last["update"]),
        "final_member_loss_mean": float(last["loss_mean"]),
        "final_member_loss_q05": float(last["loss_q05"]),
        "final_member_loss_q95": float(last["loss_q95"]),
        **store_temperature_columns(store.attrs),
    }
    return row, originals, recon


def faces_table_stage(runs: Sequence[FacesRun], data_path, table_path,
                      batch_size: int = 256) -> tuple[pd.DataFrame, dict]:
    """``faces.csv``: one row per temperature (hottest first) with the generic-vs-
    individual ratio and its context. Also returns {temperature: (originals, recon)}."""
    runs = sorted(runs, key=lambda r: -r.temperature)
    rows, images = [], {}
    mean_face = train_mean_face(data_path)
    for run, role in zip(runs, _roles([r.temperature for r in runs])):
        row, originals, recon = faces_metrics(run, data_path, batch_size, mean_face)
        rows.append({"role": role, **row})
        images[run.temperature] = (originals, recon)
        log.info("T = %g (%s): generic ratio %.3f, generic share %.2f (test faces %.2f), "
                 "identification %.2f, test MSE %.4g, ensemble %s", run.temperature, role,
                 row["generic_ratio"], row["generic_share"], row["generic_share_originals"],
                 row["identification_accuracy"], row["test_mse"], row["improper"])
    table = pd.DataFrame(rows)
    table["paper_claim"] = ""
    if len(table) > 1:
        hot = table.index[table["role"] == "hot"][0]
        verdict = generic_verdict(table.loc[hot], table[table["role"] == "cold"].iloc[0])
        table.loc[hot, "paper_claim"] = verdict
        log.info("faces: hot model's generic face: %s", verdict)
    write_csv_atomic(table, table_path, float_format="%.6g")
    return table, images


def generic_verdict(hot: Mapping[str, Any], cold: Mapping[str, Any]) -> str:
    """"reproduced" when the hot ensemble is stationary and reconstructs more test faces
    as the mean face than the test faces themselves are and than the cold model does;
    otherwise "not reproduced" and why."""
    why = []
    improper = str(hot.get("improper", ""))
    if improper.startswith("IMPROPER"):
        why.append(f"the hot ensemble is {improper.lower()} (θ keeps growing)")
    share, own, cold_share = (float(hot["generic_share"]), float(hot["generic_share_originals"]),
                              float(cold["generic_share"]))
    if not share > max(own, cold_share):
        why.append(f"generic share {share:.2f} not above the test faces' own {own:.2f} and the "
                   f"cold model's {cold_share:.2f}")
    return "reproduced" if not why else "not reproduced: " + "; ".join(why)


# --------------------------------------------------------------------------- figure

LABEL_W = 1.5  # inches for the row labels of the face grid
FACE_IN = 0.85  # one face
LOSS_H = 2.8  # panel a
TITLE_H = 0.45
MARGIN = 0.15


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # no display on compute nodes
    import matplotlib.pyplot as plt

    return plt


def _show(ax, image: np.ndarray) -> None:
    image = np.clip(image, 0.0, 1.0)  # the ReLU output can exceed 1
    if image.shape[-1] == 1:
        ax.imshow(image[..., 0], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    else:
        ax.imshow(image, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)


def faces_figure(histories: Mapping[float, pd.DataFrame], originals: np.ndarray,
                 reconstructions: Mapping[float, np.ndarray], out_path,
                 ratios: Mapping[float, float] | None = None, n_show: int = 8,
                 n_members: int | None = None, dpi: int = 120) -> Path:
    """Fig 3. a: per decoder update, mean and envelopes (5–95 % and min–max) of the
    ensemble-member losses, one colour per temperature. b–c: the first ``n_show`` test
    faces and, one row per temperature (hottest first), their reconstructions from the
    ensemble-mean code. Written atomically; size is exactly figsize × dpi."""
    plt = _pyplot()
    temps = sorted(histories, key=lambda t: -t)
    roles = dict(zip(temps, _roles(temps)))
    n_show = max(1, min(n_show, len(originals)))
    width = max(7.0, LABEL_W + n_show * FACE_IN + MARGIN)
    rows = 1 + len(temps)
    grid_h = rows * FACE_IN
    height = TITLE_H + LOSS_H + 0.55 + TITLE_H + grid_h + MARGIN
    fig = plt.figure(figsize=(width, height), dpi=dpi)

    def box(left, top, w, h):  # inches from the top-left -> figure fractions
        return [left / width, 1 - (top + h) / height, w / width, h / height]

    colors = plt.get_cmap("coolwarm")(np.linspace(1.0, 0.0, len(temps))) if len(temps) > 1 \
        else ["tab:blue"]
    ax = fig.add_axes(box(0.8, TITLE_H, width - 0.8 - 0.25, LOSS_H))
    for t, c in zip(temps, colors):
        h = histories[t]
        label = f"T = {temperature_tag(t)}" + (f" ({roles[t]})" if roles[t] in ("hot", "cold") else "")
        ax.fill_between(h["update"], h["loss_min"], h["loss_max"], color=c, alpha=0.12, lw=0)
        ax.fill_between(h["update"], h["loss_q05"], h["loss_q95"], color=c, alpha=0.3, lw=0)
        ax.plot(h["update"], h["loss_mean"], color=c, lw=1.3, label=label)
    ax.set_yscale("log")
    ax.set_xlabel("decoder update")
    ax.set_ylabel("member loss (MSE per pixel)")
    ax.legend(loc="upper right", fontsize=8, frameon=False)
    ax.grid(alpha=0.3, which="both", lw=0.5)
    fig.text(0.1 / width, 1 - 0.3 / height,
             "a  Ensemble-member losses per decoder update: mean, 5–95 % (dark) and min–max (light)",
             fontsize=10, weight="bold", va="center")
    top = TITLE_H + LOSS_H + 0.55
    members = f" of {n_members} encoder samples" if n_members else ""
    fig.text(0.1 / width, 1 - (top + 0.25) / height,
             f"b–c  Test faces and their reconstructions from ensemble-mean codes{members}",
             fontsize=10, weight="bold", va="center")
    top += TITLE_H
    labels = ["test faces"] + [
        f"T = {temperature_tag(t)}" + (f" ({roles[t]})" if roles[t] in ("hot", "cold") else "")
        + (f"\ngeneric ratio {ratios[t]:.2f}" if ratios and t in ratios else "") for t in temps]
    images = [originals] + [reconstructions[t] for t in temps]
    for r, (label, row_images) in enumerate(zip(labels, images)):
        y = top + r * FACE_IN
        fig.text((LABEL_W - 0.1) / width, 1 - (y + FACE_IN / 2) / height, label,
                 ha="right", va="center", fontsize=8.5)
        for i in range(n_show):
            _show(fig.add_axes(box(LABEL_W + i * FACE_IN + 0.03, y + 0.03, FACE_IN - 0.06,
                                   FACE_IN - 0.06)), row_images[i])
    from eae.support.io import save_figure

    return save_figure(fig, out_path, dpi)


def faces_report_stage(cfg: Mapping[str, Any] | None, data_path,
                       runs: Sequence[FacesRun | tuple], figure_path, table_path) -> pd.DataFrame:
    """Stage ``faces_report``: ``faces.csv`` and Fig 3 with provenance sidecars.
    ``runs``: (temperature, model_dir, ensemble_path) per temperature; ``cfg`` the
    ``faces.report`` block (n_show, dpi, batch_size)."""
    started = now_iso()
    cfg = {**REPORT_DEFAULTS, **dict(cfg or {})}
    runs = [r if isinstance(r, FacesRun) else FacesRun(float(r[0]), Path(r[1]), Path(r[2]))
            for r in runs]
    if not runs:
        raise ValueError("faces_report_stage: no runs (faces.temperatures is empty)")
    table, images = faces_table_stage(runs, data_path, table_path, cfg["batch_size"])
    histories = {r.temperature: pd.read_csv(r.model_dir / "history.csv") for r in runs}
    originals = next(iter(images.values()))[0]
    faces_figure(histories, originals, {t: rec for t, (_, rec) in images.items()}, figure_path,
                 ratios=dict(zip(table["temperature"], table["generic_ratio"])),
                 n_show=cfg["n_show"], n_members=int(table["n_members"].iloc[0]), dpi=cfg["dpi"])
    inputs = [data_path] + [p for r in runs for p in (r.model_dir / "history.csv",
                                                      r.model_dir / "decoder.keras",
                                                      r.ensemble_path)]
    record = make_record("faces_report", config=cfg,
                         inputs=inputs, started=started,
                         extra={"temperatures": [r.temperature for r in runs],
                                "generic_ratio": dict(zip(map(str, table["temperature"]),
                                                          table["generic_ratio"]))})
    record_outputs(record, [table_path, figure_path])
    return table

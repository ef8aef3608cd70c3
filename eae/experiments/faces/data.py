"""Faces data (SPEC §3.3): CelebA or the offline LFW faces → ``results/data/faces.zarr``.

Faces experiment (SPEC §3.3, paper Section 4.3, Fig 3): convolutional EAEs at
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

Stage :func:`prepare_faces_stage`; :func:`load_faces` reads a split back.
"""

from __future__ import annotations

import logging
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import xarray as xr

from eae.experiments.images.data import SPLIT_CODES, SPLITS, DataError, random_split
from eae.support.io import ZarrStreamWriter
from eae.support.progress import Progress
from eae.support.provenance import make_record, now_iso

log = logging.getLogger("eae")

CELEBA_IMAGE_DIR = "img_align_celeba"
CELEBA_SPLIT_FILE = "list_eval_partition.txt"
#: lfw_subset(): the first 100 of its 200 images are faces, the rest background patches.
LFW_N_FACES = 100
SOURCES = ("lfw", "celeba")
PIXEL_SCALE = 1.0 / 255.0  # float64: decodes 255 to exactly 1.0

# The defaults of ``faces.data`` and ``faces.report`` live in eae/schemas/faces.schema.yaml
# (:func:`resolve_data_config`, :func:`resolve_report_config`).


# --------------------------------------------------------------------------- config


def resolve_data_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` as the ``faces.data`` section: filled with the schema's defaults and
    checked against it; any problem (an unknown key, a wrong type, a value out of range)
    raises :class:`DataError` naming the key."""
    from eae.support.config import ConfigError, section

    try:
        out = section("faces.data", cfg)
    except ConfigError as err:
        raise DataError("\n".join(err.problems)) from None
    # The schema cannot say "sum to 1" (the workflow checks it as the cross-field rule
    # fractions_sum_to_one, with the same tolerance).
    fr = out["fractions"]
    if abs(sum(float(fr[s]) for s in SPLITS) - 1.0) > 1e-6:
        raise DataError(f"faces.data.fractions must be >= 0 (train > 0) and sum to 1, got {fr}")
    return out


def resolve_report_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """``cfg`` as the ``faces.report`` section (n_show, dpi, batch_size), filled with the
    schema's defaults and checked (a ConfigError names the key)."""
    from eae.support.config import section

    return section("faces.report", cfg)


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
            "faces_prepare", config=cfg, seeds={"subset": cfg["seed"]},
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
            "faces_prepare", config=cfg, seeds={"split": cfg["seed"]},
            inputs=[file] if file else [], started=started,
            extra={"split_counts": counts, "split_rule": split_rule,
                   "source_data": f"skimage.data.lfw_subset() (scikit-image {skimage.__version__})"})

    attrs = {"dataset": "lfw_subset", "source": "lfw", "size": cfg["size"],
             "resize": "Pillow bilinear from 25 x 25", "split_rule": split_rule}
    chunks = iter([(images[order], codes[order], order)])
    return _write_store(out_path, chunks, n, cfg["size"], 1, attrs, record)


def prepare_faces_stage(cfg: Mapping[str, Any] | None, out_path: str | os.PathLike) -> Path:
    """Stage ``prepare_faces``: the source that ``cfg["source"]`` names."""
    source = resolve_data_config(cfg)["source"]
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


def __getattr__(name: str) -> Any:
    # DATA_DEFAULTS / REPORT_DEFAULTS were hand-kept copies of the schema's defaults; they
    # are gone. Code that still imports them (eae.experiments.faces.faces re-exports
    # REPORT_DEFAULTS) gets the schema's, a new dict on each access.
    sections = {"DATA_DEFAULTS": "faces.data", "REPORT_DEFAULTS": "faces.report"}
    if name in sections:
        from eae.support.config import section_defaults

        return section_defaults(sections[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

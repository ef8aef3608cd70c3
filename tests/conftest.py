import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"
REAL_FREY = SHARED_DATA / "frey_rawface.mat"
#: As many faces as the real file, so the same fractions and caps give the same splits.
FREY_FACES = 1965


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


def write_synthetic_frey(path: Path, n_faces: int = FREY_FACES, seed: int = 0) -> Path:
    """A Frey-format ``.mat`` (variable ``ff``: uint8 [560, n], one 28 x 20 face a column).

    Smooth blobs with a per-face pose, so the images have structure to reconstruct; the
    file has its own sha256, which tests pass as ``frey.data.sha256``."""
    from scipy.io import savemat

    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:28, 0:20].astype(np.float32)
    centre = np.stack([13.5 + 3 * rng.standard_normal(n_faces),
                       9.5 + 2 * rng.standard_normal(n_faces)], axis=1)
    width = rng.uniform(4.0, 7.0, size=n_faces)
    d2 = (rows[None] - centre[:, 0, None, None]) ** 2 + (cols[None] - centre[:, 1, None, None]) ** 2
    faces = 40 + 180 * np.exp(-d2 / (2 * width[:, None, None] ** 2))
    faces += 10 * rng.standard_normal(faces.shape)
    pixels = np.clip(np.round(faces), 0, 255).astype(np.uint8)
    savemat(path, {"ff": pixels.reshape(n_faces, -1).T})
    return path


@pytest.fixture(scope="session")
def frey_file(tmp_path_factory) -> Path:
    """A synthetic Frey Faces file made by the test session (no download, nothing beside
    the checkout needed)."""
    return write_synthetic_frey(tmp_path_factory.mktemp("frey") / "frey_rawface.mat")


@pytest.fixture(scope="session")
def frey_config(frey_file) -> str:
    """YAML layered over config/test.yaml that points frey at the synthetic file."""
    from eae.provenance import sha256_file

    return f"frey:\n  data:\n    path: {frey_file}\n    sha256: {sha256_file(frey_file)}\n"


@pytest.fixture(scope="session")
def real_frey_file() -> Path:
    """The real Frey Faces file beside the checkout (as on CI); tests that use it are
    deselected where it is absent (pytest_collection_modifyitems)."""
    return REAL_FREY


#: The end-to-end files, longest first (about 8, 4 and 3 minutes on 2 cores): collected
#: before the rest so that ``pytest -n`` (``make test``) starts them on separate workers
#: at once instead of leaving one to run alone at the end.
LONG_FIRST = ("test_workflow.py", "test_recovery.py", "test_slurm.py")


def pytest_report_header(config):
    if not REAL_FREY.exists():
        return (f"{REAL_FREY} is absent: the test of the real Frey Faces file is deselected "
                "(it runs where the file lies beside the checkout, as on CI)")
    return None


def pytest_collection_modifyitems(config, items):
    if not REAL_FREY.exists():
        # without the real file there is nothing to check its checksum against: the test
        # is left out in the open (counted as deselected), not run as a skip
        absent = [item for item in items if "real_frey_file" in getattr(item, "fixturenames", ())]
        if absent:
            config.hook.pytest_deselected(items=absent)
            items[:] = [item for item in items if item not in absent]

    def rank(item):
        name = Path(str(item.fspath)).name
        return LONG_FIRST.index(name) if name in LONG_FIRST else len(LONG_FIRST)

    items.sort(key=rank)  # stable: each file keeps its own order

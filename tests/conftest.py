import os
from pathlib import Path

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(scope="session")
def frey_file() -> Path:
    """The real Frey Faces file kept beside the checkout for tests (skip without it)."""
    path = SHARED_DATA / "frey_rawface.mat"
    if not path.exists():
        pytest.skip(f"Frey Faces test file not found at {path}")
    return path

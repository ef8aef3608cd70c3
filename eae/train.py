"""Before the layers, ``eae.train`` held the EAE trainer (now :mod:`eae.core.trainer`)
and the image experiments' training stage (now :mod:`eae.experiments.images.eae`); both
stay importable under this name."""

import eae.core.trainer
import eae.experiments.images.eae
from eae.core.trainer import *  # noqa: F401,F403
from eae.experiments.images.eae import *  # noqa: F401,F403

_MODULES = (eae.core.trainer, eae.experiments.images.eae,)


def __getattr__(name):  # private names too (``from eae.train import _helper``)
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'eae.train' has no attribute {name!r}")

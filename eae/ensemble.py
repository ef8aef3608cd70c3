"""Before the layers, ``eae.ensemble`` held ensemble sampling (now
:mod:`eae.core.ensemble`) and the image experiments' ensemble stage (now
:mod:`eae.experiments.images.eae`); both stay importable under this name."""

import eae.core.ensemble
import eae.experiments.images.eae
from eae.core.ensemble import *  # noqa: F401,F403
from eae.experiments.images.eae import *  # noqa: F401,F403

_MODULES = (eae.core.ensemble, eae.experiments.images.eae,)


def __getattr__(name):  # private names too (``from eae.ensemble import _helper``)
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'eae.ensemble' has no attribute {name!r}")


def ensemble_images_stage(cfg: dict, data_path, train_dir, out_path):
    """Stage ``ensemble`` of the image experiments:
    :func:`eae.core.ensemble.ensemble_stage` of :data:`eae.experiments.images.eae.IMAGES`."""
    return eae.core.ensemble.ensemble_stage(eae.experiments.images.eae.IMAGES, cfg, data_path,
                                            train_dir, out_path)

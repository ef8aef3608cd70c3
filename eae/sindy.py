"""Before the layers, ``eae.sindy`` held the SINDy library and solves (now
:mod:`eae.core.sindy`) and the SINDy-EAE experiment (now :mod:`eae.experiments.rd.eae`);
both stay importable under this name."""

import eae.core.sindy
import eae.experiments.rd.eae
from eae.core.sindy import *  # noqa: F401,F403
from eae.experiments.rd.eae import *  # noqa: F401,F403

_MODULES = (eae.core.sindy, eae.experiments.rd.eae,)


def __getattr__(name):  # private names too (``from eae.sindy import _helper``)
    for module in _MODULES:
        if hasattr(module, name):
            return getattr(module, name)
    raise AttributeError(f"module 'eae.sindy' has no attribute {name!r}")

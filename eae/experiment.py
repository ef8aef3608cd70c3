"""``eae.experiment`` moved to :mod:`eae.experiments.base`; this name stays importable (the same
module object)."""

import sys

from eae.experiments import base as _module

sys.modules[__name__] = _module

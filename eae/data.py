"""``eae.data`` moved to :mod:`eae.experiments.images.data`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.images import data as _module

sys.modules[__name__] = _module

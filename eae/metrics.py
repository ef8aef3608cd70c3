"""``eae.metrics`` moved to :mod:`eae.experiments.images.metrics`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.images import metrics as _module

sys.modules[__name__] = _module

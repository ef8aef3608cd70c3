"""``eae.sampler`` moved to :mod:`eae.core.sampler`; this name stays importable (the same
module object)."""

import sys

from eae.core import sampler as _module

sys.modules[__name__] = _module

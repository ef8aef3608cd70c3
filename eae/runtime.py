"""``eae.runtime`` moved to :mod:`eae.support.runtime`; this name stays importable (the same
module object)."""

import sys

from eae.support import runtime as _module

sys.modules[__name__] = _module

"""``eae.temperature`` moved to :mod:`eae.core.temperature`; this name stays importable (the same
module object)."""

import sys

from eae.core import temperature as _module

sys.modules[__name__] = _module

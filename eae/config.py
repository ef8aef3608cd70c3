"""``eae.config`` moved to :mod:`eae.support.config`; this name stays importable (the same
module object)."""

import sys

from eae.support import config as _module

sys.modules[__name__] = _module

"""``eae.io`` moved to :mod:`eae.support.io`; this name stays importable (the same
module object)."""

import sys

from eae.support import io as _module

sys.modules[__name__] = _module

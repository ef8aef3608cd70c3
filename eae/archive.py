"""``eae.archive`` moved to :mod:`eae.support.archive`; this name stays importable (the same
module object)."""

import sys

from eae.support import archive as _module

sys.modules[__name__] = _module

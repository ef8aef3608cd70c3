"""``eae.progress`` moved to :mod:`eae.support.progress`; this name stays importable (the same
module object)."""

import sys

from eae.support import progress as _module

sys.modules[__name__] = _module

"""``eae.compare`` moved to :mod:`eae.support.compare`; this name stays importable (the same
module object)."""

import sys

from eae.support import compare as _module

sys.modules[__name__] = _module

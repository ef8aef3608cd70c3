"""``eae.settings`` moved to :mod:`eae.support.settings`; this name stays importable (the same
module object)."""

import sys

from eae.support import settings as _module

sys.modules[__name__] = _module

"""``eae.chains`` moved to :mod:`eae.core.chains`; this name stays importable (the same
module object)."""

import sys

from eae.core import chains as _module

sys.modules[__name__] = _module

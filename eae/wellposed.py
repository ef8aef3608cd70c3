"""``eae.wellposed`` moved to :mod:`eae.core.wellposed`; this name stays importable (the same
module object)."""

import sys

from eae.core import wellposed as _module

sys.modules[__name__] = _module

"""``eae.diagnostics`` moved to :mod:`eae.core.diagnostics`; this name stays importable (the same
module object)."""

import sys

from eae.core import diagnostics as _module

sys.modules[__name__] = _module

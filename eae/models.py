"""``eae.models`` moved to :mod:`eae.core.models`; this name stays importable (the same
module object)."""

import sys

from eae.core import models as _module

sys.modules[__name__] = _module

"""``eae.provenance`` moved to :mod:`eae.support.provenance`; this name stays importable (the same
module object)."""

import sys

from eae.support import provenance as _module

sys.modules[__name__] = _module

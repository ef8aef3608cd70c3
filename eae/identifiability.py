"""``eae.identifiability`` moved to :mod:`eae.experiments.rd.identifiability`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.rd import identifiability as _module

sys.modules[__name__] = _module

"""``eae.simulate`` moved to :mod:`eae.experiments.rd.simulate`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.rd import simulate as _module

sys.modules[__name__] = _module

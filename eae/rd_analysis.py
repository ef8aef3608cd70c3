"""``eae.rd_analysis`` moved to :mod:`eae.experiments.rd.analysis`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.rd import analysis as _module

sys.modules[__name__] = _module

"""``eae.rd_data`` moved to :mod:`eae.experiments.rd.data`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.rd import data as _module

sys.modules[__name__] = _module

"""``eae.sweep`` moved to :mod:`eae.experiments.sweep`; this name stays importable (the same
module object)."""

import sys

from eae.experiments import sweep as _module

sys.modules[__name__] = _module

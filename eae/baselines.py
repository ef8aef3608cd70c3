"""``eae.baselines`` moved to :mod:`eae.experiments.images.baselines`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.images import baselines as _module

sys.modules[__name__] = _module

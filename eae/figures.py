"""``eae.figures`` moved to :mod:`eae.experiments.images.figures`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.images import figures as _module

sys.modules[__name__] = _module

"""``eae.faces`` moved to :mod:`eae.experiments.faces.faces`; this name stays importable (the same
module object)."""

import sys

from eae.experiments.faces import faces as _module

sys.modules[__name__] = _module

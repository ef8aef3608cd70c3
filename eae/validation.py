"""``eae.validation`` moved to :mod:`eae.experiments.sampler_check`; this name stays importable (the same
module object)."""

import sys

from eae.experiments import sampler_check as _module

sys.modules[__name__] = _module

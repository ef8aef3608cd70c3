"""``eae.config_rules`` moved to :mod:`eae.support.config_rules`; this name stays importable (the same
module object)."""

import sys

from eae.support import config_rules as _module

sys.modules[__name__] = _module

"""``eae.cli`` moved to :mod:`eae.support.cli`; this name stays importable (the same
module object) and runnable (``python -m eae.cli``)."""

import sys

from eae.support import cli as _module

if __name__ == "__main__":
    raise SystemExit(_module.main())

sys.modules[__name__] = _module

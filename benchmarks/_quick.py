"""The ``--quick`` option every benchmark shares (a helper module, not a benchmark).

``--quick`` swaps in toy defaults (the same code path, seconds instead of minutes);
options given explicitly still win. Lines printed in that mode carry :data:`NOTE`.
"""

from __future__ import annotations

import argparse

NOTE = "  [--quick: not a measurement]"


def parse_args(parser: argparse.ArgumentParser, quick: dict, argv=None) -> argparse.Namespace:
    """Add ``--quick`` to ``parser``; parse ``argv`` with ``quick`` as the defaults when it
    is given."""
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run with {quick} (options given explicitly still win)")
    if parser.parse_known_args(argv)[0].quick:
        parser.set_defaults(**quick)
    return parser.parse_args(argv)


def note(args: argparse.Namespace) -> str:
    """The label for printed lines: :data:`NOTE` in quick mode, else nothing."""
    return NOTE if args.quick else ""

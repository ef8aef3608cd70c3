"""Which names a ``datasets:`` entry may take."""

from __future__ import annotations

__all__ = ["BUILTIN_EXPERIMENTS", "RESULTS_FOLDERS", "RESERVED_NAMES", "check_name"]

#: The built-in experiments and config sections (a dataset of that name would share
#: their results/ folder and wildcard values).
BUILTIN_EXPERIMENTS = ("mnist", "frey", "faces", "rd", "sweep", "validation", "analysis",
                       "diagnostics", "datasets")

#: The folders of results/ that hold no experiment's own outputs.
RESULTS_FOLDERS = ("data", "tables", "figures", "logs", "benchmarks", "checkpoints",
                   "provenance", "report", "archive", "sweep", "validation")

RESERVED_NAMES = tuple(sorted(set(BUILTIN_EXPERIMENTS) | set(RESULTS_FOLDERS)))


def check_name(name: str) -> str | None:
    """Why ``name`` cannot name a dataset, or None when it can."""
    if name in BUILTIN_EXPERIMENTS:
        return f"{name!r} is a built-in experiment or config section; choose another name"
    if name in RESULTS_FOLDERS:
        return f"{name!r} is a folder of results/ ({', '.join(RESULTS_FOLDERS)}); choose another name"
    return None

"""One config policy for settings dataclasses: known keys only.

Every block of settings the library reads (the sampler, training, the sampler
self-check, the RD analysis, …) is a dataclass built by :func:`settings_from`. Its
defaults are the schema's (the workflow validates and fills the config before any job,
:mod:`eae.support.config`); a key the dataclass does not know is an error naming the key and its
section, never silently dropped — a misspelt setting would otherwise run with the
default.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Iterable, Mapping, TypeVar

T = TypeVar("T")


class UnknownSettingError(ValueError):
    """A config block holds keys its settings dataclass does not know."""


def settings_from(cls: type[T], cfg: Mapping[str, Any] | None, section: str,
                  ignore: Iterable[str] = ()) -> T:
    """``cls(**cfg)`` for a settings dataclass; keys of ``cfg`` that are not fields of
    ``cls`` raise :class:`UnknownSettingError` naming ``section``, except those listed
    in ``ignore`` (keys of the same config block that another part of the stage reads)."""
    cfg = dict(cfg or {})
    names = {f.name for f in dataclasses.fields(cls)}
    skip = set(ignore)
    unknown = sorted(set(cfg) - names - skip)
    if unknown:
        raise UnknownSettingError(f"{section}: unknown setting(s) {unknown}; known: {sorted(names)}")
    return cls(**{k: v for k, v in cfg.items() if k in names})

"""Helpers shared by the tests (import as ``from helpers import …``)."""

from __future__ import annotations

import copy
from typing import Any


def config_section(path: str, value: Any) -> Any:
    """``value`` as the config section ``path`` (e.g. ``"rd.eae"``), checked against the
    workflow's schema and filled with its defaults — what a stage receives from the
    workflow. The schemas are the only home of defaults, so tests that call stages
    directly build their configs with this."""
    import jsonschema

    from eae.config import fill_defaults, load_schema

    schema = load_schema()
    for key in path.split("."):
        schema = schema["properties"][key]
    filled = fill_defaults(copy.deepcopy(value), schema)
    jsonschema.Draft202012Validator(schema).validate(filled)
    return filled

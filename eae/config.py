"""Configuration: JSON-schema validation with defaults, and clear errors naming the key.

The schema lives in ``workflow/schemas/config.schema.yaml``; sections may live in
sibling files and are referenced as ``$ref: <file>.schema.yaml``. Validation fills in
every default (so a job's ``params`` always carry the complete settings it ran with)
and rejects unknown keys, wrong types and out-of-range values before any job starts.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

DEFAULT_SCHEMA = Path(__file__).resolve().parent.parent / "workflow" / "schemas" / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type or out of range."""


def load_yaml(path: str | Path) -> Any:
    with open(path) as fh:
        return yaml.safe_load(fh)


def _inline_refs(node: Any, base: Path) -> Any:
    """Replace ``{"$ref": "file.yaml"}`` by that file's (recursively inlined) content."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            target = (base / ref).resolve()
            if not target.exists():
                raise ConfigError(f"schema reference not found: {ref} (from {base})")
            inlined = _inline_refs(load_yaml(target), target.parent)
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**inlined, **_inline_refs(rest, base)}
        return {k: _inline_refs(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, base) for v in node]
    return node


def load_schema(path: str | Path = DEFAULT_SCHEMA) -> dict:
    """The config schema with its file references resolved."""
    path = Path(path)
    return _inline_refs(load_yaml(path), path.parent)


def fill_defaults(config: Any, schema: dict) -> Any:
    """Insert defaults from ``schema`` into ``config`` (objects missing entirely are
    created when their properties have defaults)."""
    if schema.get("type") != "object" or not isinstance(config, dict):
        return config
    for key, sub in schema.get("properties", {}).items():
        if key not in config:
            if "default" in sub:
                config[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub:
                config[key] = {}
        if key in config:
            config[key] = fill_defaults(config[key], sub)
    return config


def _key_path(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path)
    if error.validator == "additionalProperties":
        unknown = sorted(set(error.instance) - set(error.schema.get("properties", {})))
        keys = ", ".join((f"{path}.{u}" if path else u) for u in unknown)
        return f"unknown key(s) {keys}"
    return f"key '{path or '<root>'}'"


def validate_config(config: dict, schema: dict | str | Path = DEFAULT_SCHEMA) -> dict:
    """Return a validated copy of ``config`` with defaults filled in.

    Raises :class:`ConfigError` listing every problem, each naming its key.
    """
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    filled = fill_defaults(copy.deepcopy(dict(config)), schema)
    validator = jsonschema.Draft202012Validator(schema)
    errors = sorted(validator.iter_errors(filled), key=lambda e: list(e.absolute_path))
    if errors:
        lines = [f"- {_key_path(e)}: {e.message}" for e in errors]
        raise ConfigError("Invalid configuration:\n" + "\n".join(lines))
    return filled

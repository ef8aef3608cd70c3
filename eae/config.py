"""Configuration: JSON-schema validation with defaults, and clear errors naming the key.

The schema lives in ``workflow/schemas/config.schema.yaml``; sections may live in
sibling files and are referenced as ``$ref: <file>.schema.yaml``. Validation fills in
every default (so a job's ``params`` always carry the complete settings it ran with)
and rejects unknown keys, wrong types and out-of-range values before any job starts.
"""

from __future__ import annotations

import copy
import json
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


def _resolve_pointer(document: Any, pointer: str, ref: str) -> Any:
    for part in (p for p in pointer.split("/") if p):
        try:
            document = document[part.replace("~1", "/").replace("~0", "~")]
        except (KeyError, TypeError):
            raise ConfigError(f"schema reference {ref!r}: no {part!r} in the target") from None
    return document


def _inline_refs(node: Any, base: Path) -> Any:
    """Replace ``{"$ref": "file.yaml"}`` or ``{"$ref": "file.yaml#/json/pointer"}`` by
    that (recursively inlined) content; local ``#...`` references are left alone."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and not ref.startswith("#"):
            file_part, _, pointer = ref.partition("#")
            target = (base / file_part).resolve()
            if not target.exists():
                raise ConfigError(f"schema reference not found: {ref} (from {base})")
            document = _resolve_pointer(load_yaml(target), pointer, ref)
            inlined = _inline_refs(document, target.parent)
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


def _describe_type(sub: dict) -> str:
    kind = sub.get("type", "")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if "enum" in sub:
        kind += " (" + ", ".join(str(v) for v in sub["enum"]) + ")"
    bounds = []
    for word, sym in (("minimum", "≥"), ("exclusiveMinimum", ">"), ("maximum", "≤"),
                      ("exclusiveMaximum", "<")):
        if word in sub:
            bounds.append(f"{sym} {sub[word]}")
    return kind + (" " + ", ".join(bounds) if bounds else "")


def schema_markdown(schema: dict | None = None) -> str:
    """config/README.md: every key with its type, range, default and description."""
    schema = schema or load_schema()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `workflow/schemas/` by `eae config-docs` (a test keeps it in sync).",
        "`config/config.yaml` is the default run; `config/paper.yaml` the paper's settings;",
        "`config/test.yaml` the tiny end-to-end check. Omitted keys take these defaults;",
        "unknown keys, wrong types and out-of-range values stop the run before any job.",
        "",
    ]

    def walk(node: dict, path: str, depth: int) -> None:
        for key, sub in node.get("properties", {}).items():
            full = f"{path}.{key}" if path else key
            if sub.get("type") == "object" and "properties" in sub:
                lines.extend([f"{'#' * min(depth + 2, 6)} `{full}`", "",
                              " ".join(str(sub.get("description", "")).split()), ""])
                lines.extend(["| key | type | default | description |", "|---|---|---|---|"])
                for leaf, leaf_sub in sub["properties"].items():
                    if not (leaf_sub.get("type") == "object" and "properties" in leaf_sub):
                        desc = " ".join(str(leaf_sub.get("description", "")).split())
                        default = json.dumps(leaf_sub.get("default"))
                        lines.append(f"| `{leaf}` | {_describe_type(leaf_sub)} | `{default}` | {desc} |")
                lines.append("")
                walk(sub, full, depth + 1)

    walk(schema, "", 0)
    return "\n".join(lines).rstrip() + "\n"

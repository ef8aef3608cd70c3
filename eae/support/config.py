"""Configuration: JSON-schema validation with defaults, and clear errors naming the key.

The schema lives in ``eae/schemas/config.schema.yaml`` (package data, so an installed
wheel validates too; ``workflow/schemas`` links there for the workflow); sections may live in
sibling files and are referenced as ``$ref: <file>.schema.yaml``. Validation fills in
every default (so a job's ``params`` always carry the complete settings it ran with)
and rejects unknown keys, wrong types, out-of-range and non-finite values.
:func:`check_config` adds the cross-field rules of :mod:`eae.support.config_rules` (what a stage
would refuse at run time) and the checks of local data files; ``eae check-config`` and
the workflow (``workflow/rules/common.smk``) both call it, before any job starts.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from eae.support import config_rules
SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"
DEFAULT_SCHEMA = SCHEMA_DIR / "config.schema.yaml"


class ConfigError(ValueError):
    """A config value is missing, unknown, of the wrong type, out of range or breaks a
    cross-field rule; or a config file cannot be read. ``problems`` holds one line per
    problem, each starting with the key (or file) it concerns."""

    def __init__(self, message: str, problems: list[str] | None = None):
        super().__init__(message)
        self.problems = list(problems) if problems is not None else [message]


def load_yaml(path: str | Path) -> Any:
    with open(path) as fh:
        return yaml.safe_load(fh)


# --------------------------------------------------------------------------- config files


def _yaml_problem(err: yaml.YAMLError) -> str:
    """``invalid YAML: <problem> at line L, column C`` from a PyYAML error (1-based)."""
    mark = getattr(err, "problem_mark", None)
    what = getattr(err, "problem", None) or str(err).splitlines()[0]
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    return f"invalid YAML: {what}{where}"


def load_config_file(path: str | os.PathLike) -> dict:
    """One config file as a mapping (an empty file is an empty mapping).

    Raises :class:`ConfigError` with ONE line naming the file and the problem: missing,
    unreadable (permission, a folder, not UTF-8), invalid YAML, or a top level that is
    not a mapping of sections.
    """
    try:
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh)
    except OSError as err:
        raise ConfigError(f"{path}: cannot read the config file: {err.strerror or err}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: cannot read the config file: not UTF-8 text") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: {_yaml_problem(err)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config sections "
                          f"(e.g. `mnist: {{enabled: true}}`), got {_kind(data)}")
    return data


def merge_config(base: Mapping, update: Mapping) -> dict:
    """``update`` over ``base``, mappings merged key by key (as Snakemake layers
    ``--configfile`` files over the Snakefile's ``configfile``)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = value
    return out


def load_config_files(paths: Iterable[str | os.PathLike]) -> dict:
    """The files layered in order (later ones override); every unreadable file is
    reported, one line each, in a single :class:`ConfigError`."""
    merged: dict = {}
    problems = []
    for path in paths:
        try:
            merged = merge_config(merged, load_config_file(path))
        except ConfigError as err:
            problems.extend(err.problems)
    if problems:
        raise ConfigError("\n".join(problems), problems)
    return merged


# --------------------------------------------------------------------------- schema files


# libyaml's loader where PyYAML has it: the schema files are read on every check.
_SCHEMA_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@functools.lru_cache(maxsize=64)
def _schema_file(path: Path, mtime_ns: int) -> Any:
    """A parsed schema file, cached per modification time: one ``load_schema`` reads
    baselines.schema.yaml once for its many references, and a later edit is seen.
    Callers must not modify the result (:func:`_inline_refs` builds new containers)."""
    with open(path, encoding="utf-8") as fh:
        return yaml.load(fh, Loader=_SCHEMA_LOADER)


def _read_schema_file(path: Path) -> Any:
    return _schema_file(path, path.stat().st_mtime_ns)


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
            document = _resolve_pointer(_read_schema_file(target), pointer, ref)
            inlined = _inline_refs(document, target.parent)
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**inlined, **_inline_refs(rest, base)}
        return {k: _inline_refs(v, base) for k, v in node.items()}
    if isinstance(node, list):
        return [_inline_refs(v, base) for v in node]
    return node


def load_schema(path: str | Path = DEFAULT_SCHEMA) -> dict:
    """The config schema with its file references resolved."""
    path = Path(path).resolve()
    return _inline_refs(_read_schema_file(path), path.parent)


def fill_defaults(config: Any, schema: dict) -> Any:
    """Insert defaults from ``schema`` into ``config`` (objects missing entirely are
    created when their properties have defaults)."""
    if schema.get("type") != "object" or not isinstance(config, dict):
        return config
    props = schema.get("properties", {})
    for key, sub in props.items():
        if key not in config:
            if "default" in sub:
                config[key] = copy.deepcopy(sub["default"])
            elif sub.get("type") == "object" and "properties" in sub:
                config[key] = {}
        if key in config:
            config[key] = fill_defaults(config[key], sub)
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):  # a mapping of named entries (``datasets``)
        for key in config:
            if key not in props:
                config[key] = fill_defaults(config[key], extra)
    return config


# --------------------------------------------------------------------------- messages

_TYPE_WORDS = {"object": "a mapping", "array": "a list", "string": "a string",
               "number": "a number", "integer": "an integer", "boolean": "true or false",
               "null": "null"}


def key_path(parts: Iterable[Any]) -> str:
    """``mnist.eae.sampler.temperature``, ``sweep.temperatures[2]``; ``<root>`` for ()."""
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "<root>"


def _kind(value: Any) -> str:
    """What a YAML value is, in words (for 'got ...')."""
    if value is None or isinstance(value, bool):
        return show(value)
    words = {dict: "a mapping", list: "a list", str: "a string", int: "an integer",
             float: "a number"}
    return f"{words.get(type(value), type(value).__name__)} ({show(value)})"


def show(value: Any, limit: int = 80) -> str:
    """A value as the user wrote it in YAML/JSON terms (null, true, 'text'), shortened."""
    if isinstance(value, str):
        text = repr(value)
    elif isinstance(value, float) and not math.isfinite(value):
        text = str(value)
    else:
        try:
            text = json.dumps(value)
        except (TypeError, ValueError):
            text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_words(expected: Any) -> str:
    kinds = expected if isinstance(expected, list) else [expected]
    return " or ".join(_TYPE_WORDS.get(k, k) for k in kinds)


def _number_as_text_hint(error: jsonschema.ValidationError) -> str:
    """PyYAML (YAML 1.1) reads ``1e-8`` as text: say so where a number was expected."""
    expected = error.validator_value if isinstance(error.validator_value, list) else [error.validator_value]
    if not ({"number", "integer"} & set(expected)) or not isinstance(error.instance, str):
        return ""
    try:
        float(error.instance)
    except ValueError:
        return ""
    return " (YAML reads this as text: write the number with a dot, e.g. 1.0e-8, not 1e-8)"


def _condition(schema: dict, error: jsonschema.ValidationError) -> str:
    """' when source is 'file'' for an error raised by an ``if``/``then`` branch."""
    path = list(error.absolute_schema_path)
    if "then" not in path:
        return ""
    node: Any = schema
    for part in path[: len(path) - 1 - path[::-1].index("then")]:
        node = node[part]
    consts = {k: v["const"] for k, v in node.get("if", {}).get("properties", {}).items()
              if isinstance(v, dict) and "const" in v}
    return "".join(f" when {k} is {show(v)}" for k, v in consts.items())


def _unknown_keys(error: jsonschema.ValidationError) -> list[tuple[tuple, str]]:
    """One problem per unknown key, with the closest known key and the allowed ones."""
    allowed = sorted(error.schema.get("properties", {}))
    out = []
    for key in sorted(set(error.instance) - set(allowed), key=str):
        close = difflib.get_close_matches(str(key), allowed, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        where = key_path(error.absolute_path)
        out.append(((*error.absolute_path, key),
                    f"unknown key{hint}; allowed keys of {where}: {', '.join(allowed)}"))
    return out


_BOUNDS = {"minimum": ">=", "exclusiveMinimum": ">", "maximum": "<=", "exclusiveMaximum": "<"}


def _schema_message(error: jsonschema.ValidationError, schema: dict) -> str:
    """The message of one schema error: what is allowed, then what was given."""
    got = show(error.instance)
    kind = error.validator
    if kind == "type":
        return (f"must be {_type_words(error.validator_value)}{_condition(schema, error)}, "
                f"got {_kind(error.instance)}{_number_as_text_hint(error)}")
    if kind == "enum":
        allowed = ", ".join(show(v) for v in error.validator_value)
        return f"must be one of {allowed}; got {got}"
    if kind in _BOUNDS:
        return f"must be {_BOUNDS[kind]} {error.validator_value}, got {got}"
    if kind in ("minItems", "maxItems"):
        word = "at least" if kind == "minItems" else "at most"
        return f"must have {word} {error.validator_value} item(s), got {got}"
    if kind == "uniqueItems":
        return f"items must be distinct, got {got}"
    if kind == "pattern":
        return f"must match {error.validator_value}, got {got}"
    if kind == "required":
        return f"{error.message}{_condition(schema, error)}"
    return error.message


def schema_problems(config: Any, schema: dict) -> list[tuple[tuple, str]]:
    """(key path, message) of every schema violation in ``config`` (defaults filled)."""
    validator = jsonschema.Draft202012Validator(schema)
    problems: list[tuple[tuple, str]] = []
    for error in sorted(validator.iter_errors(config), key=lambda e: [str(p) for p in e.absolute_path]):
        if error.validator == "additionalProperties" and isinstance(error.instance, dict):
            problems.extend(_unknown_keys(error))
        else:
            problems.append((tuple(error.absolute_path), _schema_message(error, schema)))
    return problems


def nonfinite_problems(node: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    """Every NaN or ±inf (YAML ``.nan``, ``.inf``, ``-.inf``; JSON NaN, Infinity) in the
    config. The schema cannot catch them: NaN compares false with every bound, and
    inf satisfies any minimum."""
    if isinstance(node, float) and not math.isfinite(node):
        return [(path, f"must be a finite number, got {node}")]
    if isinstance(node, dict):
        return [p for k, v in node.items() for p in nonfinite_problems(v, (*path, k))]
    if isinstance(node, list):
        return [p for i, v in enumerate(node) for p in nonfinite_problems(v, (*path, i))]
    return []


def _raise_if(problems: list[str]) -> None:
    if problems:
        noun = "problem" if len(problems) == 1 else "problems"
        lines = "\n".join(f"- {p}" for p in problems)
        raise ConfigError(f"Invalid configuration ({len(problems)} {noun}):\n{lines}", problems)


def _not_a_mapping(config: Any) -> str:
    return (f"<root>: the configuration must be a mapping of sections "
            f"(e.g. `mnist: {{enabled: true}}`), got {_kind(config)}")


def _value_problems(config: Any, schema: dict) -> tuple[Any, list[tuple[tuple, str]]]:
    """(config with defaults, problems) of the schema and the finiteness check. A
    schema complaint about a value already reported as non-finite (e.g. '-inf is less
    than the minimum') is dropped: one clear line per key."""
    filled = fill_defaults(copy.deepcopy(dict(config)), schema)
    nonfinite = nonfinite_problems(config)
    bad = {path for path, _ in nonfinite}
    problems = nonfinite + [(p, m) for p, m in schema_problems(filled, schema) if p not in bad]
    return filled, sorted(problems, key=lambda pm: [str(x) for x in pm[0]])


def validate_config(config: dict, schema: dict | str | Path = DEFAULT_SCHEMA) -> dict:
    """Return a validated copy of ``config`` with defaults filled in: schema and finite
    numbers only (any schema file, e.g. one section's). :func:`check_config` adds the
    cross-field rules and the file checks of the full config.

    Raises :class:`ConfigError` listing every problem, each naming its key.
    """
    if not isinstance(config, Mapping):
        _raise_if([_not_a_mapping(config)])
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    filled, problems = _value_problems(config, schema)
    _raise_if([f"{key_path(p)}: {m}" for p, m in problems])
    return filled


# --------------------------------------------------------------------------- sections


def _schema_files_state() -> tuple:
    """(name, mtime) of every file of the package schema: the key of its cache."""
    return tuple((f.name, f.stat().st_mtime_ns) for f in sorted(SCHEMA_DIR.glob("*.yaml")))


@functools.lru_cache(maxsize=4)
def _package_schema(state: tuple) -> dict:
    """:func:`load_schema` of the package schema, once per ``state`` of its files
    (stages resolve their sections often; callers must not modify the result)."""
    return load_schema(DEFAULT_SCHEMA)


def _section_schema(path: str, schema: dict | None) -> dict:
    node = schema if schema is not None else _package_schema(_schema_files_state())
    for key in path.split("."):
        props = node.get("properties") if isinstance(node, dict) else None
        entry = node.get("additionalProperties") if isinstance(node, dict) else None
        if isinstance(entry, dict) and (not isinstance(props, dict) or key not in props):
            node = entry  # any name of a mapping of entries (``datasets.<name>``)
            continue
        if not isinstance(props, dict) or key not in props:
            known = ", ".join(sorted(props)) if isinstance(props, dict) else "none"
            raise ConfigError(f"{path}: no such config section ({key!r} unknown; known: {known})")
        node = props[key]
    return node


def _plain(value: Any) -> Any:
    """A copy with tuples as lists and NumPy scalars as Python ones (what YAML gives),
    so that a direct library call is checked like the same values read from a file."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if type(value).__module__ == "numpy" and getattr(value, "ndim", None) == 0:
        return value.item()
    return value


def section(path: str, value: Mapping | None = None, schema: dict | None = None, *,
            where: str | None = None) -> dict:
    """``value`` (a mapping, or None for an empty one) as the config section at the
    dotted ``path`` (``"analysis"``, ``"mnist.vae"``, ``"faces.data"``): a copy filled
    with the schema's defaults and checked against that section's schema (unknown keys,
    types, ranges, non-finite numbers) -- what a stage receives from the workflow, whose
    config :func:`check_config` has filled and checked already, so there this is a
    no-op. The schemas are the only home of the defaults; library functions called
    directly take theirs from here.

    ``schema``: the full config schema (default: the package's, loaded once per change
    of its files). ``where``: the key path the messages name (default ``path``), for a
    block several sections share (a model block: ``"model"``). Tuples and NumPy scalars
    count as lists and Python numbers. Raises :class:`ConfigError` with one line per
    problem naming the full key, e.g. ``analysis.probe.kk: unknown key (did you mean
    'k'?); allowed keys of analysis.probe: ...``.
    """
    sub = _section_schema(path, schema)
    parts = (where or path).split(".")
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        _raise_if([f"{key_path(parts)}: must be a mapping, got {_kind(value)}"])
    wrapped, wrapped_schema = _plain(value), sub
    for part in reversed(parts):
        wrapped = {part: wrapped}
        wrapped_schema = {"type": "object", "properties": {part: wrapped_schema}}
    filled, problems = _value_problems(wrapped, wrapped_schema)
    _raise_if([f"{key_path(p)}: {m}" for p, m in problems])
    for part in parts:
        filled = filled[part]
    return filled


def section_defaults(path: str, schema: dict | None = None) -> dict:
    """The defaults of the config section at dotted ``path`` (a new dict each call)."""
    return section(path, None, schema)


def config_problems(config: Any, schema: dict | str | Path = DEFAULT_SCHEMA,
                    check_files: bool = True) -> tuple[dict | None, list[str]]:
    """(config with defaults, one line per problem) of everything :func:`check_config`
    checks. A cross-field rule runs when the keys it reads passed the schema (its
    input is then typed); file rules only with ``check_files``."""
    if not isinstance(config, Mapping):
        return None, [_not_a_mapping(config)]
    if not isinstance(schema, dict):
        schema = load_schema(schema)
    filled, problems = _value_problems(config, schema)
    lines = [f"{key_path(p)}: {m}" for p, m in problems]
    lines += config_rules.rule_problems(filled, failed=[p for p, _ in problems],
                                        check_files=check_files)
    return filled, lines


def check_config(config: Any, schema: dict | str | Path = DEFAULT_SCHEMA,
                 check_files: bool = True) -> dict:
    """The check that ``eae check-config`` and the workflow run before any job: schema
    (unknown keys, types, ranges), finite numbers, then every cross-field rule of
    :data:`eae.support.config_rules.RULES` on the config with its defaults filled, and (with
    ``check_files``) the local data files of the experiments that will run, relative to
    the working directory. Returns the filled config; raises :class:`ConfigError`
    listing every problem, one line each, naming the key(s) and what is allowed."""
    filled, problems = config_problems(config, schema, check_files)
    _raise_if(problems)
    return filled


# --------------------------------------------------------------------------- docs


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
    """config/README.md: every key with its type, range, default and description, then
    every cross-field rule."""
    schema = schema or load_schema()
    lines = [
        "# Configuration reference",
        "",
        "Generated from `eae/schemas/` (linked as `workflow/schemas/`) and `eae/config_rules.py` by `eae config-docs` (a test keeps it in sync).",
        "`config/config.yaml` is the default run; `config/paper.yaml` the paper's settings;",
        "`config/test.yaml` the tiny end-to-end check. Omitted keys take these defaults.",
        "Unknown keys, wrong types, out-of-range or non-finite values (`.nan`, `.inf`) and",
        "configs that break a [cross-field rule](#cross-field-rules) stop the run before any job;",
        "`eae check-config FILE...` runs the same check (later files override earlier ones).",
        "",
    ]

    def walk(node: dict, path: str, depth: int) -> None:
        children = dict(node.get("properties", {}))
        if isinstance(node.get("additionalProperties"), dict):  # named entries
            children["<name>"] = node["additionalProperties"]
        for key, sub in children.items():
            full = f"{path}.{key}" if path else key
            if sub.get("type") == "object" and "additionalProperties" in sub and isinstance(
                    sub["additionalProperties"], dict) and "properties" not in sub:
                lines.extend([f"{'#' * min(depth + 2, 6)} `{full}`", "",
                              " ".join(str(sub.get("description", "")).split()), ""])
                walk(sub, full, depth + 1)
            elif sub.get("type") == "object" and "properties" in sub:
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
    lines.extend(config_rules.rules_markdown())
    return "\n".join(lines).rstrip() + "\n"

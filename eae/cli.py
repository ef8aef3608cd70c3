"""The ``eae`` command: helpers around the workflow (config docs and checks)."""

from __future__ import annotations

import argparse
import sys


def _config_docs(args) -> int:
    from eae.config import schema_markdown

    text = schema_markdown()
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _check_config(args) -> int:
    from eae.config import ConfigError, load_yaml, validate_config

    merged: dict = {}
    for path in args.files:
        merged = _merge(merged, load_yaml(path) or {})
    try:
        validate_config(merged)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print("configuration is valid")
    return 0


def _provenance(args) -> int:
    from eae.provenance import find_record, format_chain

    if args.json:
        import json

        record = find_record(args.path)
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0 if record else 1
    print(format_chain(args.path))
    return 0


def _merge(base: dict, update: dict) -> dict:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    docs = sub.add_parser("config-docs", help="print the configuration reference (Markdown)")
    docs.add_argument("-o", "--output", help="write to this file instead of stdout")
    docs.set_defaults(func=_config_docs)
    check = sub.add_parser("check-config", help="validate config files (later ones override)")
    check.add_argument("files", nargs="+")
    check.set_defaults(func=_check_config)
    prov = sub.add_parser("provenance", help="print what made a result, and its inputs, recursively")
    prov.add_argument("path", help="a table, figure, Zarr store or model directory under results/")
    prov.add_argument("--json", action="store_true", help="print the full record as JSON")
    prov.set_defaults(func=_provenance)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

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


def _archive_verify(args) -> int:
    from eae.archive import verify_archive

    report = verify_archive(args.path)
    print(report.format())
    return 0 if report.ok else 1


def _archive_build(args) -> int:
    from eae.archive import DEFAULT_EXCLUDE, ArchiveError, build_archive
    from eae.config import ConfigError, load_yaml, validate_config

    merged: dict = {}
    for path in args.config:
        merged = _merge(merged, load_yaml(path) or {})
    try:
        config = validate_config(merged) if args.config else {}
        manifest = build_archive(args.results, args.output, config,
                                 exclude=tuple(DEFAULT_EXCLUDE) + tuple(args.exclude))
    except (ConfigError, ArchiveError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{args.output}: {manifest['n_files']} files, {manifest['total_bytes']} bytes")
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
    arch = sub.add_parser("archive", help="build or verify a results tarball with a sha256 manifest")
    arch_sub = arch.add_subparsers(dest="archive_command", required=True)
    verify = arch_sub.add_parser("verify", help="check an archive against its manifest "
                                 "(exit code 1 on any missing, altered or unexpected file)")
    verify.add_argument("path", help="the .tar.gz written by the `archive` rule, or the "
                        "folder it was extracted to")
    verify.set_defaults(func=_archive_verify)
    build = arch_sub.add_parser("build", help="archive a results directory (the `archive` "
                                "rule does this within the workflow)")
    build.add_argument("--results", default="results", help="results directory (default: results)")
    build.add_argument("-o", "--output", default="results/archive/eae-results.tar.gz",
                       help="tarball to write (default: results/archive/eae-results.tar.gz)")
    build.add_argument("--config", nargs="*", default=[], metavar="FILE",
                       help="config files (later ones override); validated, stored with "
                       "defaults as config.resolved.yaml")
    build.add_argument("--exclude", nargs="*", default=[], metavar="REL",
                       help="further paths below the results directory to leave out "
                       "(checkpoints/ and archive/ always are)")
    build.set_defaults(func=_archive_build)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

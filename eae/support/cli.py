"""The ``eae`` command: helpers around the workflow (config docs and checks)."""

from __future__ import annotations

import argparse
import sys


def _config_docs(args) -> int:
    from eae.support.config import schema_markdown

    text = schema_markdown()
    if args.output:
        with open(args.output, "w") as fh:
            fh.write(text)
    else:
        sys.stdout.write(text)
    return 0


def _check_config(args) -> int:
    """The workflow's own check (eae.config.check_config) on the layered files: every
    problem on its own line, exit code 1; an unreadable file is one line, no traceback."""
    from eae.support.config import ConfigError, check_config, load_config_files

    try:
        check_config(load_config_files(args.files), check_files=not args.no_file_checks)
    except ConfigError as err:
        print(err, file=sys.stderr)
        return 1
    print("configuration is valid")
    return 0


def _provenance(args) -> int:
    from eae.support.provenance import find_record, format_chain

    if args.json:
        import json

        record = find_record(args.path)
        print(json.dumps(record, indent=2, sort_keys=True))
        return 0 if record else 1
    print(format_chain(args.path))
    return 0


def _archive_verify(args) -> int:
    from eae.support.archive import verify_archive

    report = verify_archive(args.path)
    print(report.format())
    return 0 if report.ok else 1


def _archive_build(args) -> int:
    from eae.support.archive import DEFAULT_EXCLUDE, ArchiveError, build_archive
    from eae.support.config import ConfigError, check_config, load_config_files

    try:
        # the run's own check, without the data-file checks: the data may be gone by now
        config = check_config(load_config_files(args.config), check_files=False) if args.config else {}
        summary = build_archive(args.results, args.output, config,
                                exclude=tuple(DEFAULT_EXCLUDE) + tuple(args.exclude),
                                workflow_dir=args.workflow)
    except (ConfigError, ArchiveError) as err:
        print(err, file=sys.stderr)
        return 1
    print(f"{args.output}: {summary['n_files']} files, {summary['total_bytes']} bytes, "
          f"{summary['n_jobs']} jobs")
    return 0


def _compare(args) -> int:
    from eae.support.compare import compare_trees

    try:
        result = compare_trees(args.a, args.b)
    except FileNotFoundError as err:
        print(err, file=sys.stderr)
        return 2
    print(result.format())
    return 0 if result.identical else 1


def _example_data(args) -> int:
    from eae.experiments.datasets.examples import write_example

    path = write_example(args.name, args.output)
    print(f"{path}: example dataset {args.name!r} (arrays x, y)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="eae", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    docs = sub.add_parser("config-docs", help="print the configuration reference (Markdown)")
    docs.add_argument("-o", "--output", help="write to this file instead of stdout")
    docs.set_defaults(func=_config_docs)
    check = sub.add_parser("check-config", help="validate config files (later ones override) "
                           "as the workflow does before any job")
    check.add_argument("files", nargs="+", metavar="FILE",
                       help="YAML config files, e.g. config/config.yaml config/test.yaml "
                       "(the workflow layers --configfile files over config/config.yaml)")
    check.add_argument("--no-file-checks", action="store_true",
                       help="skip the checks that local data files exist (paths are "
                       "relative to the working directory)")
    check.set_defaults(func=_check_config)
    prov = sub.add_parser("provenance", help="print what made a result, and its inputs, recursively")
    prov.add_argument("path", help="a table, figure, Zarr store or model directory under results/")
    prov.add_argument("--json", action="store_true", help="print the full record as JSON")
    prov.set_defaults(func=_provenance)
    arch = sub.add_parser("archive", help="build or verify the results archive: an RO-Crate "
                          "(Provenance Run Crate) with the sha256 of every file")
    arch_sub = arch.add_subparsers(dest="archive_command", required=True)
    verify = arch_sub.add_parser("verify", help="check an archive against the sha256s in its "
                                 "ro-crate-metadata.json (exit code 1 on any missing, altered "
                                 "or unexpected file)")
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
    build.add_argument("--workflow", default=None, metavar="DIR",
                       help="folder of the Snakefile, archived with the results (default: "
                       "the checkout that holds the eae package)")
    build.set_defaults(func=_archive_build)
    comp = sub.add_parser("compare", help="are two results trees the same? Tables (timing "
                          "columns aside), every Zarr variable and the figures' pixels; exit "
                          "code 1 on any difference")
    comp.add_argument("a", help="a results directory, e.g. results")
    comp.add_argument("b", help="another, e.g. runs/baseline/results")
    comp.set_defaults(func=_compare)
    example = sub.add_parser("example-data", help="write an example dataset that a dependency "
                             "ships offline as an .npz a datasets: entry reads")
    example.add_argument("name", choices=["digits"], help="digits: scikit-learn's 8 x 8 "
                         "handwritten digits (1797 images, labels 0-9)")
    example.add_argument("output", help="the .npz to write, e.g. data/digits.npz")
    example.set_defaults(func=_example_data)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())

"""Are two runs' results the same? Tables cell by cell, Zarr stores variable by variable.

``eae compare A B`` checks what a refactoring must not change (and what a rerun on
another machine should reproduce): every table — the CSV and Markdown files under
``tables/`` and the other CSV files of the results tree, timing columns aside —, every
data variable and coordinate of every Zarr store (values, dims and dtype; attrs hold
provenance and times, so they are not compared) and every figure (pixels). A figure
whose pixels differ is reported with the largest and mean pixel difference, so that
"looks the same" is a number too.

Paths are matched by their place under the two roots. Files under ``benchmarks/``,
``logs/``, ``provenance/``, ``checkpoints/``, ``archive/`` and ``report/`` record how and when a run
ran, not what it computed, and are skipped.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import numpy as np

#: top-level folders of a results tree that describe the run, not its results
SKIPPED_DIRS = ("archive", "benchmarks", "checkpoints", "logs", "provenance", "report")

#: column headers that hold times (they differ between any two runs)
TIMING_COLUMN = re.compile(r"(^|[\s_/])(wall|seconds|elapsed|runtime|duration)(\b|_|$)|"
                           r"(^|\s)(s|sec)$|[a-z]_s$|\(s\)", re.IGNORECASE)


@dataclass
class Comparison:
    """Outcome of :func:`compare_trees`: what was compared and every difference."""

    compared: dict[str, int] = field(default_factory=lambda: {"tables": 0, "stores": 0,
                                                               "variables": 0, "figures": 0})
    differences: list[str] = field(default_factory=list)
    ignored_columns: set[str] = field(default_factory=set)

    @property
    def identical(self) -> bool:
        return not self.differences

    def format(self) -> str:
        c = self.compared
        lines = [f"compared {c['tables']} tables, {c['stores']} Zarr stores "
                 f"({c['variables']} variables) and {c['figures']} figures"]
        if self.ignored_columns:
            lines.append("timing columns ignored: " + ", ".join(sorted(self.ignored_columns)))
        if self.identical:
            lines.append("identical")
        else:
            lines.append(f"{len(self.differences)} difference(s):")
            lines += [f"  {d}" for d in self.differences]
        return "\n".join(lines)


def is_timing_column(name: str) -> bool:
    """True for headers such as ``wall s``, ``round_seconds``, ``time (s)``."""
    return bool(TIMING_COLUMN.search(str(name).strip()))


def _files(root: Path, suffixes: tuple[str, ...]) -> set[str]:
    out = set()
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts and rel.parts[0] in SKIPPED_DIRS:
            continue
        if any(part.endswith(".zarr") for part in rel.parts[:-1]):
            continue  # inside a store
        if path.suffix in suffixes and (path.is_file() or path.suffix == ".zarr"):
            out.add(rel.as_posix())
    return out


def markdown_tables(text: str) -> list[list[list[str]]]:
    """Every pipe table of a Markdown text as rows of cells (the ``|---|`` rule dropped)."""
    tables, current = [], []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|"):
            cells = [c.strip() for c in stripped.strip("|").split("|")]
            if not all(re.fullmatch(r":?-+:?", c) for c in cells if c):
                current.append(cells)
        elif current:
            tables.append(current)
            current = []
    if current:
        tables.append(current)
    return tables


def _prose(text: str) -> list[str]:
    return [line.rstrip() for line in text.splitlines() if not line.strip().startswith("|")]


def compare_markdown(a: Path, b: Path, name: str, result: Comparison) -> None:
    ta, tb = a.read_text(), b.read_text()
    if _prose(ta) != _prose(tb):
        result.differences.append(f"{name}: text outside the tables differs")
    tables_a, tables_b = markdown_tables(ta), markdown_tables(tb)
    if len(tables_a) != len(tables_b):
        result.differences.append(f"{name}: {len(tables_a)} tables vs {len(tables_b)}")
        return
    for k, (rows_a, rows_b) in enumerate(zip(tables_a, tables_b)):
        header = rows_a[0]
        if header != rows_b[0] or len(rows_a) != len(rows_b):
            result.differences.append(f"{name} table {k + 1}: header or row count differs")
            continue
        keep = [i for i, h in enumerate(header) if not is_timing_column(h)]
        result.ignored_columns.update(h for h in header if is_timing_column(h))
        for r, (ra, rb) in enumerate(zip(rows_a[1:], rows_b[1:]), start=1):
            for i in keep:
                if i < len(ra) and i < len(rb) and ra[i] != rb[i]:
                    result.differences.append(
                        f"{name} table {k + 1} row {r} [{header[i]}]: {ra[i]!r} vs {rb[i]!r}")


def compare_csv(a: Path, b: Path, name: str, result: Comparison) -> None:
    import pandas as pd

    da, db = pd.read_csv(a), pd.read_csv(b)
    if list(da.columns) != list(db.columns) or da.shape != db.shape:
        result.differences.append(f"{name}: columns or shape differ ({da.shape} vs {db.shape})")
        return
    for col in da.columns:
        if is_timing_column(col):
            result.ignored_columns.add(col)
            continue
        va, vb = da[col].to_numpy(), db[col].to_numpy()
        if va.dtype.kind in "fc" and vb.dtype.kind in "fc":
            same = np.array_equal(va, vb, equal_nan=True)
        else:
            same = list(pd.Series(va).fillna("<NA>")) == list(pd.Series(vb).fillna("<NA>"))
        if not same:
            rows = np.flatnonzero(~((va == vb) | (pd.isna(va) & pd.isna(vb))))
            result.differences.append(f"{name} [{col}]: differs in {len(rows)} row(s), first "
                                      f"row {int(rows[0]) if len(rows) else '?'}")


def compare_store(a: Path, b: Path, name: str, result: Comparison) -> None:
    from eae.support.io import open_zarr  # also quiets Snakemake's timestamp file warning

    da, db = open_zarr(a), open_zarr(b)
    names_a, names_b = set(da.variables), set(db.variables)
    if names_a != names_b:
        result.differences.append(f"{name}: variables differ: only in A {sorted(names_a - names_b)}, "
                                  f"only in B {sorted(names_b - names_a)}")
    for var in sorted(names_a & names_b):
        va, vb = da[var], db[var]
        result.compared["variables"] += 1
        if va.dims != vb.dims or va.shape != vb.shape or va.dtype != vb.dtype:
            result.differences.append(f"{name}/{var}: dims/shape/dtype {va.dims}{va.shape} "
                                      f"{va.dtype} vs {vb.dims}{vb.shape} {vb.dtype}")
            continue
        xa, xb = va.values, vb.values
        equal_nan = xa.dtype.kind in "fc"
        if not np.array_equal(xa, xb, equal_nan=equal_nan):
            msg = f"{name}/{var}: values differ"
            if xa.dtype.kind in "fc":
                diff = np.abs(np.asarray(xa, np.float64) - np.asarray(xb, np.float64))
                msg += f" (max |Δ| {np.nanmax(diff):.3g})"
            result.differences.append(msg)


def compare_figure(a: Path, b: Path, name: str, result: Comparison) -> None:
    if a.read_bytes() == b.read_bytes():
        return
    from matplotlib import image

    pa, pb = image.imread(a), image.imread(b)
    if pa.shape != pb.shape:
        result.differences.append(f"{name}: image size {pa.shape} vs {pb.shape}")
        return
    diff = np.abs(pa.astype(np.float64) - pb.astype(np.float64))
    if diff.max() > 0:
        result.differences.append(f"{name}: pixels differ (max {diff.max():.3g}, mean "
                                  f"{diff.mean():.3g}, {np.mean(diff.max(axis=-1) > 0):.2%} "
                                  "of pixels)")


def compare_trees(a: str | Path, b: str | Path) -> Comparison:
    """Compare results tree ``a`` with ``b`` (see the module docstring)."""
    a, b = Path(a), Path(b)
    for root in (a, b):
        if not root.is_dir():
            raise FileNotFoundError(f"no results folder at {root}")
    result = Comparison()
    kinds: Iterable[tuple[tuple[str, ...], str, object]] = (
        ((".csv", ".md"), "tables", None), ((".zarr",), "stores", compare_store),
        ((".png",), "figures", compare_figure))
    for suffixes, kind, fn in kinds:
        fa, fb = _files(a, suffixes), _files(b, suffixes)
        for missing in sorted(fa ^ fb):
            result.differences.append(f"{missing}: only in {'A' if missing in fa else 'B'}")
        for name in sorted(fa & fb):
            if kind == "tables" and name.endswith(".md") and not name.startswith("tables/"):
                continue  # notes beside results are prose, not tables
            result.compared[kind] += 1
            compare = fn or (compare_markdown if name.endswith(".md") else compare_csv)
            compare(a / name, b / name, name, result)
    return result

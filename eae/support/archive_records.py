"""What the archived files tell about the run, read from their text: the provenance
records the stages wrote (one job per distinct record), the rules of the workflow
(from the Snakefile and the rule files) and the plain values, times and descriptions
the crate's entities are made of.

Split from :mod:`eae.support.archive` (which re-exports every name here) so that the
reading of records and rules stands apart from building the crate with ``rocrate``
(:mod:`eae.support.archive_crate`).
"""

from __future__ import annotations

import datetime as _dt
import functools
import hashlib
import json
import logging
import math
import posixpath
import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator, Mapping

from eae.support.archive_contents import RESULTS_PREFIX, _may_hold_record, _Member

# the name the archive's messages have always been logged under
log = logging.getLogger("eae.support.archive")


# ---------------------------------------------------------------- provenance records


@dataclass
class _Job:
    """One job of the workflow as its provenance record tells it: the record, the crate
    paths of its outputs and the archived files that hold the record."""

    record: dict[str, Any]
    outputs: list[str] = field(default_factory=list)
    holders: list[str] = field(default_factory=list)

    @functools.cached_property
    def key(self) -> str:
        """Same record (``output`` aside) = same job: record_outputs copies one record
        into a sidecar per output, and only ``output`` differs between the copies."""
        rest = {k: v for k, v in self.record.items() if k != "output"}
        return hashlib.sha256(json.dumps(rest, sort_keys=True, default=str).encode()).hexdigest()


def _record_of(member: _Member) -> tuple[str, dict[str, Any]] | None:
    """(crate path of the output it describes, record) for a file holding a provenance
    record, else None. Unreadable JSON is logged and skipped: the file is still
    archived with its sha256, it just yields no job."""
    try:
        doc = json.loads(member.data)
    except (ValueError, UnicodeDecodeError) as err:
        log.warning("%s: not a readable provenance record (%s); no job recorded for it",
                    member.name, err)
        return None
    folder, name = posixpath.split(member.name)
    if name == "zarr.json":
        from eae.support.io import PROVENANCE_ATTR  # xarray comes with it: only for Zarr stores

        raw = (doc.get("attributes") or {}).get(PROVENANCE_ATTR) if isinstance(doc, dict) else None
        try:
            record = json.loads(raw) if isinstance(raw, str) else raw
        except ValueError:
            record = None
        output = folder
    elif member.name.startswith(f"{RESULTS_PREFIX}/provenance/"):
        # results/provenance/<rel>.json describes results/<rel> (eae.provenance.sidecar_path)
        rel = member.name[len(f"{RESULTS_PREFIX}/provenance/"):-len(".json")]
        record, output = doc, f"{RESULTS_PREFIX}/{rel}"
    else:  # provenance.json inside an output folder (a trained model)
        record, output = doc, folder
    if not isinstance(record, dict) or not isinstance(record.get("stage"), str):
        return None  # e.g. report/provenance.json, a collection of records, or empty attrs
    return output, record


def _jobs(members: Iterable[_Member]) -> list[_Job]:
    """The jobs behind the archived results, one per distinct provenance record."""
    jobs: dict[str, _Job] = {}
    for member in members:
        if member.data is None or not _may_hold_record(member.name):
            continue
        found = _record_of(member)
        if found is None:
            continue
        output, record = found
        job = _Job(record)
        job = jobs.setdefault(job.key, job)
        job.outputs.append(output)
        job.holders.append(member.name)
    return list(jobs.values())


# ------------------------------------------------------------------------ rules


_RULE = re.compile(r"^(?:rule|checkpoint)\s+(\w+)\s*:", re.M)
_SCRIPT = re.compile(r"^\s+script:\s*\n?\s*[rf]?[\"']([^\"']+)[\"']", re.M)


def workflow_rules(sources: Mapping[str, str]) -> dict[str, tuple[str, str | None]]:
    """{rule: (file that defines it, script it runs or None)} from the text of the
    Snakefile and the rule files (``sources``: {path in the crate: text}). Read from the
    text because the archive may be built outside Snakemake (``eae archive build``)."""
    rules = {}
    for path, text in sources.items():
        if not (path == "Snakefile" or path.endswith(".smk")):
            continue
        heads = list(_RULE.finditer(text))
        for i, head in enumerate(heads):
            end = heads[i + 1].start() if i + 1 < len(heads) else len(text)
            script = _SCRIPT.search(text, head.end(), end)
            rel = (posixpath.normpath(posixpath.join(posixpath.dirname(path), script.group(1)))
                   if script else None)
            rules[head.group(1)] = (path, rel)
    return rules


def _flatten(config: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """(dotted key, value) of every leaf of a nested config."""
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            yield from _flatten(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def _plain_value(value: Any) -> Any:
    """A PropertyValue ``value``: scalars as they are, anything else as JSON text (and
    NaN or infinities as text, which JSON has no number for)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, (bool, int, float, str)):
        return value
    return json.dumps(value, sort_keys=True, default=str)


def _data_type(value: Any) -> str:
    """schema.org DataType of a config value, the FormalParameter's ``additionalType``."""
    for kind, name in ((bool, "Boolean"), (int, "Integer"), (float, "Float"), (str, "Text")):
        if isinstance(value, kind):
            return name
    return "Text"  # lists and nulls travel as JSON text


def _parse_time(value: Any) -> _dt.datetime | None:
    try:
        parsed = _dt.datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_dt.timezone.utc)


def _job_description(record: Mapping[str, Any]) -> str:
    """What else the record says about the job: code, device, Python."""
    git = record.get("git") or {}
    commit = str(git.get("commit") or "unknown")[:12]
    dirty = " (dirty tree)" if git.get("dirty") else ""
    return (f"eae stage {record['stage']}: git {commit}{dirty}, eae source sha256 "
            f"{str(record.get('eae_source_sha256') or 'unknown')[:12]}, device "
            f"{record.get('device', 'unknown')}, Python {record.get('python', 'unknown')}, "
            f"seeds {json.dumps(record.get('seeds') or {}, sort_keys=True, default=str)}")


def _run_times(records: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """startTime and endTime of the whole run: earliest start, latest end of its jobs."""
    records = list(records)
    starts = [(t, r["started"]) for r in records for t in [_parse_time(r.get("started"))] if t]
    ends = [(t, r["finished"]) for r in records for t in [_parse_time(r.get("finished"))] if t]
    times = {}
    if starts:
        times["startTime"] = str(min(starts)[1])
    if ends:
        times["endTime"] = str(max(ends)[1])
    return times

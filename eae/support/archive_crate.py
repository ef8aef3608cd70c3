"""The RO-Crate metadata of the results archive (Workflow Run / Provenance Run Crate
profiles 0.5), built with the ``rocrate`` package from the archived members: a File
entity with its sha256 for every member, the workflow and a tool and a step per rule,
a CreateAction per job and the run's actions (see :mod:`eae.support.archive`).

Split from :mod:`eae.support.archive` (which re-exports every name here): the crate
builder is the largest piece of the archive and the only one that needs ``rocrate``.
"""

from __future__ import annotations

import bisect
import hashlib
import importlib.metadata
import json
import platform
import posixpath
import re
from collections import Counter
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Mapping
from urllib.parse import quote

from rocrate.model import ComputerLanguage, ContextEntity, SoftwareApplication
from rocrate.rocrate import ROCrate

from eae.support.archive_contents import CONFIG_NAME, LOCK_NAME, RESULTS_PREFIX, _as_list, _Member
from eae.support.archive_records import (_data_type, _flatten, _Job, _job_description, _jobs,
                                         _plain_value, _run_times, workflow_rules)
from eae.support.provenance import git_state, now_iso

PROFILES = {
    "https://w3id.org/ro/wfrun/process/0.5": ("Process Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/workflow/0.5": ("Workflow Run Crate", "0.5"),
    "https://w3id.org/ro/wfrun/provenance/0.5": ("Provenance Run Crate", "0.5"),
    "https://w3id.org/workflowhub/workflow-ro-crate/1.0": ("Workflow RO-Crate", "1.0"),
}
# Defines ``sha256`` (and the other workflow-run terms) for the crate's JSON-LD.
WFRUN_CONTEXT = "https://w3id.org/ro/terms/workflow-run/context"
# Not in the RO-Crate 1.1 context; the Provenance Run Crate profile names this term.
BUILD_INSTRUCTIONS_TERM = "https://codemeta.github.io/terms/buildInstructions"
PIP_REQUIREMENTS_FORMAT = "https://pip.pypa.io/en/stable/reference/requirements-file-format/"
_MEDIA_TYPES = {".csv": "text/csv", ".tsv": "text/tab-separated-values", ".md": "text/markdown",
                ".png": "image/png", ".json": "application/json", ".yaml": "application/yaml",
                ".yml": "application/yaml", ".txt": "text/plain", ".log": "text/plain",
                ".py": "text/x-python", ".rst": "text/x-rst"}


class _CrateBuilder:
    """Builds the crate's metadata with the ``rocrate`` package from the archived
    members; nothing is copied (the tarball already holds the files)."""

    def __init__(self, results_root: Path, rule_outputs: Mapping[str, Iterable[str]] | None):
        self.crate = ROCrate(version="1.1")  # the version the 0.5 profiles build on
        self.results_root = results_root
        self.patterns = {rule: [re.compile(p) for p in pats]
                         for rule, pats in (rule_outputs or {}).items()}
        self.files: dict[str, Any] = {}
        self.datasets: dict[str, Any] = {}
        self.in_datasets: set[str] = set()  # files that are part of a Dataset entity
        self._sorted_names: list[str] | None = None  # self.files' keys, for prefix lookups
        self.tools: dict[str, Any] = {}
        self.steps: dict[str, Any] = {}
        self.rules: dict[str, tuple[str, str | None]] = {}
        self.workflow = None
        self.snakemake_version: str | None = None

    # --- data entities

    def add_file(self, member: _Member, properties: Mapping[str, Any] | None = None,
                 workflow: bool = False):
        """A File entity for an archived member, with the sha256 the archive is checked
        against (or the main workflow, with ``workflow``)."""
        props = {"sha256": member.sha256, "contentSize": str(member.size)}
        media = _MEDIA_TYPES.get(PurePosixPath(member.name).suffix)
        if media:
            props["encodingFormat"] = media
        props.update(properties or {})
        if workflow:
            entity = self.crate.add_workflow(dest_path=member.name, main=True, lang="snakemake",
                                             lang_version=self.snakemake_version,
                                             properties=props)
        else:
            entity = self.crate.add_file(dest_path=member.name, properties=props)
        self.files[member.name] = entity
        self._sorted_names = None
        return entity

    def entity_for(self, path: str):
        """The File for an archived path, the Dataset for an archived folder (a Zarr
        store, a model), or None when nothing of it is in the archive."""
        path = path.rstrip("/")
        if path in self.files:
            return self.files[path]
        if path in self.datasets:
            return self.datasets[path]
        if self._sorted_names is None:
            self._sorted_names = sorted(self.files)
        names = self._sorted_names
        # the names below path/ sort between "path/" and "path0" ("0" follows "/" in ASCII)
        inside = names[bisect.bisect_left(names, path + "/"):bisect.bisect_left(names, path + "0")]
        if not inside:
            return None
        dataset = self.crate.add_dataset(dest_path=path, properties={
            "hasPart": [self.files[name] for name in inside]})
        self.datasets[path] = dataset
        self.in_datasets.update(inside)
        return dataset

    def crate_path(self, recorded: str) -> str | None:
        """Where an input path of a record lies in the crate: ``results/...`` as the
        workflow names it (relative to its working directory), or an absolute path
        inside the results directory; None for anything else."""
        path = PurePosixPath(recorded)
        if path.is_absolute():
            try:
                rel = Path(recorded).resolve().relative_to(self.results_root.resolve())
            except ValueError:
                return None
            return f"{RESULTS_PREFIX}/{rel.as_posix()}"
        norm = posixpath.normpath(recorded)
        return norm if norm.split("/")[0] == RESULTS_PREFIX else None

    def external_input(self, recorded: str, digest: Any):
        """A contextual entity for an input outside the archive (raw data, resources)."""
        ident = "#input-" + hashlib.sha256(recorded.encode()).hexdigest()[:16]
        if ident not in self.crate:
            self.crate.add(ContextEntity(self.crate, ident, properties={
                "@type": "CreativeWork", "name": recorded, "alternateName": recorded,
                "sha256": str(digest),
                "description": "input outside the archive; sha256 as the stage recorded it "
                               "(of the file, or for a folder of its sorted files, see "
                               "eae.provenance.sha256_path)"}))
        return self.crate.get(ident)

    # --- the workflow and its rules

    def add_workflow(self, members: list[_Member], jobs: list[_Job], workflow_dir: Path):
        """The Snakefile as main entity (ComputationalWorkflow and HowTo, its version the
        git commit of ``workflow_dir``), the rule files and scripts as source code, and a
        tool and a HowToStep per rule."""
        versions = Counter((j.record.get("packages") or {}).get("snakemake") for j in jobs)
        versions.pop(None, None)
        versions.pop("not installed", None)
        self.snakemake_version = (versions.most_common(1)[0][0] if versions
                                   else _installed_version("snakemake"))
        python = self._python_language()
        for member in members:
            if member.name == "Snakefile":
                self.workflow = self.add_file(member, workflow=True, properties={
                    "@type": ["File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"],
                    "name": "Entropic Autoencoders workflow", **_git_version(workflow_dir)})
            elif member.name.endswith(".smk"):
                self.add_file(member, {"@type": ["File", "SoftwareSourceCode"],
                                       "programmingLanguage": self.workflow["programmingLanguage"]})
            elif member.name.endswith(".py"):
                self.add_file(member, {"@type": ["File", "SoftwareSourceCode"],
                                       "programmingLanguage": python})
            else:
                self.add_file(member)
        sources = {m.name: m.data.decode("utf-8", "replace") for m in members if m.data}
        self.rules = workflow_rules(sources)
        for rule in self.rules:
            self.tool(rule)

    def _python_language(self):
        return self.crate.add(ComputerLanguage(self.crate, "#python", properties={
            "name": "Python", "url": {"@id": "https://www.python.org/"},
            "version": platform.python_version()}))

    def tool(self, name: str, is_rule: bool = True):
        """The tool (SoftwareApplication) for a rule, or for a stage that no rule claims,
        with its HowToStep in the workflow; made once."""
        if name in self.tools:
            return self.tools[name]
        where, script = self.rules.get(name, (None, None)) if is_rule else (None, None)
        ident = f"{where}#{name}" if where else (f"#rule-{name}" if is_rule else f"#stage-{name}")
        props = {"name": f"rule {name}" if is_rule else f"stage {name}",
                 "description": (f"Snakemake rule {name}" + (f" in {where}" if where else "")
                                 if is_rule else f"eae stage {name} (no rule of the workflow "
                                 "claims its outputs)")}
        if script and script in self.files:
            props["mainEntity"] = self.files[script]  # the wrapped Python script
        tool = self.crate.add(SoftwareApplication(self.crate, quote(ident, safe="#/._-"), props))
        step = self.crate.add(ContextEntity(self.crate, f"#step-{quote(name)}", properties={
            "@type": "HowToStep", "name": name, "workExample": tool}))
        self.workflow.append_to("hasPart", tool)
        self.workflow.append_to("step", step)
        self.tools[name], self.steps[name] = tool, step
        return tool

    def rule_for(self, stage: str, outputs: list[str]) -> str | None:
        """The rule that ran a job: the one whose output patterns match its outputs
        (Snakemake's own, when the archive rule passes them), else the rule named as
        the stage or as its prefix (``metrics`` for ``metrics_mnist``); None if none."""
        matching = sorted({rule for rule, pats in self.patterns.items()
                           for pat in pats for out in outputs if pat.match(out)})
        if len(matching) == 1:
            return matching[0]
        by_name = [r for r in (matching or self.rules)
                   if stage == r or stage.startswith(r + "_")]
        if by_name:
            return max(by_name, key=len)
        return matching[0] if matching else None

    # --- the jobs and the run

    def add_job(self, job: _Job):
        """The CreateAction of one job and the ControlAction of its step; None when
        none of its outputs is in the archive."""
        results = [e for e in (self.entity_for(o) for o in job.outputs) if e is not None]
        if not results:
            return None
        record, stage = job.record, job.record["stage"]
        rule = self.rule_for(stage, job.outputs)
        name = rule or stage
        tool = self.tool(name, is_rule=rule is not None)
        ident = f"#job-{quote(stage)}-{job.key[:12]}"
        objects = self._inputs(record) + self._parameters(ident, tool, record)
        props = {"@type": "CreateAction", "name": f"Run of {tool['name']} (stage {stage})",
                 "description": _job_description(record),
                 "actionStatus": {"@id": "http://schema.org/CompletedActionStatus"}}
        for key, prop in (("started", "startTime"), ("finished", "endTime")):
            if record.get(key):
                props[prop] = str(record[key])
        action = self.crate.add_action(tool, ident, object=objects, result=results,
                                       properties=props)
        for holder in job.holders:  # the files holding the record are traces of the job
            self.files[holder]["about"] = action
        control = self.crate.add(ContextEntity(
            self.crate, f"#control-{job.key[:12]}", properties={
                "@type": "ControlAction", "name": f"orchestrate {tool['name']}",
                "instrument": self.steps[name], "object": action}))
        return action, control

    def _inputs(self, record: Mapping[str, Any]) -> list:
        """Entities for a record's inputs: what the archive holds, else external."""
        inputs = record.get("inputs") or {}
        entities = []
        for recorded, digest in (inputs.items() if isinstance(inputs, Mapping) else ()):
            path = self.crate_path(str(recorded))
            entity = self.entity_for(path) if path else None
            entities.append(entity if entity is not None
                            else self.external_input(str(recorded), digest))
        return entities

    def _parameters(self, action_id: str, tool, record: Mapping[str, Any]) -> list:
        """A PropertyValue per config value of the stage, each the example of a
        FormalParameter of the tool (its ``input``)."""
        config = record.get("config")
        values = []
        for key, value in _flatten(config if isinstance(config, Mapping) else {}):
            param_id = f"{tool.id}/param/{quote(key)}"
            param = self.crate.get(param_id)
            if param is None:
                param = self.crate.add_formal_parameter(key, _data_type(value),
                                                        identifier=param_id)
                tool.append_to("input", param)
            values.append(self.crate.add(ContextEntity(
                self.crate, f"{action_id}/param/{quote(key)}", properties={
                    "@type": "PropertyValue", "name": key, "value": _plain_value(value),
                    "exampleOfWork": param})))
        return values

    def add_run(self, actions: list, controls: list, jobs: list[_Job], config_file):
        """The CreateAction of the workflow run and the OrganizeAction of Snakemake.
        The run's result is everything under results/: the stores and folders the jobs
        made, and every other file."""
        results = list(self.datasets.values()) + [
            e for name, e in self.files.items() if name.startswith(f"{RESULTS_PREFIX}/")
            and name not in self.in_datasets]
        external = [o for a in actions for o in _as_list(a.get("object", []))
                    if getattr(o, "id", "").startswith("#input-")]
        times = _run_times(j.record for j in jobs)
        run = self.crate.add_action(self.workflow, "#workflow-run", object=[config_file] + list(
            {e.id: e for e in external}.values()), result=results, properties={
            "name": "Run of the eae Snakemake workflow", **times})
        engine = self.crate.add(SoftwareApplication(self.crate, "#snakemake", properties={
            "name": "Snakemake", "url": {"@id": "https://snakemake.readthedocs.io"},
            **({"softwareVersion": self.snakemake_version} if self.snakemake_version else {})}))
        organize = self.crate.add(ContextEntity(self.crate, "#snakemake-run", properties={
            "@type": "OrganizeAction", "name": "Run of Snakemake", "instrument": engine,
            "object": controls, "result": run, **times}))
        return run, organize

    def finish(self, mentions: list, lock):
        """Root dataset (profiles, mentions) and the metadata as JSON bytes."""
        root = self.crate.root_dataset
        root["name"] = "eae results"
        root["description"] = ("Results of the Entropic Autoencoders workflow with the "
                               "workflow, its resolved config, the environment and the "
                               "provenance of every job (Provenance Run Crate).")
        root["datePublished"] = now_iso()
        for url, (name, version) in PROFILES.items():
            profile = self.crate.add(ContextEntity(self.crate, url, properties={
                "@type": "CreativeWork", "name": name, "version": version}))
            root.append_to("conformsTo", profile)
        root.append_to("mentions", mentions)
        self.workflow["buildInstructions"] = lock
        metadata = self.crate.metadata
        metadata.extra_contexts.append(WFRUN_CONTEXT)
        metadata.extra_terms["buildInstructions"] = BUILD_INSTRUCTIONS_TERM
        return json.dumps(metadata.generate(), indent=1, sort_keys=True,
                          ensure_ascii=False).encode()


def _installed_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _git_version(workflow_dir: Path) -> dict[str, str]:
    """{"version": commit} of the workflow's checkout (``-dirty`` when it has
    uncommitted changes: the archived files are then what ran, not the commit)."""
    git = git_state(workflow_dir)
    if not git.get("commit"):
        return {}
    return {"version": git["commit"] + ("-dirty" if git.get("dirty") else "")}


def _crate_metadata(members: list[_Member], results_root: Path, workflow_dir: Path,
                    rule_outputs: Mapping[str, Iterable[str]] | None) -> tuple[bytes, int]:
    """The ro-crate-metadata.json for the archived members, and the number of jobs."""
    builder = _CrateBuilder(results_root, rule_outputs)
    by_name = {m.name: m for m in members}
    results = [m for m in members if m.name.startswith(f"{RESULTS_PREFIX}/")]
    jobs = _jobs(results)
    for member in results:
        builder.add_file(member)
    config_file = builder.add_file(by_name[CONFIG_NAME], {
        "name": "resolved configuration",
        "description": "the validated config with every default filled in"})
    lock = builder.add_file(by_name[LOCK_NAME], {
        "name": "environment lock", "description": "pip freeze of the interpreter that "
        "built the archive; pip install -r recreates the environment",
        "conformsTo": {"@id": PIP_REQUIREMENTS_FORMAT}})
    workflow = [m for m in members if not m.name.startswith(f"{RESULTS_PREFIX}/")
                and m.name not in (CONFIG_NAME, LOCK_NAME)]
    builder.add_workflow(workflow, jobs, workflow_dir)
    done = [pair for pair in (builder.add_job(job) for job in jobs) if pair is not None]
    actions, controls = [a for a, _ in done], [c for _, c in done]
    run, organize = builder.add_run(actions, controls, jobs, config_file)
    return builder.finish([run, organize] + actions, lock), len(actions)

"""Results archive: an RO-Crate (Workflow Run / Provenance Run Crate) with every file's
sha256, the workflow, the resolved config, the environment lock, one CreateAction per
job from the provenance records, and a verify that names every missing, altered or
unexpected file."""

import hashlib
import io
import json
import re
import subprocess
import tarfile

import pytest
import yaml
from rocrate.rocrate import ROCrate

from eae import archive
from eae.archive import (ArchiveError, build_archive, environment_lock, verify_archive,
                         workflow_files)
from eae.cli import main
from helpers import run_snakemake

CONFIG = {"mnist": {"enabled": True, "eae": {"train": {"decoder_updates": 3}}},
          "validation": {"n_steps": 4000}}
PROFILES = {"https://w3id.org/ro/wfrun/process/0.5", "https://w3id.org/ro/wfrun/workflow/0.5",
            "https://w3id.org/ro/wfrun/provenance/0.5"}
STARTED, FINISHED = "2026-01-05T10:00:00+00:00", "2026-01-05T10:02:30+00:00"


def record(stage, config, inputs=None, started=STARTED, finished=FINISHED):
    """A provenance record as eae.provenance.make_record writes it (the parts the archive
    reads, and some it passes on)."""
    return {"stage": stage, "config": config, "seeds": {"seed": 0},
            "git": {"commit": "ab" * 20, "dirty": False}, "packages": {"snakemake": "9.11.0"},
            "device": "CPU: test (2 cores)", "python": "3.11.7", "started": started,
            "finished": finished, "inputs": inputs or {}}


# One record per job, as the stages write them; the outputs of a job share its record.
RECORDS = {
    "sampler_check": record("sampler_check", {"n_steps": 4000, "seed": 1, "thin": 0.5}),
    "images_ensemble": record("images_ensemble", {"train": {"decoder_updates": 3}, "ensemble": {"size": 4}},
                       inputs={"/data/raw/mnist.npz": "cd" * 32},
                       started="2026-01-05T09:00:00+00:00"),
    "images_metrics_mnist": record("images_metrics_mnist", {"seed": 0, "models": ["eae", "vae"]},
                            inputs={"results/mnist/eae/ensemble.zarr": "ef" * 32}),
    "images_table1": record("images_table1", {"datasets": ["mnist"]},
                     inputs={"results/mnist/metrics.csv": "01" * 32},
                     finished="2026-01-05T11:00:00+00:00"),
    "figures_mnist": record("figures_mnist", {"seed": 0, "n_images": 16}),
}
JOB_OUTPUTS = {"sampler_check": ["validation/sampler.csv", "figures/validation_sampler.png"],
               "images_metrics_mnist": ["mnist/metrics.csv"],
               "images_table1": ["tables/table1.csv", "tables/table1.md"],
               "figures_mnist": ["figures/mnist_samples.png"]}


def _sidecar(stage, out):
    rec = dict(RECORDS[stage], output={"path": f"results/{out}", "sha256": "00" * 32})
    return json.dumps(rec, sort_keys=True).encode()


@pytest.fixture
def results(tmp_path):
    """A small fake results tree with provenance sidecars and a Zarr store carrying its
    record, plus the parts the archive must leave out."""
    root = tmp_path / "results"
    files = {
        "validation/sampler.csv": b"step,energy\n1,0.5\n",
        "figures/validation_sampler.png": b"\x89PNG fake",
        "mnist/metrics.csv": b"model,nll\neae,1.0\n",
        "tables/table1.csv": b"model,nll\neae,1.0\n",
        "tables/table1.md": b"| model | nll |\n",
        "figures/mnist_samples.png": b"\x89PNG samples",
        "mnist/eae/ensemble.zarr/zarr.json": json.dumps(
            {"attributes": {"provenance": json.dumps(RECORDS["images_ensemble"])}}).encode(),
        "mnist/eae/ensemble.zarr/latent/c/0/0/0": bytes(range(256)) * 50,
        # a collection of records (the report's), not the record of a job
        "report/provenance.json": json.dumps({"results/tables/table1.csv":
                                              RECORDS["images_table1"]}).encode(),
        "logs/validation.log": b"done\n",
        "empty.txt": b"",
    }
    for stage, outs in JOB_OUTPUTS.items():
        files.update({f"provenance/{out}.json": _sidecar(stage, out) for out in outs})
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "checkpoints" / "mnist" / "eae").mkdir(parents=True)
    (root / "checkpoints" / "mnist" / "eae" / "state.npz").write_bytes(b"scratch")
    (root / "archive").mkdir()
    (root / "archive" / "old.tar.gz").write_bytes(b"an older archive")
    return root, files


def build(results_tree, out, **kwargs):
    root, _ = results_tree
    return build_archive(root, out, CONFIG, environment="numpy==2.4.0\n", **kwargs)


def extract(tarball, folder):
    with tarfile.open(tarball, "r:gz") as tar:
        tar.extractall(folder, filter="data")
    return folder


def open_crate(tarball, tmp_path):
    """The archive's crate as rocrate reads it (from the extracted folder)."""
    return ROCrate(extract(tarball, tmp_path / "crate"))


def as_list(value):
    return value if isinstance(value, list) else [value]


def ids(value):
    return [getattr(v, "id", v) for v in as_list(value)]


def job_actions(crate):
    """The CreateActions of the jobs (the workflow run's own is left out)."""
    return [a for a in crate.get_by_type("CreateAction") if a.id != "#workflow-run"]


def action_for(crate, path):
    [action] = [a for a in job_actions(crate) if path in ids(a.get("result", []))]
    return action


def rewrite(src, dst, change):
    """Copy tarball ``src`` to ``dst``; ``change(name, data)`` returns new bytes, or None
    to drop the member. Extra members: change("__add__", None) -> [(name, data)]."""
    with tarfile.open(src, "r:gz") as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            new = change(member.name, data)
            if new is None:
                continue
            member.size = len(new)
            tout.addfile(member, io.BytesIO(new))
        for name, data in change("__add__", None) or []:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tout.addfile(info, io.BytesIO(data))


def test_archive_holds_every_result_and_the_workflow_with_its_sha256(results, tmp_path,
                                                                    repo_root):
    root, files = results
    out = root / "archive" / "eae-results.tar.gz"
    summary = build(results, out)
    workflow = {p.as_posix() for p in workflow_files(repo_root)}
    assert {"Snakefile", "workflow/rules/archive.smk", "workflow/scripts/archive.py",
            "config/config.yaml"} <= workflow
    expected = ({"results/" + rel for rel in files} | workflow
                | {"config.resolved.yaml", "environment.lock.txt"})
    assert set(summary["files"]) == expected  # no checkpoints, no archive/ folder
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        assert names[-1] == "ro-crate-metadata.json"
        graph = {e["@id"]: e for e in json.loads(tar.extractfile(names[-1]).read())["@graph"]}
        for rel, data in files.items():
            entity = graph["results/" + rel]
            assert "File" in as_list(entity["@type"])
            assert entity["sha256"] == hashlib.sha256(data).hexdigest()
            assert entity["contentSize"] == str(len(data))
            assert tar.extractfile("results/" + rel).read() == data
        assert yaml.safe_load(tar.extractfile("config.resolved.yaml").read()) == CONFIG
        assert tar.extractfile("environment.lock.txt").read() == b"numpy==2.4.0\n"
        assert tar.extractfile("Snakefile").read() == (repo_root / "Snakefile").read_bytes()
    assert not any(n.startswith("results/checkpoints") or n.startswith("results/archive")
                   for n in names)
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file
    report = verify_archive(out)
    assert report.ok and report.checked == len(expected), report.format()


def test_crate_follows_the_run_crate_profiles_and_every_table_and_figure_is_a_job_result(
        results, tmp_path):
    root, files = results
    out = tmp_path / "a.tar.gz"
    assert build(results, out)["n_jobs"] == 5  # report/provenance.json is not a job
    crate = open_crate(out, tmp_path)
    assert PROFILES <= set(ids(crate.root_dataset["conformsTo"]))
    assert "https://w3id.org/ro/crate/1.1" in ids(crate.metadata["conformsTo"])
    workflow = crate.mainEntity
    assert workflow.id == "Snakefile"
    assert {"File", "SoftwareSourceCode", "ComputationalWorkflow", "HowTo"} <= set(workflow.type)
    assert workflow["programmingLanguage"]["name"] == "Snakemake"
    tools, steps = ids(workflow["hasPart"]), as_list(workflow["step"])
    assert "workflow/rules/archive.smk#archive" in tools  # a tool and a step per rule
    assert {s.id for s in steps} >= {"#step-sampler_check", "#step-images_table1", "#step-archive"}
    controls = crate.get_by_type("ControlAction")
    outputs = [rel for rel in files if rel.startswith(("tables/", "figures/"))]
    assert len(outputs) == 4
    for rel in outputs:
        entity = crate.get("results/" + rel)
        assert entity is not None and "File" in as_list(entity.type), rel
        action = action_for(crate, entity.id)
        tool = action["instrument"]
        assert tool.id in tools, rel
        [step] = [s for s in steps if s["workExample"] is tool]
        assert any(c["instrument"] is step and c["object"] is action for c in controls)
        stage = action["name"].split("(stage ")[1].rstrip(")")
        config = RECORDS[stage]["config"]
        values = {pv["name"]: pv["value"] for pv in as_list(action["object"])
                  if pv.type == "PropertyValue"}
        assert values == {k: v if not isinstance(v, list) else json.dumps(v)
                          for k, v in config.items()}, rel
        params = ids(tool["input"])
        assert all(pv["exampleOfWork"].id in params for pv in as_list(action["object"])
                   if pv.type == "PropertyValue")
        assert action["startTime"] == RECORDS[stage]["started"]
        assert action["endTime"] == RECORDS[stage]["finished"]
    # the sidecar of a table is a trace of its job
    assert crate.get("results/provenance/tables/table1.csv.json")["about"] is action_for(
        crate, "results/tables/table1.csv")


def test_jobs_group_their_outputs_and_link_inputs_to_the_jobs_that_made_them(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    crate = open_crate(out, tmp_path)
    validation = action_for(crate, "results/validation/sampler.csv")
    assert set(ids(validation["result"])) == {"results/validation/sampler.csv",
                                              "results/figures/validation_sampler.png"}
    assert validation["instrument"].id == "workflow/rules/sampler_check.smk#sampler_check"
    assert validation["instrument"]["mainEntity"].id == "workflow/scripts/sampler_check.py"
    # images_table1 read metrics.csv, which images_metrics_mnist made from the ensemble store
    table1 = action_for(crate, "results/tables/table1.csv")
    assert "results/mnist/metrics.csv" in ids(table1["object"])
    metrics = action_for(crate, "results/mnist/metrics.csv")
    assert metrics["instrument"].id == "workflow/rules/images.smk#images_metrics"  # stage images_metrics_mnist
    store = crate.get("results/mnist/eae/ensemble.zarr/")
    assert store.type == "Dataset" and store.id in ids(metrics["object"])
    assert "results/mnist/eae/ensemble.zarr/latent/c/0/0/0" in ids(store["hasPart"])
    ensemble = action_for(crate, store.id)
    assert {pv["name"]: pv["value"] for pv in as_list(ensemble["object"])
            if pv.type == "PropertyValue"} == {"train.decoder_updates": 3, "ensemble.size": 4}
    [raw] = [o for o in as_list(ensemble["object"]) if o.type == "CreativeWork"]
    assert raw["name"] == "/data/raw/mnist.npz" and raw["sha256"] == "cd" * 32
    # without the workflow's output patterns, a stage no rule is named after is a tool alone
    samples = action_for(crate, "results/figures/mnist_samples.png")
    assert samples["instrument"].id == "#stage-figures_mnist"
    # the engine run: every step execution, and the workflow run with its whole span
    [organize] = crate.get_by_type("OrganizeAction")
    assert organize["instrument"]["name"] == "Snakemake"
    assert organize["instrument"]["softwareVersion"] == "9.11.0"
    assert set(ids(organize["object"])) == {c.id for c in crate.get_by_type("ControlAction")}
    run = organize["result"]
    assert run["instrument"] is crate.mainEntity
    assert "config.resolved.yaml" in ids(run["object"]) and raw.id in ids(run["object"])
    assert {store.id, "results/tables/table1.csv", "results/logs/validation.log"} <= set(
        ids(run["result"]))
    assert run["startTime"] == "2026-01-05T09:00:00+00:00"
    assert run["endTime"] == "2026-01-05T11:00:00+00:00"
    mentions = set(ids(crate.root_dataset["mentions"]))
    assert {a.id for a in crate.get_by_type("CreateAction")} | {organize.id} <= mentions
    assert crate.mainEntity["buildInstructions"].id == "environment.lock.txt"


def test_rule_output_patterns_tie_each_job_to_the_rule_that_ran_it(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    # as workflow/rules/archive.smk passes them: Snakemake's regex of each rule's outputs
    patterns = {"images_figures": [r"results/figures/(?P<dataset>mnist|frey)_samples\.png$"],
                "images_interpolation": [r"results/figures/(?P<dataset>mnist)_interpolation\.png$"],
                "images_metrics": [r"results/(?P<dataset>.+)/metrics\.csv$"]}
    build(results, out, rule_outputs=patterns)
    crate = open_crate(out, tmp_path)
    samples = action_for(crate, "results/figures/mnist_samples.png")
    assert samples["instrument"].id == "workflow/rules/images.smk#images_figures"
    assert samples["instrument"]["mainEntity"].id == "workflow/scripts/images_figures.py"
    assert action_for(crate, "results/mnist/metrics.csv")["instrument"].id.endswith("#images_metrics")


def test_verify_names_altered_missing_and_unexpected_files(results, tmp_path, capsys):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    assert main(["archive", "verify", str(out)]) == 0
    assert "OK" in capsys.readouterr().out

    altered = tmp_path / "altered.tar.gz"
    rewrite(out, altered, lambda n, d: (d.replace(b"1.0", b"9.9")
                                        if n == "results/tables/table1.csv" else d))
    report = verify_archive(altered)
    assert report.altered == ["results/tables/table1.csv"]
    assert not report.missing and not report.unexpected and not report.ok
    assert main(["archive", "verify", str(altered)]) == 1
    assert "altered:    results/tables/table1.csv" in capsys.readouterr().out

    # same size, one byte flipped inside a binary chunk
    flipped = tmp_path / "flipped.tar.gz"
    chunk = "results/mnist/eae/ensemble.zarr/latent/c/0/0/0"
    rewrite(out, flipped, lambda n, d: d[:100] + bytes([d[100] ^ 1]) + d[101:] if n == chunk else d)
    assert verify_archive(flipped).altered == [chunk]

    missing = tmp_path / "missing.tar.gz"
    rewrite(out, missing, lambda n, d: None if n == "results/provenance/tables/table1.csv.json"
            else d)
    report = verify_archive(missing)
    assert report.missing == ["results/provenance/tables/table1.csv.json"] and not report.altered
    assert main(["archive", "verify", str(missing)]) == 1
    assert "missing:    results/provenance" in capsys.readouterr().out

    extra = tmp_path / "extra.tar.gz"
    rewrite(out, extra, lambda n, d: [("results/sneaked_in.csv", b"x")] if n == "__add__" else d)
    report = verify_archive(extra)
    assert report.unexpected == ["results/sneaked_in.csv"] and not report.ok


def test_verify_reads_the_sha256s_from_the_crate_metadata(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    build(results, out)

    def edit_metadata(edit):
        def change(name, data):
            if name != "ro-crate-metadata.json":
                return data if name != "__add__" else None
            metadata = json.loads(data)
            for entity in metadata["@graph"]:
                edit(entity)
            return json.dumps(metadata).encode()
        return change

    def wrong_sha(entity):
        if entity["@id"] == "Snakefile":
            entity["sha256"] = "0" * 64

    def drop_entity(entity):
        if entity["@id"] == "results/empty.txt":
            entity["@type"] = "CreativeWork"  # no longer a File of the crate

    edited = tmp_path / "edited.tar.gz"
    rewrite(out, edited, edit_metadata(wrong_sha))
    assert verify_archive(edited).altered == ["Snakefile"]
    rewrite(out, edited, edit_metadata(drop_entity))
    assert verify_archive(edited).unexpected == ["results/empty.txt"]


def test_extracted_or_repacked_archive_verifies_too(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    folder = extract(out, tmp_path / "extracted")
    assert verify_archive(folder).ok
    # `tar czf` of the folder adds directory entries: they hold no content, still OK
    repacked = tmp_path / "repacked.tar.gz"
    with tarfile.open(repacked, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    assert verify_archive(repacked).ok, verify_archive(repacked).format()
    # ... and `tar czf x.tar.gz .` names every member ./...
    dotted = tmp_path / "dotted.tar.gz"
    with tarfile.open(dotted, "w:gz") as tar:
        tar.add(folder, arcname=".")
    assert verify_archive(dotted).ok, verify_archive(dotted).format()

    (folder / "results" / "tables" / "table1.csv").write_text("model,nll\neae,0.5\n")
    (folder / "results" / "figures" / "validation_sampler.png").unlink()
    (folder / "results" / "new.txt").write_text("x")
    report = verify_archive(folder)
    assert report.altered == ["results/tables/table1.csv"]
    assert report.missing == ["results/figures/validation_sampler.png"]
    assert report.unexpected == ["results/new.txt"]
    assert main(["archive", "verify", str(folder)]) == 1


def test_damaged_or_metadataless_archive_is_an_error_not_a_crash(results, tmp_path, capsys):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    report = verify_archive(truncated)
    assert report.error and not report.ok
    assert main(["archive", "verify", str(truncated)]) == 1
    assert "ERROR" in capsys.readouterr().out

    no_metadata = tmp_path / "no_metadata.tar.gz"
    rewrite(out, no_metadata, lambda n, d: None if n == "ro-crate-metadata.json" else d)
    assert "ro-crate-metadata.json" in verify_archive(no_metadata).error
    not_a_crate = tmp_path / "not_a_crate.tar.gz"
    rewrite(out, not_a_crate, lambda n, d: b'{"files": {}}' if n == "ro-crate-metadata.json"
            else d)
    assert "@graph" in verify_archive(not_a_crate).error
    assert verify_archive(tmp_path / "absent.tar.gz").error == "archive not found"


def test_bad_input_raises_and_leaves_no_partial_archive(results, tmp_path):
    root, _ = results
    (root / "tables" / "dangling.csv").symlink_to(tmp_path / "nowhere.csv")
    out = tmp_path / "out" / "a.tar.gz"
    with pytest.raises(ArchiveError, match="dangling.csv"):
        build(results, out)
    assert not out.exists() and (not out.parent.exists() or not any(out.parent.iterdir()))
    with pytest.raises(ArchiveError, match="results directory not found"):
        build_archive(tmp_path / "nope", out, CONFIG, environment="")
    (root / "tables" / "dangling.csv").unlink()
    with pytest.raises(ArchiveError, match="no Snakefile in"):
        build(results, out, workflow_dir=tmp_path)
    assert not out.exists()


def test_failure_while_writing_removes_the_temporary_file(results, tmp_path, monkeypatch):
    out = tmp_path / "a.tar.gz"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(archive, "_add_file", broken)
    with pytest.raises(OSError, match="disk full"):
        build(results, out)
    assert list(tmp_path.glob("*.tar.gz*")) == [] and list(tmp_path.glob(".a.tar.gz*")) == []


def test_unreadable_record_is_archived_but_makes_no_job(results, tmp_path, caplog):
    root, _ = results
    (root / "provenance" / "tables" / "table1.md.json").write_text("{not json")
    out = tmp_path / "a.tar.gz"
    assert build(results, out)["n_jobs"] == 5  # table1.csv still carries the table1 record
    assert "table1.md.json: not a readable provenance record" in caplog.text
    assert verify_archive(out).ok


def test_exclude_and_an_archive_written_inside_results(results):
    root, files = results
    out = root / "bundle.tar.gz"  # inside results/, outside archive/: still never archived
    summary = build(results, out, exclude=("checkpoints", "archive", "logs"))
    names = set(summary["files"])
    assert "results/bundle.tar.gz" not in names
    assert "results/logs/validation.log" not in names
    assert "results/tables/table1.csv" in names
    assert verify_archive(out).ok


def test_environment_lock_is_pip_freeze_or_metadata(monkeypatch):
    lock = environment_lock()
    assert re.search(r"^numpy==\d", lock, re.M) and re.search(r"^snakemake==\d", lock, re.M)

    def no_pip(*args, **kwargs):
        return subprocess.CompletedProcess(args, 1, "", "No module named pip")

    monkeypatch.setattr(archive.subprocess, "run", no_pip)
    lock = environment_lock()
    assert "importlib.metadata" in lock and re.search(r"^numpy==\d", lock, re.M)


def test_cli_build_validates_the_config_and_writes_a_verifiable_archive(results, tmp_path,
                                                                        repo_root, capsys):
    root, _ = results
    out = tmp_path / "cli.tar.gz"
    assert main(["archive", "build", "--results", str(root), "-o", str(out),
                 "--workflow", str(repo_root),
                 "--config", str(repo_root / "config" / "config.yaml"),
                 str(repo_root / "config" / "test.yaml")]) == 0
    assert "5 jobs" in capsys.readouterr().out
    assert verify_archive(out).ok
    with tarfile.open(out, "r:gz") as tar:
        config = yaml.safe_load(tar.extractfile("config.resolved.yaml").read())
    # defaults filled in by validation, overrides of test.yaml applied
    tiny = yaml.safe_load((repo_root / "config" / "test.yaml").read_text())
    assert config["validation"]["n_steps"] == tiny["validation"]["n_steps"] != 20_000
    assert "seed" in json.dumps(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("mnist:\n  no_such_key: 1\n")
    assert main(["archive", "build", "--results", str(root), "-o", str(tmp_path / "x.tar.gz"),
                 "--config", str(bad)]) == 1
    assert "no_such_key" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()
    assert main(["archive", "build", "--results", str(root), "-o", str(tmp_path / "x.tar.gz"),
                 "--workflow", str(tmp_path)]) == 1
    assert "no Snakefile" in capsys.readouterr().err


def _snakefile_with_archive(repo_root, tmp_path):
    """The real Snakefile once it includes archive.smk; until then a copy that does."""
    text = (repo_root / "Snakefile").read_text()
    if "rules/archive.smk" in text:
        return repo_root / "Snakefile"
    text = re.sub(r'include: "(workflow/rules/[^"]+)"',
                  lambda m: f'include: "{repo_root / m.group(1)}"', text)
    text = text.replace('include: "' + str(repo_root / "workflow/rules/common.smk") + '"',
                        'include: "' + str(repo_root / "workflow/rules/common.smk") + '"\n'
                        'include: "' + str(repo_root / "workflow/rules/archive.smk") + '"')
    path = tmp_path / "Snakefile"
    path.write_text(text)
    return path


def test_archive_rule_runs_in_the_workflow(repo_root, tmp_path):
    """`snakemake archive` on a config whose only target is the sampler check (its
    outputs made up here), then verify: the rule, script and params fit together, and
    the rule's output patterns tie the sampler's job to its rule."""
    snakefile = _snakefile_with_archive(repo_root, tmp_path)
    work = tmp_path / "wf"
    work.mkdir()
    (work / "config").symlink_to(repo_root / "config")
    (work / "only_validation.yaml").write_text(
        "mnist: {enabled: false}\nfrey: {enabled: false}\nrd: {enabled: false}\n"
        "faces: {enabled: false}\nsweep: {enabled: false}\n")
    made_up = {"validation/sampler.csv": "a,b\n1,2\n",
               "figures/validation_sampler.png": "png",
               "checkpoints/x/state.npz": "scratch"}
    for out in JOB_OUTPUTS["sampler_check"]:
        made_up[f"provenance/{out}.json"] = _sidecar("sampler_check", out).decode()
    for rel, data in made_up.items():
        (work / "results" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "results" / rel).write_text(data)
    result = run_snakemake(work, "--cores", "1", "--workflow-profile", "none", "archive",
                           configfiles=[work / "only_validation.yaml"], snakefile=snakefile,
                           check=False)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", log, re.M))
    # only the archive and the report extras it holds ran: every other target was up to date
    assert ran == {"archive", "report_config", "report_provenance"}, ran
    out = work / "results" / "archive" / "eae-results.tar.gz"
    report = verify_archive(out)
    assert report.ok, report.format()
    with tarfile.open(out, "r:gz") as tar:
        names = set(tar.getnames())
        config = yaml.safe_load(tar.extractfile("config.resolved.yaml").read())
        lock = tar.extractfile("environment.lock.txt").read().decode()
    assert {"results/validation/sampler.csv", "results/figures/validation_sampler.png",
            "Snakefile", "workflow/rules/archive.smk"} <= names
    assert not any("checkpoints" in n or "archive.log" in n for n in names)
    assert config["mnist"]["enabled"] is False and "validation" in config
    assert re.search(r"^snakemake==", lock, re.M)
    assert "archived" in (work / "results" / "logs" / "archive.log").read_text()
    crate = open_crate(out, tmp_path)
    action = action_for(crate, "results/figures/validation_sampler.png")
    assert action["instrument"].id == "workflow/rules/sampler_check.smk#sampler_check"
    assert PROFILES <= set(ids(crate.root_dataset["conformsTo"]))

"""Results archive: manifest of sha256s, resolved config, environment lock, and a verify
that names every missing, altered or unexpected file."""

import hashlib
import io
import json
import re
import subprocess
import sys
import tarfile

import pytest
import yaml

from eae import archive
from eae.archive import (ArchiveError, build_archive, environment_lock, verify_archive)
from eae.cli import main

CONFIG = {"mnist": {"enabled": True, "eae": {"train": {"decoder_updates": 3}}},
          "validation": {"n_steps": 4000}}


@pytest.fixture
def results(tmp_path):
    """A small fake results tree, with the parts the archive must leave out."""
    root = tmp_path / "results"
    files = {
        "tables/table1.csv": b"model,nll\neae,1.0\n",
        "provenance/tables/table1.csv.json": b'{"stage": "table1"}',
        "mnist/eae/ensemble.zarr/zarr.json": b'{"attributes": {"provenance": "{}"}}',
        "mnist/eae/ensemble.zarr/latent/c/0/0/0": bytes(range(256)) * 50,
        "figures/validation_sampler.png": b"\x89PNG fake",
        "logs/validation.log": b"done\n",
        "empty.txt": b"",
    }
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


def test_archive_holds_every_result_with_its_sha256(results, tmp_path):
    root, files = results
    out = root / "archive" / "eae-results.tar.gz"
    manifest = build(results, out)
    expected = {"results/" + rel for rel in files} | {"config.resolved.yaml",
                                                      "environment.lock.txt"}
    assert set(manifest["files"]) == expected  # no checkpoints, no archive/ folder
    with tarfile.open(out, "r:gz") as tar:
        names = tar.getnames()
        assert names[-1] == "MANIFEST.json"
        stored = json.loads(tar.extractfile("MANIFEST.json").read())
        for rel, data in files.items():
            entry = stored["files"]["results/" + rel]
            assert entry == {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
            assert tar.extractfile("results/" + rel).read() == data
        assert yaml.safe_load(tar.extractfile("config.resolved.yaml").read()) == CONFIG
        assert tar.extractfile("environment.lock.txt").read() == b"numpy==2.4.0\n"
    assert not any(n.startswith("results/checkpoints") or n.startswith("results/archive")
                   for n in names)
    assert not list(out.parent.glob(".*tmp*"))  # atomic write left no temporary file
    report = verify_archive(out)
    assert report.ok and report.checked == len(expected), report.format()


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


def test_extracted_or_repacked_archive_verifies_too(results, tmp_path):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    folder = tmp_path / "extracted"
    with tarfile.open(out, "r:gz") as tar:
        tar.extractall(folder, filter="data")
    assert verify_archive(folder).ok
    # `tar czf` of the folder adds directory entries: they hold no content, still OK
    repacked = tmp_path / "repacked.tar.gz"
    with tarfile.open(repacked, "w:gz") as tar:
        for item in sorted(folder.iterdir()):
            tar.add(item, arcname=item.name)
    assert verify_archive(repacked).ok, verify_archive(repacked).format()

    (folder / "results" / "tables" / "table1.csv").write_text("model,nll\neae,0.5\n")
    (folder / "results" / "figures" / "validation_sampler.png").unlink()
    (folder / "results" / "new.txt").write_text("x")
    report = verify_archive(folder)
    assert report.altered == ["results/tables/table1.csv"]
    assert report.missing == ["results/figures/validation_sampler.png"]
    assert report.unexpected == ["results/new.txt"]
    assert main(["archive", "verify", str(folder)]) == 1


def test_damaged_or_manifestless_archive_is_an_error_not_a_crash(results, tmp_path, capsys):
    out = tmp_path / "a.tar.gz"
    build(results, out)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    report = verify_archive(truncated)
    assert report.error and not report.ok
    assert main(["archive", "verify", str(truncated)]) == 1
    assert "ERROR" in capsys.readouterr().out

    no_manifest = tmp_path / "no_manifest.tar.gz"
    rewrite(out, no_manifest, lambda n, d: None if n == "MANIFEST.json" else d)
    assert "MANIFEST.json" in verify_archive(no_manifest).error
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


def test_failure_while_writing_removes_the_temporary_file(results, tmp_path, monkeypatch):
    out = tmp_path / "a.tar.gz"

    def broken(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(archive, "_add_file", broken)
    with pytest.raises(OSError, match="disk full"):
        build(results, out)
    assert list(tmp_path.glob("*.tar.gz*")) == [] and list(tmp_path.glob(".a.tar.gz*")) == []


def test_exclude_and_an_archive_written_inside_results(results):
    root, files = results
    out = root / "bundle.tar.gz"  # inside results/, outside archive/: still never archived
    manifest = build(results, out, exclude=("checkpoints", "archive", "logs"))
    names = set(manifest["files"])
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
                 "--config", str(repo_root / "config" / "config.yaml"),
                 str(repo_root / "config" / "test.yaml")]) == 0
    assert verify_archive(out).ok
    with tarfile.open(out, "r:gz") as tar:
        config = yaml.safe_load(tar.extractfile("config.resolved.yaml").read())
    # defaults filled in by validation, overrides of test.yaml applied
    assert config["validation"]["n_steps"] == 4000 and "seed" in json.dumps(config)
    bad = tmp_path / "bad.yaml"
    bad.write_text("mnist:\n  no_such_key: 1\n")
    assert main(["archive", "build", "--results", str(root), "-o", str(tmp_path / "x.tar.gz"),
                 "--config", str(bad)]) == 1
    assert "no_such_key" in capsys.readouterr().err
    assert not (tmp_path / "x.tar.gz").exists()


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
    outputs made up here), then verify: the rule, script and params fit together."""
    snakefile = _snakefile_with_archive(repo_root, tmp_path)
    work = tmp_path / "wf"
    work.mkdir()
    (work / "config").symlink_to(repo_root / "config")
    (work / "only_validation.yaml").write_text(
        "mnist: {enabled: false}\nfrey: {enabled: false}\nrd: {enabled: false}\n"
        "faces: {enabled: false}\nsweep: {enabled: false}\n")
    for rel, data in {"validation/sampler.csv": "a,b\n1,2\n",
                      "figures/validation_sampler.png": "png",
                      "checkpoints/x/state.npz": "scratch"}.items():
        (work / "results" / rel).parent.mkdir(parents=True, exist_ok=True)
        (work / "results" / rel).write_text(data)
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "-d", str(work),
           "--configfile", str(work / "only_validation.yaml"), "--cores", "1",
           "--workflow-profile", "none", "archive"]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=work)
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-6000:]
    ran = set(re.findall(r"^(?:local)?rule (\w+):", log, re.M))
    # only the archive and the report extras it holds ran: every other target was up to date
    assert ran == {"archive", "resolved_config", "provenance_records"}, ran
    out = work / "results" / "archive" / "eae-results.tar.gz"
    report = verify_archive(out)
    assert report.ok, report.format()
    with tarfile.open(out, "r:gz") as tar:
        names = set(tar.getnames())
        config = yaml.safe_load(tar.extractfile("config.resolved.yaml").read())
        lock = tar.extractfile("environment.lock.txt").read().decode()
    assert {"results/validation/sampler.csv", "results/figures/validation_sampler.png"} <= names
    assert not any("checkpoints" in n or "archive.log" in n for n in names)
    assert config["mnist"]["enabled"] is False and "validation" in config
    assert re.search(r"^snakemake==", lock, re.M)
    assert "archived" in (work / "results" / "logs" / "archive.log").read_text()

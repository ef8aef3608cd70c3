"""The wheel carries the config schemas: `eae check-config` and `eae config-docs` work
from an installed package, with no source tree around."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

SCHEMAS = sorted(p.name for p in (Path(__file__).resolve().parents[1] / "eae" / "schemas").glob("*.yaml"))


@pytest.fixture(scope="module")
def wheel(repo_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--quiet", "-w", str(out), str(repo_root)],
                   check=True, capture_output=True, text=True, timeout=600)
    (path,) = out.glob("eae-*.whl")
    return path


def test_wheel_holds_every_schema(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert len(SCHEMAS) > 10
    missing = [name for name in SCHEMAS if f"eae/schemas/{name}" not in names]
    assert missing == []


def test_installed_wheel_checks_config_and_writes_docs_outside_the_checkout(wheel, repo_root,
                                                                           tmp_path):
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # a pure-Python wheel: unpacking installs it
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "good.yaml").write_text("mnist:\n  eae:\n    sampler:\n      temperature: 1.0e-7\n")
    (elsewhere / "bad.yaml").write_text("mnist:\n  eae:\n    sampler:\n      temprature: 1.0e-7\n")
    env = {**os.environ, "PYTHONPATH": str(site)}

    def eae(*args):
        code = ("import sys, eae, eae.cli\n"
                f"assert eae.__file__.startswith({str(site)!r}), eae.__file__\n"
                "sys.exit(eae.cli.main(sys.argv[1:]))")
        return subprocess.run([sys.executable, "-c", code, *args], cwd=elsewhere, env=env,
                              capture_output=True, text=True, timeout=120)

    good = eae("check-config", "good.yaml")
    assert good.returncode == 0, good.stderr
    bad = eae("check-config", "bad.yaml")
    assert bad.returncode == 1 and "mnist.eae.sampler.temprature" in bad.stderr, bad.stderr
    docs = eae("config-docs")
    assert docs.returncode == 0, docs.stderr
    assert docs.stdout == (repo_root / "config" / "README.md").read_text()

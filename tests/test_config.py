"""Config validation: defaults, unknown keys, wrong types and ranges name the key."""

import subprocess
import sys

import pytest
import yaml

from eae.config import ConfigError, load_schema, validate_config


def test_default_config_validates_and_fills_every_section(repo_root):
    config = yaml.safe_load((repo_root / "config" / "config.yaml").read_text())
    filled = validate_config(config)
    assert filled["mnist"]["eae"]["sampler"]["temperature"] == pytest.approx(1e-8)
    # keys the file omits come from the schema
    assert filled["mnist"]["eae"]["sampler"]["tau"] == 20.0
    assert filled["validation"]["tolerance"] == 0.05


@pytest.mark.parametrize("name", ["paper.yaml", "test.yaml"])
def test_shipped_configs_validate(repo_root, name):
    path = repo_root / "config" / name
    if not path.exists():
        pytest.skip(f"{name} not shipped")
    validate_config(yaml.safe_load(path.read_text()))


@pytest.mark.parametrize(
    "config, key",
    [
        ({"validation": {"temperature": -1.0}}, "validation.temperature"),
        ({"mnist": {"eae": {"sampler": {"tempreature": 1.0}}}}, "mnist.eae.sampler.tempreature"),
        ({"mnist": {"vae": {"epochs": "ten"}}}, "mnist.vae.epochs"),
        ({"mnist": {"eae": {"sampler": {"sy_order": 2}}}}, "mnist.eae.sampler.sy_order"),
        ({"mnist": {"data": {"source": "tfds"}}}, "mnist.data.source"),
        ({"bogus": 1}, "bogus"),
    ],
)
def test_bad_values_name_their_key(config, key):
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        validate_config(config)


def test_every_schema_key_has_a_description():
    missing = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        for key, sub in node.get("properties", {}).items():
            if "description" not in sub:
                missing.append(f"{path}{key}")
            walk(sub, f"{path}{key}.")

    walk(load_schema(), "")
    assert missing == []


def test_snakemake_refuses_a_bad_config_before_any_job(repo_root, tmp_path):
    (tmp_path / "config").symlink_to(repo_root / "config")
    bad = tmp_path / "bad.yaml"
    bad.write_text("mnist:\n  eae:\n    sampler:\n      temperature: -0.5\n")
    result = subprocess.run(
        [sys.executable, "-m", "snakemake", "-s", str(repo_root / "Snakefile"), "-d", str(tmp_path), "-n",
         "--configfile", str(bad)],
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "mnist.eae.sampler.temperature" in result.stdout + result.stderr
    assert not (tmp_path / "results").exists()


def test_config_readme_is_in_sync_with_the_schema(repo_root):
    from eae.config import schema_markdown

    assert (repo_root / "config" / "README.md").read_text() == schema_markdown(), (
        "config/README.md is stale: run `eae config-docs -o config/README.md`")


def test_check_config_cli(repo_root, capsys):
    from eae.cli import main

    assert main(["check-config", str(repo_root / "config" / "config.yaml")]) == 0


def test_every_config_object_rejects_unknown_keys():
    loose = []

    def walk(node, path):
        if not isinstance(node, dict):
            return
        if node.get("type") == "object" and "properties" in node:
            if node.get("additionalProperties", True) is not False:
                loose.append(path or "<root>")
            for key, sub in node["properties"].items():
                walk(sub, f"{path}.{key}" if path else key)

    walk(load_schema(), "")
    assert loose == []

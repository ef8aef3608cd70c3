"""The workflow stays lint-clean and formatted."""

import subprocess
import sys


def test_snakemake_lint_is_clean(repo_root):
    result = subprocess.run([sys.executable, "-m", "snakemake", "--lint"], cwd=repo_root,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Congratulations" in result.stdout + result.stderr, result.stdout + result.stderr


def test_snakefmt_check_passes(repo_root):
    result = subprocess.run([sys.executable, "-m", "snakefmt", "--check", "Snakefile",
                             "workflow/rules"], cwd=repo_root, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr

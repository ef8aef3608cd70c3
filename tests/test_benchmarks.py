"""Every benchmark still runs: each ``benchmarks/*.py`` with ``--quick``, in a subprocess.

A quick run goes through the same code as the full one at toy sizes, so a benchmark
broken by an API change fails here rather than when someone next wants its figures.
Quick figures are not measurements: only that each expected ratio is printed, as a
finite positive number labelled as quick, is checked, never a speed or memory target.
"""

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
# globbed (helper modules start with "_"), so a new benchmark is tested too (and fails
# until it has --quick and is listed below)
BENCHMARKS = sorted(p for p in (REPO / "benchmarks").glob("*.py") if not p.name.startswith("_"))
QUICK_LABEL = "[--quick: not a measurement]"
NUMBER = r"(\S+?)"  # parsed by float() below: "nan" or "inf" must fail as such, not as no match

#: per benchmark, the ratio lines it prints; each group is one ratio
RATIO_LINES = {
    "api_step_time.py": [rf"^ratio api/workflow = {NUMBER}\s"],
    "chains.py": [rf"^ratio together/separate = {NUMBER}\s"],
    "ensemble_memory.py": [rf"^peak memory ratio {phase} +M=\d+/M=\d+ = {NUMBER}\s"
                           for phase in ("sampling", "reading")],
    "sampler_vs_adam.py": [rf"^ratio {loop}/adam += {NUMBER}\s" for loop in ("simmering", "eae")]
    + [rf"^ratio adaptive \({what}\)/nhc eae step = {NUMBER}\s"
       for what in ("no Langevin noise", r"langevin_every \d+")],
    "temperature_cost.py": [rf"^ratio tconf b=16/round = {NUMBER}\s", rf"^ratio tconf b=4/round = {NUMBER}\s"],
    "rd_simulate.py": [rf"^speed ratio rk45 \S+ {variant} / ETDRK4: wall {NUMBER}x, cpu {NUMBER}x;"
                       for variant in ("dense", "land")],
}


def test_every_benchmark_is_found():
    assert {p.name for p in BENCHMARKS} >= set(RATIO_LINES), "a listed benchmark is missing"


@pytest.mark.parametrize("script", BENCHMARKS, ids=lambda p: p.name)
def test_benchmark_quick_run_prints_its_ratios(script):
    assert script.name in RATIO_LINES, (
        f"benchmarks/{script.name} is new: give it --quick and list its ratio lines in RATIO_LINES")
    result = subprocess.run([sys.executable, str(script), "--quick"], cwd=REPO,
                            env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
                            capture_output=True, text=True, timeout=600)
    report = f"stdout:\n{result.stdout}\nstderr (end):\n{result.stderr[-3000:]}"
    assert result.returncode == 0, report
    lines = result.stdout.splitlines()
    for pattern in RATIO_LINES[script.name]:
        matches = [m for m in map(re.compile(pattern).search, lines) if m]
        assert len(matches) == 1, f"expected one line matching {pattern!r}\n{report}"
        line = matches[0].string
        assert QUICK_LABEL in line, f"quick figures must be labelled as such: {line!r}"
        for text in matches[0].groups():
            value = float(text)
            assert math.isfinite(value) and value > 0, f"ratio {text} in {line!r}"

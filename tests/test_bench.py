"""The benchmark scripts still run (quick mode; their figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


@pytest.mark.parametrize(
    "script",
    ["hook_overhead", "ingest", "output_ingest", "log_query", "diff", "replay", "snapshot"],
)
def test_benchmark_runs_in_quick_mode(script):
    proc = subprocess.run(
        [sys.executable, str(BENCH / f"{script}.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: " in proc.stdout
    assert "Traceback" not in proc.stderr


def test_guard_benchmark_runs_in_quick_mode():
    test_benchmark_runs_in_quick_mode("guard")

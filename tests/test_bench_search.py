"""bench/search.py still runs (a small store; its figures are not checked here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent / "bench" / "search.py"


def test_the_search_benchmark_runs_on_a_small_store(tmp_path):
    argv = [sys.executable, str(BENCH), "--quick", "--steps", "20000", "--output-mb", "10",
            "--cache", str(tmp_path)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: " in proc.stdout and "Traceback" not in proc.stderr
    assert "built in" in proc.stdout
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)  # (from the cache)
    assert again.returncode == 0 and "built in" not in again.stdout, again.stdout + again.stderr

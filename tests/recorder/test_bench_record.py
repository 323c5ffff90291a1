"""bench/record.py still runs (quick mode; its figures are not checked here)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "record.py"


@pytest.mark.skipif(
    not (shutil.which("tmux") and shutil.which("script")), reason="needs tmux and script"
)
def test_the_record_benchmark_runs_in_quick_mode():
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "result: " in proc.stdout and "Traceback" not in proc.stderr

"""bench/remote.py still runs (quick mode; its figures are not checked here)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent.parent / "bench" / "remote.py"


@pytest.mark.slow
def test_the_remote_benchmark_runs_in_quick_mode():
    if os.geteuid() != 0 or not os.path.exists("/usr/sbin/sshd"):
        pytest.skip("needs root and OpenSSH's sshd (scripts/test installs openssh-server)")
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--quick"], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "x ssh H true" in proc.stdout and "result: " in proc.stdout
    assert "Traceback" not in proc.stderr

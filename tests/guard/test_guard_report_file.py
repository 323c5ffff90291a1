"""rw guard --report FILE: written as a new file, mode 0600, whatever was at
FILE (a symlink is replaced, never followed; a file's mode is not kept).
The real rw guard."""

from __future__ import annotations

import json
import os
import stat
import subprocess

from ..conftest import RW, write_config


def guard_report(site, report) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RW, "guard", "--paths", str(site), "--report", str(report), "--", "true"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip


def test_the_report_replaces_a_symlink_and_is_private(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    site = tmp_path / "site"
    site.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("someone else's\n")
    victim.chmod(0o644)
    report = tmp_path / "report.json"
    report.symlink_to(victim)
    proc = guard_report(site, report)
    assert proc.returncode == 0, proc.stderr
    assert victim.read_text() == "someone else's\n"
    st = os.lstat(report)
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
    assert json.loads(report.read_text())["result"] == "passed"

    report.chmod(0o644)  # an existing file's mode is not kept either
    proc = guard_report(site, report)
    assert proc.returncode == 0, proc.stderr
    assert stat.S_IMODE(os.lstat(report).st_mode) == 0o600
    assert sorted(os.listdir(tmp_path)) == ["report.json", "rwhome", "site", "victim"]

"""A guarded command whose process keeps moving: it leaves its session and
forks a new pid and exits, over and over, faster than /proc is read. Real
rw guard, real processes; the walker ends itself after WALK_FOR seconds
(its fence), and the test kills what is left of it by pid."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..conftest import RW, rw_json, write_config
from .test_guard import _cgroups_usable

WALK_FOR = 20.0  # seconds: no walker lives longer, whatever rw does

WALKER = """
import os, sys, time
out, token, until = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
if os.fork():
    os._exit(0)
os.setsid()
if sys.argv[4] == "escape":  # leave rw's cgroup for the one above it (root may)
    own = open("/proc/self/cgroup").read().split("0::", 1)[1].split()[0]
    above = "/sys/fs/cgroup" + own.rsplit("/", 1)[0]
    with open(above + "/cgroup.procs", "w") as fh:
        fh.write(str(os.getpid()))
n = 0
while time.monotonic() < until:
    n += 1
    with open(out, "a") as fh:
        fh.write(f"{os.getpid()} {n}\\n")
    if os.fork():
        os._exit(0)
"""


def walkers(token: str) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if token.encode() in Path(f"/proc/{name}/cmdline").read_bytes():
                    out.append(int(name))
            except OSError:
                pass
    return out


@pytest.mark.parametrize(
    "cgroup,escape",
    [(False, "stay"), (True, "stay"), (True, "escape")],
    ids=["scan", "cgroup", "cgroup-escaped"],
)
def test_a_process_that_keeps_forking_new_pids_is_ended_before_the_rollback(
    rw_home, tmp_path, cgroup, escape
):
    write_config(rw_home, f"[daemon]\nautostart = false\n[guard]\ncgroup = {str(cgroup).lower()}\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "data").write_text("as checkpointed\n")
    walk = tmp_path / "walk.py"
    walk.write_text(WALKER)
    out = tmp_path / "walk.out"
    token = f"rwwalker{os.getpid()}x{time.monotonic_ns()}"
    command = (
        f"echo changed > {site}/data; {sys.executable} {walk} {out} {token} {WALK_FOR} {escape} & "
        f"while [ ! -s {out} ]; do sleep 0.01; done; sleep 0.3; echo 'ERROR: stop'; sleep 30"
    )
    try:
        for _round in range(3):
            out.write_text("")
            report = tmp_path / "r.json"
            proc = subprocess.run(
                [RW, "guard", "--paths", str(site), "--report", str(report),
                 "--", "sh", "-c", command],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            size = out.stat().st_size
            time.sleep(0.5)
            assert out.stat().st_size == size, "the walker kept running after rw guard ended"
            assert walkers(token) == []
            assert proc.returncode == 1, proc.stderr
            assert (site / "data").read_text() == "as checkpointed\n", proc.stderr
            doc = json.loads(report.read_text())
            assert doc["survivors"] == [], doc
            if cgroup and _cgroups_usable():
                assert doc["containment"] == "cgroup"
    finally:
        for pid in walkers(token):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_no_rollback_starts_while_a_process_of_the_command_lives(rw_home, tmp_path):
    """The restore could be undone as it is made: it waits, and says so."""
    from rewind_daemon.cli.checkpoint import open_checkpoints
    from rewind_daemon.guard.runner import ROLLBACK_FAILED, roll_back

    write_config(rw_home, "[daemon]\nautostart = false\n")
    site = tmp_path / "site"
    site.mkdir()
    (site / "data").write_text("as checkpointed\n")
    cid = rw_json("checkpoint", "create", "--paths", str(site))["id"]
    (site / "data").write_text("changed\n")
    cps = open_checkpoints()
    try:
        rollback = roll_back(cps, cid, ["pid 4242: sleep 300"])
    finally:
        cps.store.close()
    assert rollback.status == ROLLBACK_FAILED
    assert rollback.remaining[0].startswith("not rolled back: the command's processes")
    assert f"rw checkpoint restore {cid}" in rollback.remaining[0]
    assert rollback.remaining[1:] == ["still running: pid 4242: sleep 300"]
    assert (site / "data").read_text() == "changed\n"

"""`rw daemon stop` holds: open hooked shells and other commands do not start the
daemon again until `rw daemon start`; autostart resumes then."""

from __future__ import annotations

import json
import time

import pytest

from ..conftest import daemon_pid, kill_daemon, rw, steps_of, wait_for

SHELLS = ["bash", "zsh"]
# The hooks look for the daemon every 5 seconds (at a prompt).
LIVENESS = 5.0


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


def type_for(sh, seconds: float, word: str) -> int:
    """Type commands for `seconds` (each prompt may run the liveness check)."""
    deadline = time.monotonic() + seconds
    n = 0
    while time.monotonic() < deadline:
        n += 1
        sh.run(f"echo {word}-{n}")
        time.sleep(0.25)
    return n


def running() -> bool:
    return rw("daemon", "status", check=False).returncode == 0


def test_an_explicit_stop_holds_until_daemon_start(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo before")
    sid = sh.session_id()
    out = rw("daemon", "stop").stdout
    assert "stays stopped until: rw daemon start" in out
    typed = type_for(sh, LIVENESS + 2, "stopped")
    time.sleep(1)  # time for a daemon the hooks would have started to come up
    assert not running()
    status = rw("daemon", "status", check=False)
    assert status.returncode == 1 and "stopped on purpose" in status.stdout
    assert json.loads(rw("daemon", "status", "--json", check=False).stdout)["stopped_on_purpose"]
    # Commands that read the store do not start it either: they say so, and show what is stored.
    log = rw("log", sid)
    assert "the daemon is not running" in log.stderr
    assert not running()
    # Those that need it say why it is not there, in one line.
    branch = rw("branch", sid, "1", check=False)
    assert branch.returncode == 1 and "Traceback" not in branch.stderr
    assert "stopped on purpose (rw daemon stop); start it with: rw daemon start" in branch.stderr
    doctor = {c["check"]: c for c in json.loads(rw("doctor", "--json", check=False).stdout)}
    assert doctor["daemon"]["ok"] is False
    assert "stopped on purpose (rw daemon start)" in doctor["daemon"]["detail"]
    assert not running()

    # `rw daemon start` ends it: what was typed meanwhile is stored, nothing lost.
    assert "started" in rw("daemon", "start").stdout
    cmds = [s["command"] for s in steps_of(sid)]
    assert cmds[0] == "echo before"
    assert [c for c in cmds if c.startswith("echo stopped-")] == [
        f"echo stopped-{i}" for i in range(1, typed + 1)
    ]
    doctor = {c["check"]: c for c in json.loads(rw("doctor", "--json", check=False).stdout)}
    assert doctor["daemon"]["ok"] is True

    # And autostart is back: a daemon that dies (not stopped) is started again.
    kill_daemon(daemon)
    assert not running()
    type_for(sh, LIVENESS + 1, "after")
    wait_for(lambda: daemon_pid(daemon) is not None and running(), timeout=15)


def test_stop_when_not_running_still_holds_and_start_clears_it(rw_home, shells, kind):
    out = rw("daemon", "stop").stdout
    assert "was not running; it stays stopped until: rw daemon start" in out
    sh = shells(kind)  # its hooks would start the daemon at once
    type_for(sh, LIVENESS + 1, "cold")
    time.sleep(1)
    assert not running()
    rw("daemon", "start")
    assert running()
    assert not list(rw_home.glob("data/stopped-*"))


def test_a_stop_that_cannot_be_noted_is_one_line(daemon, tmp_path):
    """A symlink where the stop is noted (planted, or left by anything) is not
    followed: one line, exit 1, the daemon left running."""
    import os

    target = tmp_path / "elsewhere"
    note = daemon / "data" / f"stopped-{os.uname().nodename.replace('/', '_') or 'localhost'}"
    note.symlink_to(target)
    proc = rw("daemon", "stop", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.startswith("rw: cannot note that the daemon stays stopped")
    assert len(proc.stderr.strip().splitlines()) == 1
    assert not target.exists() and running()

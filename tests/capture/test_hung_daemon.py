"""A daemon that runs but cannot answer (SIGSTOP): the shell is fine, and the
reading commands say so at once and read the store as it is."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from ..conftest import RW, daemon_pid, rw, rw_json, wait_for


def timed(*args: str) -> tuple[subprocess.CompletedProcess, float]:
    t = time.monotonic()
    proc = subprocess.run([RW, *args], capture_output=True, text=True, timeout=60)
    return proc, time.monotonic() - t


def test_a_stopped_daemon_is_told_as_such_and_reading_commands_do_not_wait(daemon, shells):
    sh = shells("bash")
    sh.run("echo stored-before")
    sid = sh.session_id()
    wait_for(lambda: [s["command"] for s in rw_json("log", sid)] == ["echo stored-before"])
    pid = daemon_pid(daemon)
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        assert sh.run("echo typed-while-stopped") == "typed-while-stopped"  # the shell is fine
        for args in (["log", sid], ["show", sid, "1"], ["sessions"], ["search", "stored-before"]):
            proc, took = timed(*args)
            assert proc.returncode == 0, (args, proc.stderr)
            assert took < 3, (args, took)
            assert f"the daemon (pid {pid}) is stopped" in proc.stderr, (args, proc.stderr)
            assert "not running" not in proc.stderr, (args, proc.stderr)
            assert "stored-before" in proc.stdout or args[0] == "sessions", (args, proc.stdout)
        status, took = timed("daemon", "status")
        assert status.returncode == 1 and took < 3, (status, took)
        assert f"pid {pid}" in status.stdout and "not answering" in status.stdout, status.stdout
        assert "not running" not in status.stdout
    finally:
        os.kill(pid, signal.SIGCONT)
    # Going on again, it stores what was typed meanwhile.
    wait_for(lambda: len(rw_json("log", sid)) == 2, 10)
    assert rw("daemon", "status").returncode == 0

"""RW_HOME deleted under a running daemon and live shells: the daemon exits,
and once a daemon runs again the shells' sessions are recorded again."""

from __future__ import annotations

import os
import shutil
import signal

import pytest

from rewind_daemon.capture.client import process_running

from ..conftest import daemon_pid, rw, rw_json, wait_for


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_deleted_rw_home_is_recovered_once_a_daemon_runs_again(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo before")
    old = daemon_pid(daemon)
    assert old is not None
    shutil.rmtree(daemon)
    # The daemon whose home is gone exits (and leaves nothing behind).
    try:
        wait_for(lambda: not process_running(old), 10)
    finally:
        if process_running(old):  # (the fixture can no longer find it)
            os.kill(old, signal.SIGTERM)
    sh.run("echo lost")  # no spool dir: this one cannot be recorded
    rw("daemon", "start")  # as `rw doctor` says
    sh.run("echo after1")
    sh.run("echo after2")
    sid = sh.session_id()  # the session is known again, with its shell's pid
    try:
        steps = wait_for(lambda: (s := rw_json("log", sid)) and len(s) >= 2 and s, 10)
    except AssertionError:
        log = (daemon / "data" / "daemon.log").read_text()
        raise AssertionError((rw_json("log", sid), log)) from None
    assert [s["command"] for s in steps][-2:] == ["echo after1", "echo after2"]
    assert steps[-1]["exit_code"] == 0
    status = rw("daemon", "status").stdout
    assert "\n  dropped: 0\n" in status, status
    session = next(s for s in rw_json("sessions") if s["id"] == sid)
    assert session["shell"] == kind

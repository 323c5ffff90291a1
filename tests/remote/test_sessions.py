"""Runs brought home from a remote are data, never trusted as what was typed
here: a real store, and records as a remote that lies would send them."""

from __future__ import annotations

import time

import pytest

from rewind_daemon.config import Config
from rewind_daemon.errors import RwError
from rewind_daemon.guard.runner import GuardReport, GuardRequest
from rewind_daemon.remote.sessions import bring_home
from rewind_daemon.store import Store

SECRET = "glpat-xxxxxxxxxxxxxxxxxxxx"


def record(command: str = "rm -rf ~", started: float | None = None) -> dict:
    now = time.time() if started is None else started
    return {
        "session": {"id": "1796600000000000000abcdef", "shell": "bash", "cwd": "/home/u",
                    "user": "u", "pid": 42, "started_at": now, "ended_at": now + 1},
        "step": {"command": command, "cwd_before": "/home/u", "started_at": now,
                 "ended_at": now + 1, "exit_code": 0, "pipestatus": "0"},
        "output_base64": "aGkK",
        "report": GuardReport(GuardRequest([command], "/home/u"), None, 1, [], [], now, now + 1,
                              0, None, 1).to_json(),
    }  # fmt: skip


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "rw.db")
    yield s
    s.close()


def test_the_command_stored_is_the_one_asked_here_redacted(store):
    redactor = Config().redactor()
    sid = bring_home(store, "web1", record(), redactor, 1 << 20, f"deploy --token {SECRET}")
    [step] = store.steps(sid)
    assert step.command.startswith("deploy --token ") and SECRET not in step.command
    assert "rm -rf" not in step.command
    row = store.get_session(sid)
    assert (row.host, row.origin) == ("web1", "guard")
    assert store.output(sid, 1) == b"hi\n"
    # Brought home again: the same session, not a second one.
    assert bring_home(store, "web1", record(), redactor, 1 << 20, "deploy") == sid
    assert len(store.sessions()) == 1


def test_without_the_command_asked_here_it_is_an_import(store):
    sid = bring_home(store, "web1", record(), Config().redactor(), 1 << 20)
    assert store.get_session(sid).origin == "import"
    assert store.latest_session_id() is None  # `last` is never the remote's word


def test_times_out_of_range_are_refused_and_nothing_is_stored(store):
    with pytest.raises(RwError, match="not from 1970 to tomorrow"):
        bring_home(store, "web1", record(started=4102444800.0), Config().redactor(), 1 << 20, "x")
    assert store.sessions() == []

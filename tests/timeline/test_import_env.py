"""A recorded environment is data, never code: the shell that replays a session
starts without what a shell acts on at start-up (BASH_ENV, exported functions,
...), and a session from elsewhere cannot set what makes programs run code of
its choosing (docs/security.md)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from rewind_daemon import paths
from rewind_daemon.redact import Redactor
from rewind_daemon.store import Store
from rewind_daemon.timeline import importing

from ..cli.test_cli_export import import_document
from ..conftest import rw, rw_json
from .test_replay import fenced_replay


def hostile_env(tmp_path: Path) -> dict[str, str]:
    """Each of these would run `touch pwned-*` in tmp_path, or replace echo, or
    load a library, if the replaying shell or its programs took it."""
    evil = tmp_path / "evil"
    evil.mkdir(exist_ok=True)
    (evil / "ls").write_text(f"#!/bin/sh\ntouch {tmp_path}/pwned-path\n")
    (evil / "ls").chmod(0o755)
    return {
        "BASH_ENV": f"$(touch {tmp_path}/pwned-bash-env)",
        "ENV": f"$(touch {tmp_path}/pwned-env)",
        "SHELLOPTS": "xtrace",
        "PS4": f"$(touch {tmp_path}/pwned-ps4)",
        "BASH_FUNC_echo%%": f"() {{ touch {tmp_path}/pwned-func; }}",
        "LD_PRELOAD": str(tmp_path / "nowhere" / "evil.so"),
        "PATH": f"{evil}:/usr/bin:/bin",
        "RW_KEPT": "kept",
    }


STEP = (
    "echo hello; ls >/dev/null; bash -c 'echo child' >/dev/null; "
    "echo kept=$RW_KEPT ld=${LD_PRELOAD-none}"
)


def pwned(tmp_path: Path) -> list[str]:
    return sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pwned"))


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_an_imported_environment_runs_nothing_on_replay(daemon, tmp_path, kind):
    """The reviewer's reproduction: `rw replay --dry-run` lists only `echo hello`,
    and `rw replay` must run only that (old code: BASH_ENV ran as the shell
    started, BASH_FUNC_echo%% replaced echo, PATH and LD_PRELOAD reached ls)."""
    env = hostile_env(tmp_path)
    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path), "env": env}
    doc = tmp_path / "doc.json"
    import_document(doc, {"name": "hostile", "shell": kind}, [{"command": STEP, **ok}], env)
    said = rw("import", "json", str(doc), "--name", "hostile2").stdout
    listed = fenced_replay("hostile2", "--dry-run")
    assert listed.stdout == f"    1  {STEP}\n"
    proc = fenced_replay("hostile2")
    assert pwned(tmp_path) == []
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "kept=kept", "ld=none"], proc
    assert (
        "left out of its environment (a shell or program would run them): BASH_ENV, "
        "BASH_FUNC_echo%%, ENV, LD_PRELOAD, PATH, PS4, SHELLOPTS\n"
    ) in said, said
    left_out = rw_json("import", "json", str(doc))["env_left_out"]
    assert left_out[:2] == ["BASH_ENV", "BASH_FUNC_echo%%"]
    assert "was imported" in listed.stderr
    assert proc.stderr.count("was imported") == 1, proc.stderr
    assert pwned(tmp_path) == []


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_an_environment_stored_by_an_older_import_is_filtered_when_replayed(daemon, tmp_path, kind):
    """Imports stored before their environments were filtered: the replay leaves
    out what a foreign session may not set, and gives PATH the user's own."""
    env = hostile_env(tmp_path)
    now = time.time() - 10
    session = importing.ImportedSession(shell=kind, started_at=now, ended_at=now + 1,
                                        name="older", cwd=str(tmp_path), start_env=env)  # fmt: skip
    session.steps.append(importing.ImportedStep(STEP, now, now + 1, str(tmp_path),
                                                str(tmp_path), 0, "0", env))  # fmt: skip
    store = Store(paths.resolve().db)
    try:
        importing.save(store, session, Redactor())
    finally:
        store.close()
    assert rw_json("show", "older", "1")["env"]["BASH_ENV"].startswith("$(touch")
    proc = fenced_replay("older")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "kept=kept", "ld=none"], proc
    assert pwned(tmp_path) == []


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_your_own_bash_env_is_for_the_steps_children_as_it_was_live(daemon, shells, tmp_path, kind):
    """An own session's BASH_ENV: the live shell never sourced it, its `bash -c`
    child did. A replay does the same (old code: its own bash sourced it first)."""
    log = tmp_path / "log"
    (tmp_path / "env.sh").write_text(f"echo sourced >> {log}\n")
    sh = shells(kind, env={"BASH_ENV": f"{tmp_path}/env.sh"})  # as a profile exports it
    sh.run("rw name ownenv")
    sh.run(f"echo step >> {log}")
    sh.run(f"bash -c 'echo child >> {log}'")
    live = log.read_text()
    assert live == "step\nsourced\nchild\n"
    log.unlink()
    proc = fenced_replay("ownenv")
    assert proc.returncode == 0, proc.stderr
    assert log.read_text() == live
    assert "was imported" not in proc.stderr
    replayed = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    assert rw_json("show", replayed, "3")["env"]["BASH_ENV"] == f"{tmp_path}/env.sh"


def test_a_pulled_session_runs_nothing_its_host_put_in_its_environment(daemon, tmp_path):
    """`rw pull` stores what a host sends as an import (remote.sessions.pull_home,
    fed here the document a hostile host would send): its environment is
    filtered the same way, and a replay of it runs only its step."""
    from rewind_daemon.remote.sessions import pull_home

    env = hostile_env(tmp_path)
    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path), "env": env}
    document = {
        "format": "rw-session", "version": 1,
        "session": {"id": "x", "name": "pulled", "shell": "bash", "started_at": 1700000000},
        "start_env": env,
        "steps": [{"started_at": 1700000001, "ended_at": 1700000002, "command": STEP, **ok}],
    }  # fmt: skip
    store = Store(paths.resolve().db)
    try:
        got = pull_home(store, "web1", json.dumps(document).encode(), Redactor())
    finally:
        store.close()
    stored = rw_json("show", got.session, "1")["env"]
    assert "BASH_ENV" not in stored and "LD_PRELOAD" not in stored and stored["RW_KEPT"] == "kept"
    proc = fenced_replay(got.session)
    assert pwned(tmp_path) == []
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["hello", "kept=kept", "ld=none"], proc
    assert "was imported" in proc.stderr

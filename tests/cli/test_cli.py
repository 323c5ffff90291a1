"""The command line: help everywhere, one-line errors with exit codes, JSON contracts."""

from __future__ import annotations

import json
import sqlite3

import click
import pytest

from rewind_daemon.cli import (  # noqa: F401
    capture,
    checkpoint,
    cli,
    compare,
    dap,
    guard,
    history,
    record,
    remote,
    replay,
    search,
    share,
    travel,
)

from ..conftest import rw, rw_json, write_config


def all_commands(group: click.Group, prefix=()):
    for name, cmd in group.commands.items():
        path = (*prefix, name)
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from all_commands(cmd, path)


def test_every_command_has_help_with_an_example():
    for path, cmd in all_commands(cli):
        assert cmd.help and "Example" in cmd.help, f"rw {' '.join(path)} lacks help/example"
        for param in cmd.params:
            if isinstance(param, click.Option) and param.name not in ("help",):
                assert param.help, f"rw {' '.join(path)} {param.opts} lacks help"


def test_help_and_version_run(rw_home):
    assert "Usage: rw" in rw("-h").stdout
    assert "rw, version" in rw("--version").stdout
    for path, _ in all_commands(cli):
        assert rw(*path, "--help").returncode == 0


@pytest.mark.parametrize(
    "args,message",
    [
        (["log", "no-such-session"], "no session named or numbered 'no-such-session'"),
        (["show", "abc"], "STEP must be a number"),
        (["show", "last", "999"], "has no step 999"),
        (["init", "fish"], "Invalid value"),
        (["log", "--limit", "0"], "Invalid value"),
    ],
)
def test_bad_input_is_one_line_exit_2(daemon, shells, args, message):
    shells("bash").run("echo something")
    proc = rw(*args, check=False)
    assert proc.returncode == 2, proc
    assert message in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_nothing_recorded_yet(no_autostart):
    proc = rw("log", check=False)
    assert proc.returncode == 2
    assert proc.stderr.strip().endswith("nothing has been recorded yet")
    assert "Traceback" not in proc.stderr


def test_invalid_config_is_a_clear_error(rw_home):
    write_config(rw_home, "ignore = ['(unclosed']\n")
    proc = rw("config", "show", check=False)
    assert proc.returncode == 2
    assert "invalid regex in ignore" in proc.stderr and len(proc.stderr.splitlines()) == 1
    write_config(rw_home, "ignore = 3\n")
    assert "must be a list of strings" in rw("config", "show", check=False).stderr
    write_config(rw_home, "[daemon\n")
    proc = rw("config", "show", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_config_path_and_show(rw_home):
    assert rw("config", "path").stdout.strip() == str(rw_home / "config" / "config.toml")
    assert rw_json("config", "show")["daemon"] == {"autostart": True}
    write_config(rw_home, 'ignore = ["^ls"]\n[daemon]\nautostart = false\n')
    shown = rw_json("config", "show")
    assert shown["ignore"] == ["^ls"] and shown["daemon"]["autostart"] is False


def test_json_contracts_and_addressing(daemon, shells):
    sh = shells("bash")
    sh.run("echo one")
    sh.run("false")
    sid = sh.session_id()
    assert sh.run("rw name deploy-x") == f"session {sid} is now named deploy-x"
    sessions = rw_json("sessions")
    mine = next(s for s in sessions if s["id"] == sid)
    for key in ("id", "name", "shell", "parent", "branch_point", "steps", "started_at"):
        assert key in mine
    assert mine["name"] == "deploy-x" and mine["shell"] == "bash"
    steps = rw_json("log", "deploy-x")
    for key in ("step", "command", "cwd", "exit_code", "started_at", "duration_ms", "session"):
        assert key in steps[0]
    # addressing: name, id, id prefix and `last` all reach the same session
    assert rw_json("log", sid) == steps
    assert rw_json("log", sid[:12]) == steps
    assert rw_json("log", "last")[0]["session"] == sid
    failed = rw_json("log", "deploy-x", "--failed")
    assert [s["command"] for s in failed] == ["false"]
    assert [s["command"] for s in rw_json("log", sid, "--limit", "1")] == ["rw name deploy-x"]
    # inside the shell, no SESSION means this shell's own session
    out = sh.run("rw log --json")
    assert {s["session"] for s in json.loads(out)} == {sid}
    shown = rw_json("show", sid, "2")
    assert shown["command"] == "false" and shown["exit_code"] == 1


def test_doctor_reports_health(daemon, shells):
    sh = shells("bash")
    out = sh.run("rw doctor")
    assert "ok   daemon" in out and "ok   hooks" in out and "ok   store" in out
    rw("daemon", "stop")
    proc = rw("doctor", check=False)
    assert proc.returncode == 1
    assert "BAD  daemon" in proc.stdout and "rw daemon start" in proc.stdout


def test_doctor_detects_a_corrupt_store(daemon, shells):
    sh = shells("bash")
    sh.run("echo x")
    rw("daemon", "stop")
    db = daemon / "data" / "rw.db"
    data = bytearray(db.read_bytes())
    data[100:4096] = b"\xff" * (4096 - 100)
    db.write_bytes(bytes(data))
    proc = rw("doctor", check=False)
    assert proc.returncode == 1
    assert "BAD  store" in proc.stdout
    assert "Traceback" not in proc.stderr


def test_store_from_a_newer_rw_is_refused(no_autostart):
    db_path = no_autostart / "data" / "rw.db"
    db_path.parent.mkdir(parents=True)
    db = sqlite3.connect(db_path)
    db.execute("PRAGMA user_version=99")
    db.close()
    proc = rw("log", check=False)
    assert proc.returncode == 1
    assert "schema 99" in proc.stderr and "upgrade rw" in proc.stderr


def test_daemon_start_stop_status(rw_home):
    assert rw("daemon", "status", check=False).returncode == 1
    assert "started" in rw("daemon", "start").stdout
    assert "already running" in rw("daemon", "start").stdout
    status = rw_json("daemon", "status")
    assert status["running"] is True and status["watching"] == "inotify"
    assert "stopped" in rw("daemon", "stop").stdout
    assert "not running" in rw("daemon", "stop").stdout


def test_stale_socket_and_pid_file_never_block_a_restart(rw_home):
    import os
    import signal

    from ..conftest import daemon_pid

    rw("daemon", "start")
    os.kill(daemon_pid(rw_home), signal.SIGKILL)
    assert (rw_home / "run" / "daemon.sock").exists()
    assert (rw_home / "run" / "daemon.pid").exists()
    assert "started" in rw("daemon", "start").stdout
    assert rw_json("daemon", "status")["running"] is True


def test_every_command_is_in_the_lazy_loading_table():
    from rewind_daemon.cli import COMMAND_MODULES

    assert set(cli.commands) == set(COMMAND_MODULES)
    for name, module in COMMAND_MODULES.items():
        assert cli.commands[name].callback.__module__ == f"rewind_daemon.cli.{module}"

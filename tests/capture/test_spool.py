"""What the spool leaves on disk: real shells, the real daemon, the file's bytes."""

from __future__ import annotations

import errno
import json
import os
import secrets
import sqlite3
import stat
import subprocess
import zlib
from pathlib import Path

import pytest

from ..conftest import kill_daemon, rw, wait_for

SHELLS = ["bash", "zsh"]


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_spool_keeps_no_clear_text_once_ingested_and_is_private(daemon, shells, kind):
    token, bearer = f"tok{secrets.token_hex(8)}", f"bearer{secrets.token_hex(8)}"
    sh = shells(kind, before_init=["umask 022"])
    sh.run(f"export API_TOKEN={token}")
    sh.run(f"echo curl -H 'Authorization: Bearer {bearer}' https://example.invalid/ >/dev/null")
    sh.run("echo after")
    # The hooks made their files private and left the user's umask alone.
    assert sh.run("umask") in ("0022", "022")
    sid = sh.session_id()
    spool = daemon / "data" / "spool" / f"{sid}.spool"

    def clear_text_gone() -> bool:
        data = spool.read_bytes()  # every byte, holes read as zeros
        return token.encode() not in data and bearer.encode() not in data

    wait_for(clear_text_gone, timeout=3)
    assert spool.stat().st_size > 0
    assert mode(spool) == 0o600
    assert mode(spool.parent) == 0o700
    scratch = Path(sh.run("echo $__rw_scratch_dir"))
    assert mode(scratch) == 0o700
    if kind == "bash":
        assert mode(scratch / f"{sid}.hist") == 0o600
    # What it held was stored all the same.
    shown = rw("log", sid, "--json").stdout
    assert "echo after" in shown and token not in shown and bearer not in shown


def stored_text(home: Path) -> str:
    """Everything in the store as text: its rows, environments decompressed."""
    db = sqlite3.connect(f"file:{home / 'data' / 'rw.db'}?mode=ro", uri=True)
    try:
        parts = [repr(db.execute(f"SELECT * FROM {t}").fetchall()) for t in ("sessions", "steps")]
        parts += [zlib.decompress(d).decode() for (d,) in db.execute("SELECT data FROM envs")]
        parts += [repr(db.execute("SELECT * FROM meta").fetchall())]
    finally:
        db.close()
    return "\n".join(parts)


@pytest.mark.parametrize(
    "kind, before", [("bash", []), ("bash", ["HISTCONTROL=ignorespace"]), ("zsh", [])]
)
def test_a_variable_exported_by_a_line_not_recorded_stays_out_of_the_store(
    daemon, shells, kind, before
):
    value = f"s3cr3t{secrets.token_hex(6)}"
    sh = shells(kind, before_init=before)
    sh.run("echo first")
    sh.run(f" export HIDDEN_THING={value} PLAIN_THING=also-{value}")
    assert sh.run(" (exit 7)") == "" and sh.run("echo $?") == "7"
    sh.run("echo next")
    assert sh.run("echo $HIDDEN_THING") == value
    # A restarted daemon still knows what to keep out.
    rw("daemon", "stop")
    rw("daemon", "start")
    sh.run("echo after-restart")
    sid = sh.session_id()
    log = rw("log", sid, "--json").stdout
    assert [s["command"] for s in json.loads(log)] == [
        "echo first", "echo $?", "echo next", "echo $HIDDEN_THING", "echo after-restart",
    ]  # fmt: skip
    shown = [
        rw("show", sid, str(n), "--env", *fmt).stdout for n in (3, 5) for fmt in ([], ["--json"])
    ]
    env = json.loads(shown[-1])["env"]
    assert env["HIDDEN_THING"] == "<redacted>" and env["PLAIN_THING"] == "<redacted>"
    for text in (log, *shown, stored_text(daemon)):
        assert value not in text
    # Once a recorded line gives it another value, that value is recorded.
    sh.run("export HIDDEN_THING=public-now")
    sh.run("echo last")
    env = json.loads(rw("show", sid, "7", "--json").stdout)["env"]
    assert env["HIDDEN_THING"] == "public-now" and env["PLAIN_THING"] == "<redacted>"
    assert value not in stored_text(daemon)


@pytest.fixture
def small_data_dir(rw_home):
    """The data directory (store, spools, log) on a 1 MB filesystem of its own."""
    data = rw_home / "data"
    data.mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m,mode=0700", "tmpfs", str(data)],
                   check=True)  # fmt: skip
    try:
        yield data
    finally:
        kill_daemon(rw_home)
        subprocess.run(["umount", "-l", str(data)], check=False)


def fill(directory: Path) -> Path:
    """Write a file until its filesystem has no room left."""
    path = directory / "filler"
    with open(path, "ab", buffering=0) as f:
        for size in (65536, 4096, 1):
            try:
                while True:
                    f.write(bytes(size))
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
    return path


def doctor_check(name: str) -> dict:
    checks = json.loads(rw("doctor", "--json", check=False).stdout)
    return next(c for c in checks if c["check"] == name)


@pytest.mark.skipif(os.getuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_is_told_once_reported_and_recording_resumes(small_data_dir, shells, kind):
    rw("daemon", "start")
    sh = shells(kind)
    sh.run("echo before")
    sid = sh.session_id()
    message = "rw: a command could not be recorded: no space left on device"
    said = []
    for i in range(30):
        # (What the daemon frees by ingesting, and the room left in the spool's
        # last page, take a few more records.)
        filler = fill(small_data_dir)
        said.append(sh.run(f"echo lost-{i}"))
        if any(message in out for out in said[:-5]):
            break
    told = [i for i, out in enumerate(said) if message in out]
    assert len(told) == 1 and said[told[0]].startswith(f"lost-{told[0]}\n{message}"), said
    assert said[told[0] + 1 :] == [f"lost-{i}" for i in range(told[0] + 1, len(said))]
    fill(small_data_dir)
    assert sh.run("(exit 5)") == "" and sh.run("echo $?") == "5"
    check = doctor_check("recording")
    assert not check["ok"] and "no space left on device" in check["detail"], check
    status = rw("daemon", "status").stdout
    assert "PROBLEM: no space left on device" in status, status

    filler.unlink()
    assert sh.run("echo back-1") == "back-1"
    sh.run("echo back-2")
    commands = [s["command"] for s in json.loads(rw("log", sid, "--json").stdout)]
    assert commands[0] == "echo before" and commands[-2:] == ["echo back-1", "echo back-2"]
    assert not {f"echo lost-{i}" for i in range(told[0] + 1, len(said))} & set(commands)
    check = doctor_check("recording")
    assert check["ok"] and "could not be recorded" in check["detail"], check
    assert f"in session {sid}: no space left on device" in check["detail"]
    reply = json.loads(rw("daemon", "status", "--json").stdout)
    assert reply["problems"] == [] and reply["lost_commands"] >= len(said) - told[0], reply
    assert "lost: " in rw("daemon", "status").stdout


def test_a_nested_shell_keeps_out_what_its_parent_hid(daemon, shells, kind, tmp_path):
    value = f"s3cr3t{secrets.token_hex(6)}"
    sh = shells(kind)
    sh.run(f" export HIDDEN_THING={value}")
    sh.run("echo outer")
    outer = sh.session_id()
    rc = tmp_path / "home" / f".rw_nested_{kind}"
    extra = "unset zle_bracketed_paste; unsetopt prompt_sp\n" if kind == "zsh" else ""
    rc.write_text(f"PS1='<''rwp> '\n{extra}eval \"$({sh.bin_dir}/rw init {kind})\"\n")
    if kind == "bash":
        sh.p.sendline(f"bash --rcfile {rc} -i")
    else:
        (rc.parent / ".zshrc").write_text(rc.read_text())
        sh.p.sendline(f"ZDOTDIR={rc.parent} zsh -i")
    sh.p.expect_exact("<rwp> ")
    assert sh.run("echo $HIDDEN_THING") == value
    sh.run("exit")
    sh.run("echo outer-again")
    inner = [s for s in json.loads(rw("sessions", "--json").stdout) if s["parent"] == outer]
    assert len(inner) == 1
    env = json.loads(rw("show", inner[0]["id"], "1", "--json").stdout)["env"]
    assert env["HIDDEN_THING"] == "<redacted>"
    assert value not in stored_text(daemon)

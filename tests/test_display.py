"""What rw prints for people never carries a raw control character from what was
recorded (names, commands, directories, environments): they are shown escaped, on
a terminal and in a pipe alike, and in Markdown exports; --json keeps them exact."""

from __future__ import annotations

import json
import re

from .cli.test_cli_export import import_document
from .conftest import rw, rw_json

# What a terminal acts on instead of showing: C0 but newline and tab, DEL, C1, bidi.
RAW = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
NAME = "demo\x1b]0;title\x07"
VALUE = "v\x1b]0;t\x07\u202e"


def printed(*args: str) -> str:
    proc = rw(*args)
    text = proc.stdout + proc.stderr
    assert not RAW.search(text), (args, text)
    return text


def record(shells, tmp_path):
    sh = shells("bash")
    sh.run(f"cd {tmp_path}")  # 1
    sh.run("rw name $'demo\\e]0;title\\a'")  # 2
    sh.run("mkdir $'d\\e[2Jx' && cd $'d\\e[2Jx'")  # 3
    sh.run("export RW_V=$'v\\e]0;t\\a\\u202e'")  # 4
    sh.run("true")  # 5
    return sh


def test_a_recorded_shell_s_name_cwd_and_env_are_shown_escaped(daemon, shells, tmp_path):
    sh = record(shells, tmp_path)
    sid = sh.session_id()
    cwd = f"{tmp_path}/d\x1b[2Jx"
    shown_cwd = f"{tmp_path}/d\\e[2Jx"
    # on a terminal: what the shell's terminal receives
    for command in ("rw sessions", "rw log", "rw show 4", "rw show 4 --env"):
        out = sh.run(command)
        # rw log dims rw's own steps: its only escapes, never recorded text's
        assert not RAW.search(out.replace("\x1b[2m", "").replace("\x1b[0m", "")), (command, out)
    assert "demo\\e]0;title\\x07" in sh.run("rw sessions")
    # in a pipe
    assert "demo\\e]0;title\\x07" in printed("sessions")
    assert f"session {sid} (demo\\e]0;title\\x07): 10 steps" in printed("log", sid)
    show = printed("show", sid, "4")
    assert f"cwd       {shown_cwd}\n" in show
    assert "env       +RW_V=v\\e]0;t\\x07\\u202e\n" in show
    assert "  RW_V=v\\e]0;t\\x07\\u202e\n" in printed("show", sid, "4", "--env")
    rewind = printed("rewind", sid, "5")
    assert f"  cd {shown_cwd}\n" in rewind and "  export RW_V=v\\e]0;t\\x07\\u202e\n" in rewind
    md = printed("export", sid, "--format", "md")
    assert md.startswith("# demo\\e]0;title\\x07\n") and f"`{shown_cwd}`" in md
    # --json: exact, and still no raw control character in the text
    session = next(s for s in rw_json("sessions") if s["id"] == sid)
    assert session["name"] == NAME
    text = rw("show", sid, "4", "--json").stdout
    assert not RAW.search(text)
    step = json.loads(text)
    assert step["cwd"] == cwd and step["env"]["RW_V"] == VALUE
    doc = json.loads(rw("export", sid, "--format", "json").stdout)
    assert doc["session"]["name"] == NAME and doc["steps"][4]["env"]["RW_V"] == VALUE


COMMAND = "echo \x1b]0;pwn\x07 \x9b31m \u202eevil\r\x7f\tX\nsecond line\x1b[2J"


def test_imported_commands_are_shown_escaped_by_every_command(daemon, shells, tmp_path):
    where = {"cwd_before": "/tmp/c\x1b[1m", "cwd_after": "/tmp/c\x1b[1m"}
    env = {"E": "\x1b]0;e\x07"}
    sid = import_document(
        tmp_path / "doc.json",
        {"name": "n\x07", "host": "h\x1b[5m", "shell": "bash\x1b[0m"},
        [
            {"command": "true", "exit_code": 0, "env": {}, **where},
            {"command": COMMAND, "exit_code": 0, "env": env, **where},
            {"command": "ls \x1b[8m", "exit_code": 1, "env": env, **where},
        ],
    )
    assert "n\\x07" in printed("sessions")
    log = printed("log", sid)
    assert "echo \\e]0;pwn\\x07 \\x9b31m \\u202eevil\\r\\x7f\\tX …" in log
    show = printed("show", sid, "2")
    # a multi-line command keeps its lines (and its tab), its other controls escaped
    assert "command   echo \\e]0;pwn\\x07 \\x9b31m \\u202eevil\\r\\x7f\tX\n" in show
    assert "          second line\\e[2J\n" in show
    assert "cwd       /tmp/c\\e[1m" in show and "+E=\\e]0;e\\x07" in show
    assert "echo \\e]0;pwn" in printed("rewind", sid, "3")
    md = printed("export", sid, "--format", "md")
    assert "\nsecond line\\e[2J\n" in md and "h\\e[5m" in md
    assert "second line" in printed("replay", sid, "--dry-run")
    other = import_document(tmp_path / "other.json", {"name": "other"}, [{"command": "true"}])
    diff = rw("diff", sid, other, check=False)
    assert diff.returncode == 1 and not RAW.search(diff.stdout + diff.stderr)
    assert "echo \\e]0;pwn" in diff.stdout
    # --json keeps every character
    steps = rw_json("log", sid)
    assert steps[1]["command"] == COMMAND and steps[1]["cwd"] == "/tmp/c\x1b[1m"
    assert rw_json("show", sid, "2")["env"] == env

"""rw import: bash and zsh history files become sessions that log, export and
branch work on."""

from __future__ import annotations

import json
import os
import re
import socket
import sqlite3
import subprocess
import time
from datetime import datetime

import pytest

from ..conftest import RW, daemon_pid, rw, rw_json, steps_of
from ..shell import PROMPT

TOKEN = "ghp_" + "a1B2" * 9

BASH_HISTORY = f"""\
#1700000000
mkdir -p /tmp/demo
#1700000060
cd /tmp/demo
#1700000120
 echo typed-with-a-leading-space
#1700000180
export GITHUB_TOKEN={TOKEN}
#1700000240
echo done
"""

ZSH_HISTORY = """\
: 1700000000:0;echo one
: 1700000005:3;for i in 1 2; do\\
  echo "$i"\\
done
: 1700000010:0;ls -la
"""


def epoch(iso: str) -> float:
    return datetime.fromisoformat(iso).timestamp()


@pytest.fixture
def bash_file(tmp_path):
    path = tmp_path / "bash_history"
    path.write_text(BASH_HISTORY)
    return path


def test_bash_history_with_timestamps(rw_home, bash_file):
    out = rw("import", "bash", str(bash_file)).stdout
    assert out.startswith(f"imported 4 steps from {bash_file} into session ")
    assert (
        "(import-bash-history); 1 left out (leading space, ignored, or longer than rw records)"
        in out
    )
    steps = steps_of("import-bash-history")
    assert [s["command"] for s in steps] == [
        "mkdir -p /tmp/demo",
        "cd /tmp/demo",
        "export GITHUB_TOKEN=<redacted>",
        "echo done",
    ]
    assert [epoch(s["started_at"]) for s in steps] == [
        1700000000,
        1700000060,
        1700000180,
        1700000240,
    ]
    assert {s["exit_code"] for s in steps} == {None}
    assert {s["cwd"] for s in steps} == {None}
    session = next(s for s in rw_json("sessions") if s["name"] == "import-bash-history")
    assert session["origin"] == "import" and session["shell"] == "bash"
    assert session["steps"] == 4 and epoch(session["started_at"]) == 1700000000
    # the text log shows the unknown exit codes as `-`
    log = rw("log", "import-bash-history").stdout.splitlines()
    assert log[1].split()[:2] == ["1", "-"]


def _bash_reads(path) -> list[str]:
    """The entries bash's own `history -r` reads from `path` (with HISTTIMEFORMAT
    set, as when it wrote the file)."""
    script = (
        "set -o history; shopt -s lithist cmdhist; HISTTIMEFORMAT=$'\\036'; history -c; "
        'history -r "$1"; history'
    )
    out = subprocess.run(
        ["bash", "--norc", "-c", script, "bash", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    return [e.rstrip("\n") for e in re.split(r"(?m)^ *\d+  \x1e", out)[1:]]


def test_bash_lithist_multi_line_entries_are_one_step_each(rw_home, shells, tmp_path):
    histfile = tmp_path / "lithist_history"
    sh = shells(
        "bash",
        init=False,
        env={"HISTFILE": str(histfile)},
        before_init=["shopt -s lithist cmdhist; HISTTIMEFORMAT='%F %T '"],
    )
    for line in ["for i in 1 2; do", 'echo "n=$i"', "done"]:
        sh.p.sendline(line)
    sh.p.expect_exact("n=2")
    sh.p.expect_exact(PROMPT)
    sh.run("echo single")
    sh.run("f() {\n  echo in-f\n}")
    sh.run('history -w "$HISTFILE"')
    text = histfile.read_text()
    assert text.startswith("#") and "for i in 1 2; do\necho" in text  # as lithist writes it
    expected = _bash_reads(histfile)
    assert 'for i in 1 2; do\necho "n=$i"\ndone' in expected
    assert "f() {\n  echo in-f\n}" in expected

    rw("import", "bash", str(histfile), "--name", "lit")
    steps = steps_of("lit")
    assert [s["command"] for s in steps] == expected
    # unknown directories: null in JSON, "unknown" for people
    assert steps[0]["cwd"] is None
    assert rw_json("show", "lit", "1")["cwd"] is None
    assert "cwd       unknown\n" in rw("show", "lit", "1").stdout


def test_bash_history_without_timestamps_takes_the_files_time(rw_home, tmp_path):
    path = tmp_path / "plain"
    path.write_text("echo first\n\necho second\necho third\n")
    os.utime(path, (1600000000, 1600000000))
    result = rw_json("import", "bash", str(path), "--name", "plain")
    assert result["name"] == "plain" and result["steps"] == 3 and result["left_out"] == 0
    steps = steps_of("plain")
    assert [s["command"] for s in steps] == ["echo first", "echo second", "echo third"]
    assert {epoch(s["started_at"]) for s in steps} == {1600000000}


def test_zsh_extended_history_with_a_multi_line_entry(rw_home, tmp_path):
    path = tmp_path / "zsh_history"
    path.write_text(ZSH_HISTORY)
    rw("import", "zsh", str(path))
    steps = steps_of("import-zsh-history")
    assert [s["command"] for s in steps] == [
        "echo one",
        'for i in 1 2; do\n  echo "$i"\ndone',
        "ls -la",
    ]
    assert [s["duration_ms"] for s in steps] == [0, 3000, 0]
    assert [epoch(s["started_at"]) for s in steps] == [1700000000, 1700000005, 1700000010]
    assert {s["exit_code"] for s in steps} == {None}
    session = next(s for s in rw_json("sessions") if s["name"] == "import-zsh-history")
    assert session["shell"] == "zsh" and session["origin"] == "import"


def test_zsh_plain_and_metafied_history(rw_home, tmp_path):
    path = tmp_path / "zsh_history"
    # "—" is e2 80 94; zsh writes its 0x94 as 0x83 0xb4. 0xff is not UTF-8 at all.
    path.write_bytes(b"echo \xe2\x80\x83\xb4\necho \xff\n: 1700000000:0;echo ok\n")
    rw("import", "zsh", str(path), "--name", "meta")
    assert [s["command"] for s in steps_of("meta")] == ["echo —", "echo \ufffd", "echo ok"]


def test_default_files_and_stdin(rw_home, tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / ".bash_history").write_text("echo from-home\n")
    env = {k: v for k, v in os.environ.items() if k not in ("HISTFILE", "ZDOTDIR")}
    env["HOME"] = str(home)
    assert "from " + str(home / ".bash_history") in rw("import", "bash", env=env).stdout
    custom = tmp_path / "custom_history"
    custom.write_text(": 1700000000:0;echo from-histfile\n")
    out = rw("import", "zsh", env={**env, "HISTFILE": str(custom)}).stdout
    assert f"from {custom}" in out
    piped = subprocess.run(
        [RW, "import", "bash", "-", "--name", "piped"],
        input="echo from-stdin\n", capture_output=True, text=True,
    )  # fmt: skip
    assert piped.returncode == 0 and "from stdin" in piped.stdout
    assert [s["command"] for s in steps_of("piped")] == ["echo from-stdin"]


@pytest.mark.parametrize(
    "content,message",
    [
        (b"", "no commands to import"),
        (b"#1700000000\n\n", "no commands to import"),
        (b"echo a\x00b\n", "not a bash history file (it holds NUL bytes)"),
    ],
)
def test_bad_history_is_one_line_exit_2(rw_home, tmp_path, content, message):
    path = tmp_path / "history"
    path.write_bytes(content)
    proc = rw("import", "bash", str(path), check=False)
    assert proc.returncode == 2 and message in proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr


def test_unreadable_files_and_unknown_kinds(rw_home, tmp_path):
    proc = rw("import", "bash", str(tmp_path / "missing"), check=False)
    assert proc.returncode == 2 and "cannot read" in proc.stderr and "No such file" in proc.stderr
    proc = rw("import", "bash", str(tmp_path), check=False)
    assert proc.returncode == 2 and "Is a directory" in proc.stderr
    proc = rw("import", "fish", check=False)
    assert proc.returncode == 2 and "Invalid value" in proc.stderr


def test_ignored_commands_are_left_out(rw_home, tmp_path):
    (rw_home / "config").mkdir(parents=True)
    (rw_home / "config" / "config.toml").write_text('ignore = ["^ls"]\n')
    path = tmp_path / "h"
    path.write_text("ls\necho kept\nls -la\n")
    result = rw_json("import", "bash", str(path), "--name", "ign")
    assert result["steps"] == 1 and result["left_out"] == 2


def test_export_and_branch_work_on_imported_history(daemon, tmp_path, bash_file):
    zsh_file = tmp_path / "zsh_history"
    zsh_file.write_text(ZSH_HISTORY)
    rw("import", "zsh", str(zsh_file), "--name", "old-zsh")
    script = tmp_path / "old.sh"
    rw("export", "old-zsh", "-o", str(script))
    text = script.read_text()
    assert "Imported from a history file" in text and "this script runs them in bash" in text
    assert "eval 'for i in 1 2; do\n  echo \"$i\"\ndone'\n" in text and "eval 'ls -la'\n" in text
    assert "\ncd " not in text and "\nexport " not in text
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    assert subprocess.run(["shellcheck", str(script)], capture_output=True).returncode == 0
    md = rw("export", "old-zsh", "--format", "md").stdout
    assert "| 2 | `for i in 1 2; do …` | ? | 3.0 s | ? |" in md
    # a branch of an imported session holds its first steps
    rw("import", "bash", str(bash_file), "--name", "old-bash")
    out = rw("branch", "old-bash", "2").stdout
    assert "a branch of" in out
    branch = steps_of("old-bash-branch-2")
    assert [s["command"] for s in branch] == ["mkdir -p /tmp/demo", "cd /tmp/demo"]
    assert {s["exit_code"] for s in branch} == {None}
    session = next(s for s in rw_json("sessions") if s["name"] == "old-bash-branch-2")
    assert session["origin"] == "branch" and session["branch_point"] == 2


# --- rw import json: what a document says is not trusted ---------------------------------


def document(session: dict, steps: list[dict]) -> str:
    return json.dumps({"format": "rw-session", "version": 1, "session": session, "steps": steps})


def dead_pid() -> int:
    proc = subprocess.run(["sh", "-c", "echo $$"], capture_output=True, text=True)
    return int(proc.stdout)


def test_a_json_id_never_names_a_file_outside_rws_directories(rw_home, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "important.ack").write_text("keep me\n")
    (outside / "important.spool").write_bytes(b"")
    (outside / "important.hist").write_text("keep me too\n")
    before = {p.name: p.read_bytes() for p in outside.iterdir()}
    # As an open shell session of this host whose shell has gone: the daemon's
    # maintenance would end it and clean up its spool and FIFO.
    hostile = "../" * 16 + str(outside / "important").lstrip("/")
    path = tmp_path / "hostile.json"
    path.write_text(
        document(
            {"id": hostile, "name": "hostile", "origin": "shell", "started_at": time.time() - 60,
             "ended_at": None, "host": socket.gethostname(), "pid": dead_pid(), "shell": "bash"},
            [{"command": "true", "started_at": time.time() - 50}],
        )
    )  # fmt: skip
    imported = rw_json("import", "json", str(path))
    assert imported["session"] != hostile
    rw("daemon", "start")  # it maintains the store once before it answers
    rw("sessions")
    session = next(s for s in rw_json("sessions") if s["name"] == "hostile")
    assert session["id"] == imported["session"] and session["origin"] == "import"
    assert session["ended_at"] is None  # the daemon left it alone: it is no shell of its
    assert {p.name: p.read_bytes() for p in outside.iterdir()} == before


def test_an_imported_session_never_shadows_what_was_recorded(daemon, shells, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    sh = shells("bash")
    sh.run("rw name deploy")
    sh.run(f"cd {work} && echo mine > mine.txt")
    sid = sh.run("echo $RW_SESSION").strip()
    sh.close()
    # named like it, started after it, and claiming to be a shell session
    path = tmp_path / "evil.json"
    doc = {"id": "theirs", "name": "deploy", "origin": "shell", "started_at": time.time() + 60}
    steps = [
        {"command": "true", "started_at": time.time() + 61},
        {"command": f"touch {work}/pwned", "started_at": time.time() + 62, "cwd_before": "/"},
    ]
    path.write_text(document(doc, steps))
    imported = rw_json("import", "json", str(path))["session"]
    assert imported != "theirs"
    prefix = tmp_path / "prefix.json"
    prefix.write_text(document({**doc, "name": sid[:12]}, steps))
    by_prefix = rw_json("import", "json", str(prefix))["session"]
    for ref in ("deploy", "last", sid[:12]):
        assert {s["session"] for s in steps_of(ref)} == {sid}, ref
    (work / "mine.txt").unlink()
    replay = subprocess.run(
        [RW, "replay", "deploy", "--from", "2"], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert replay.returncode == 0, replay.stderr
    assert (work / "mine.txt").read_text() == "mine\n" and not (work / "pwned").exists()
    # the imports are there, by id, as imports
    assert [s["command"] for s in steps_of(imported)][1] == f"touch {work}/pwned"
    origins = {s["id"]: s["origin"] for s in rw_json("sessions")}
    assert origins[imported] == origins[by_prefix] == "import" and origins[sid] == "shell"
    # and by name when nothing recorded has it
    rw("import", "json", str(path), "--name", "theirs")
    assert [s["command"] for s in steps_of("theirs")][1] == f"touch {work}/pwned"


GOOD_SESSION = {"id": "s", "name": "bad", "shell": "bash", "started_at": 1700000000}
GOOD_STEP = {"command": "ls", "started_at": 1700000001, "ended_at": 1700000002, "exit_code": 0}


@pytest.mark.parametrize(
    "session,step,message",
    [
        ({"pid": 2**64}, {}, "session.pid must be an integer from 1 to"),
        ({"pid": 2**63}, {}, "session.pid must be an integer from 1 to"),
        ({"pid": 0}, {}, "session.pid must be an integer from 1 to"),
        ({}, {"exit_code": 2**64}, "steps[0].exit_code must be an integer from 0 to 255"),
        ({}, {"exit_code": -1}, "steps[0].exit_code must be an integer from 0 to 255"),
        ({}, {"pipestatus": [0, 2**64]}, "steps[0].pipestatus must be a list of integers"),
        ({}, {"step": 2**64}, "steps[0].step must be an integer from 1 to"),
        ({"started_at": "NaN"}, {}, "session.started_at must be a number"),
        ({"started_at": "Infinity"}, {}, "session.started_at must be a number"),
        ({"started_at": "1e400"}, {}, "session.started_at must be a number"),
        ({"started_at": 10**400}, {}, "session.started_at must be a number"),
        ({"started_at": 1e15}, {}, "session.started_at must be a number"),
        ({"started_at": 4102444800}, {}, "session.started_at must be a number"),  # 2100
        ({"started_at": -1}, {}, "session.started_at must be a number"),
        ({"ended_at": "NaN"}, {}, "session.ended_at must be a number"),
        ({}, {"started_at": "-Infinity"}, "steps[0].started_at must be a number"),
        ({}, {"ended_at": 1e300}, "steps[0].ended_at must be a number"),
        ({"cwd": "/a\u0000b"}, {}, "session.cwd must be a string without NUL"),
        ({}, {"command": "ls\u0000-la"}, "steps[0].command must be a string without NUL"),
    ],
)
def test_out_of_range_json_is_one_line_exit_2_and_stores_nothing(
    rw_home, tmp_path, session, step, message
):
    text = document({**GOOD_SESSION, **session}, [{**GOOD_STEP, **step}])
    # json.dumps writes NaN and friends bare; these stand for them
    for word in ("NaN", "-Infinity", "Infinity", "1e400"):
        text = text.replace(f'"{word}"', word)
    path = tmp_path / "bad.json"
    path.write_text(text)
    proc = rw("import", "json", str(path), check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert len(proc.stderr.splitlines()) == 1 and "Traceback" not in proc.stderr
    assert rw_json("sessions") == []


def test_history_times_out_of_range_are_refused(rw_home, tmp_path):
    path = tmp_path / "history"
    path.write_text("#999999999999\necho far-away\n")
    proc = rw("import", "bash", str(path), check=False)
    assert proc.returncode == 2 and "is not from 1970 to tomorrow" in proc.stderr
    zsh = tmp_path / "zsh_history"
    zsh.write_text(": 1700000000:999999999999;echo long\n")
    proc = rw("import", "zsh", str(zsh), check=False)
    assert proc.returncode == 2 and "is not from 1970 to tomorrow" in proc.stderr
    assert rw("sessions").returncode == 0 and rw_json("sessions") == []


# --- a big import shares the store ---------------------------------------------------------


def test_a_big_import_lets_other_writers_and_the_daemon_go_on(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("true")
    daemon_before = daemon_pid(daemon)
    t0 = time.time() - 100000
    steps = [
        {"command": f"make target{i} --password=hunter{i}", "started_at": t0 + i,
         "ended_at": t0 + i + 0.5, "exit_code": 0, "cwd_before": "/srv",
         "env": {"STAGE": str(i % 7)}}
        for i in range(60000)
    ]  # fmt: skip
    big = tmp_path / "big.json"
    big.write_text(document({"id": "big", "name": "big", "started_at": t0}, steps))
    small = tmp_path / "small_history"
    small.write_text("echo small\n")
    importing = subprocess.Popen(
        [RW, "import", "json", str(big)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    time.sleep(1)  # reading and checking the document, then its first batches
    writes, names = [], []
    while importing.poll() is None:
        start = time.monotonic()
        proc = rw("import", "bash", str(small), "--name", f"w{len(writes)}", check=False)
        writes.append((proc.returncode, proc.stderr, time.monotonic() - start))
        names.append(sh.run(f"rw name during-{len(names)}", timeout=30))
    out, err = importing.communicate()
    assert importing.returncode == 0, err
    assert "imported 60000 steps" in out
    assert len(writes) >= 2, "the import ended before the other writers ran"
    for rc, stderr, took in writes:
        assert rc == 0 and stderr == "", stderr
        assert took < 5, f"a writer waited {took:.1f}s for the import"
    assert all("is now named during-" in n for n in names), names
    assert daemon_pid(daemon) == daemon_before
    assert "another rw daemon is running" not in (daemon / "data" / "daemon.log").read_text()
    assert next(s["steps"] for s in rw_json("sessions") if s["name"] == "big") == 60000


def test_a_locked_store_is_busy_not_damaged_and_no_second_daemon_starts(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("true")
    sid = sh.run("echo $RW_SESSION").strip()
    small = tmp_path / "small_history"
    small.write_text("echo small\n")
    # another program holds the write lock longer than rw waits for it
    holder = sqlite3.connect(daemon / "data" / "rw.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        sh.run("echo typed-while-locked")  # the daemon waits for the lock to ingest it
        writer = subprocess.Popen(
            [RW, "import", "bash", str(small)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        named = rw("name", "busy", check=False, env={**os.environ, "RW_SESSION": sid})
        _, err = writer.communicate(timeout=30)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert writer.returncode == 1
    assert err == "rw: the store is busy (another rw is writing); try again\n"
    assert named.returncode == 1 and "the daemon is running but did not answer" in named.stderr
    assert "another rw daemon is running" not in (daemon / "data" / "daemon.log").read_text()
    # and once the lock is gone, all goes on, nothing lost
    rw("name", "busy", env={**os.environ, "RW_SESSION": sid})
    assert "echo typed-while-locked" in [s["command"] for s in steps_of("busy")]

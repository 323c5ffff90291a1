"""A hostile remote host: a compromised server answers whatever it likes. A
fake `ssh` (RW_SSH) stands in for it and speaks rw's wire as a lying remote
would; the real rw runs here against it, on a terminal where what reaches the
terminal matters. The bootstrap's own check runs for real: the fake ssh runs
the command rw gives it with `sh` here, in a home of the test's."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pexpect
import pytest

from rewind_daemon.guard.rules import ERROR, Trip
from rewind_daemon.guard.runner import ROLLED_BACK, GuardReport, GuardRequest, Rollback

from ..conftest import RW, write_config

FAKE_SSH = r"""
import json, os, re, sys
cmd = sys.argv[-1]
nonce = re.search(r"RW-NO-PYTHON ([0-9a-f]+)", cmd).group(1)
out = sys.stdout.buffer
def frame(kind, payload):
    out.write(b"%s %d\n" % (kind.encode(), len(payload)) + payload)
    out.flush()
def send(kind, doc):
    frame(kind, json.dumps(doc).encode())
if os.environ.get("RW_TEST_BEFORE"):  # what the remote does before rw starts there
    exec(open(os.environ["RW_TEST_BEFORE"]).read())
out.write(b"Welcome to evilhost\nRW-REMOTE %s\n" % nonce.encode())
send("hello", {"python": "3.11.2", "cached": True, "home": "/home/x",
               "dir": "/home/x/.cache/rw/remote/v"})
header = sys.stdin.buffer.readline().split()
request = json.loads(sys.stdin.buffer.read(int(header[1])))
exec(open(os.environ["RW_TEST_SCENARIO"]).read())
"""

MAX_DOCUMENT = 64 * 1024 * 1024  # MAX_DOCUMENT: one pulled session at most
TITLE = "\x1b]0;PWNED-TITLE\x07\x1b[2J"


@pytest.fixture
def evil(rw_home, tmp_path, monkeypatch):
    """Returns a function that makes the fake remote act out a scenario (Python
    with send/frame/request/out) and runs rw against it."""
    write_config(rw_home, "[daemon]\nautostart = false\n")
    fake = tmp_path / "fake_ssh.py"
    fake.write_text(FAKE_SSH)
    scenario = tmp_path / "scenario.py"
    monkeypatch.setenv("RW_SSH", f"{sys.executable} {fake}")
    monkeypatch.setenv("RW_TEST_SCENARIO", str(scenario))

    def act(code: str) -> None:
        scenario.write_text(textwrap.dedent(code))

    return act


def on_terminal(*args: str, timeout: float = 60) -> tuple[bytes, int]:
    """Run rw on a terminal: every byte it wrote there, and its exit status."""
    child = pexpect.spawn(RW, list(args), env=dict(os.environ), timeout=timeout)
    out = child.read()
    child.close()
    return out, child.exitstatus if child.exitstatus is not None else -child.signalstatus


def piped(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([RW, *args], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)  # fmt: skip


def a_report(**changes) -> dict:
    now = time.time()
    report = GuardReport(
        request=GuardRequest(["./deploy.sh"], "/home/x"),
        session="20261207-000000-abcdef12",
        checkpoint=4,
        covered=["/home/x/site (3 entries)"],
        not_covered=[],
        started_at=now - 2,
        ended_at=now,
        exit_status=None,
        trip=Trip(ERROR, 1, "ERROR: boom", "matched 'ERROR'"),
        lines=1,
        rollback=Rollback(ROLLED_BACK, ["/home/x/site/index.html"]),
    )
    return {**report.to_json(), **changes}


def stored_sessions(home: Path) -> int:
    db = home / "data" / "rw.db"
    if not db.exists():
        return 0
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT count(*) FROM sessions").fetchone()[0]


# -- 1. what the remote says reaches the terminal escaped -----------------------------------


def test_what_a_remote_says_reaches_the_terminal_escaped_and_its_command_output_as_is(evil):
    report = a_report(
        session="\x1b[2J\x1b]0;SESSION\x07",
        trigger={"type": ERROR, "line_no": 1, "line": "ERROR \x1b]0;TRIP\x07", "detail": "x"},
    )
    report["reverted"] = ["\x1b]0;REVERTED\x07/home/x/site/index.html"]
    report["remaining"] = report["reverted"]
    evil(f"""
        send("note", {{"message": {TITLE!r} + "note"}})
        sys.stderr.write("\\x1b]0;STDERR\\x07 from the remote\\n"); sys.stderr.flush()
        frame("out", b"\\x1b[1mbold output\\x1b[0m\\n")
        send("report", {report!r})
    """)
    out, code = on_terminal("guard", "--host", "evilhost", "--", "./deploy.sh")
    assert code == 1, out
    # The command's own output is what the user asked to see: as it was printed.
    assert b"\x1b[1mbold output\x1b[0m" in out
    # Everything else came from the remote as data: not one control byte of it.
    rest = out.replace(b"\x1b[1mbold output\x1b[0m", b"")
    assert b"\x1b" not in rest and b"\x07" not in rest, rest
    for shown in (
        rb"\e]0;PWNED-TITLE\x07\e[2Jnote",
        rb"\e]0;STDERR\x07 from the remote",
        rb"\e]0;REVERTED\x07/home/x/site/index.html",
        rb"\e[2J\e]0;SESSION\x07",
        rb"ERROR \e]0;TRIP\x07",
    ):
        assert shown in out, (shown, out)


def test_what_a_remote_says_to_rw_pull_and_its_errors_are_escaped(evil):
    evil(f"""
        send("note", {{"message": {TITLE!r}}})
        send("error", {{"message": "no such session " + {TITLE!r}, "exit_code": 2}})
    """)
    out, code = on_terminal("pull", "evilhost", "x")
    assert code == 2, out
    assert b"\x1b" not in out and b"\x07" not in out, out
    assert rb"rw: evilhost: \e]0;PWNED-TITLE\x07\e[2J" in out
    assert rb"rw: evilhost: no such session \e]0;PWNED-TITLE\x07\e[2J" in out


# -- 2. a malformed report is one line and an unknown outcome, never a traceback ------------


MALFORMED = {
    "only a result": ('send("report", {"result": "passed"})', "exit_code is missing"),
    "request a number": ('send("report", dict(REPORT, request=5))', "request is not an object"),
    "no cwd": (
        'send("report", dict(REPORT, request={"command": ["x"]}))',
        "request.cwd is missing",
    ),
    "reverted not text": (
        'send("report", dict(REPORT, reverted=[1, 2]))',
        "reverted is not a list of text",
    ),
    "passed with a trigger": ('send("report", dict(REPORT, result="passed"))', "trigger"),
    "exit code that lies": ('send("report", dict(REPORT, exit_code=0))', "exit_code 0"),
    "not json": ('frame("report", b"{not json")', "not JSON"),
    "a list": ('frame("report", b"[1, 2]")', "not a JSON object"),
    "nested deep": ('frame("report", b"[" * 100000)', "not JSON"),
    "huge": ('out.write(b"report 67108865\\n"); out.flush()', "over the 67108864"),
    "note of a number": ('send("note", {"message": 5})', "the remote's note is malformed"),
    "error without message": ('send("error", {"exit_code": 2})', "message is missing"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_a_malformed_report_is_one_line_and_its_outcome_unknown(evil, rw_home, case):
    code, said = MALFORMED[case]
    evil(f"REPORT = {a_report()!r}\n{code}\nimport time; time.sleep(0.2)\n")
    proc = piped("guard", "--host", "evilhost", "--", "./deploy.sh")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr
    [line] = [x for x in proc.stderr.splitlines() if "malformed" in x]
    assert line.startswith("rw: evilhost: no report (the remote's ")
    assert said in line and line.endswith("was rolled back there is unknown)"), line
    assert "HALTED" not in proc.stderr and "passed" not in proc.stderr.replace(line, "")
    assert stored_sessions(rw_home) == 0


def test_a_malformed_report_in_the_recorded_run_is_not_stored(evil, rw_home):
    now = time.time()
    run = {
        "session": {"id": "20261207-000000-abcdef12", "started_at": now},
        "step": {"command": "x", "started_at": now},
        "report": {"result": "passed"},
    }
    evil(f"""
        send("report", {a_report()!r})
        send("session", {run!r})
    """)
    proc = piped("guard", "--host", "evilhost", "--", "./deploy.sh")
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.returncode == 1, proc.stderr  # the report itself was sound: halted
    assert "the run could not be stored here: the remote's report is malformed" in proc.stderr
    assert stored_sessions(rw_home) == 0


# -- 3. rw pull stores each session as it comes, and bounds what it takes ------------------


def document(i: int, pad: int = 0) -> dict:
    now = time.time()
    return {
        "format": "rw-session",
        "version": 1,
        "session": {"id": f"20261207-00000{i}-abcdef1{i}", "name": f"s{i}", "started_at": now},
        "steps": [
            {"step": 1, "command": f"echo {i}", "started_at": now, "output": "x" * pad}
        ],  # fmt: skip
    }


def test_rw_pull_stores_each_session_as_it_arrives(evil, rw_home):
    # The remote waits, after its first session, until it is in the store here.
    evil(f"""
        import sqlite3, time
        send("document", {document(1)!r})
        db = os.path.join(os.environ["RW_HOME"], "data", "rw.db")
        seen = False
        for _ in range(100):
            try:
                with sqlite3.connect(db) as c:
                    seen = c.execute("SELECT count(*) FROM sessions").fetchone()[0] == 1
            except sqlite3.Error:
                pass
            if seen:
                break
            time.sleep(0.1)
        send("note", {{"message": "first stored before the second was sent: %s" % seen}})
        send("document", {document(2)!r})
        send("end", {{}})
    """)
    proc = piped("pull", "evilhost")
    assert proc.returncode == 0, proc.stderr
    assert "first stored before the second was sent: True" in proc.stderr
    assert "2 sessions pulled" in proc.stderr


def test_rw_pull_refuses_a_session_too_big_and_keeps_those_before(evil, rw_home):
    evil(f"""
        send("document", {document(1)!r})
        out.write(b"document %d\\n" % ({MAX_DOCUMENT} + 1)); out.flush()
        out.write(b"x" * 1000000); out.flush()
        import time; time.sleep(30)
    """)
    started = time.monotonic()
    proc = piped("pull", "evilhost")
    assert time.monotonic() - started < 20  # refused at its header, not after 64 MiB
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        f"rw: evilhost: stopped: its next session ({MAX_DOCUMENT + 1} bytes) is over "
        f"the {MAX_DOCUMENT} bytes one session may be; the sessions before it are stored"
    )
    assert stored_sessions(rw_home) == 1


def test_rw_pull_stops_at_max_bytes_and_keeps_those_before(evil, rw_home):
    docs = [json.dumps(document(i, pad=3000)) for i in (1, 2, 3)]
    limit = len(docs[0]) + len(docs[1]) + 100
    evil(f"""
        for d in {docs!r}:
            frame("document", d.encode())
        send("end", {{}})
    """)
    proc = piped("pull", "evilhost", "--max-bytes", str(limit), "--json")
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert f"past {limit} bytes (--max-bytes); the sessions before it are stored" in proc.stderr
    assert [x["name"] for x in json.loads(proc.stdout)] == ["s1", "s2"]
    assert stored_sessions(rw_home) == 2


PEAK = r"""
import resource, subprocess, sys
proc = subprocess.run(sys.argv[1:], capture_output=True)
sys.stderr.buffer.write(proc.stderr)
print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, proc.returncode)
"""


def test_rw_pulls_many_big_sessions_in_the_memory_of_one(evil, rw_home):
    # rw's largest resident set (KiB) pulling 1 and then 6 sessions of 6 MB:
    # each is stored as it arrives and let go, so 6 take what 1 takes.
    def peak(n: int) -> int:
        evil(f"""
            import time
            for i in range({n}):
                doc = {document(1)!r}
                doc["session"]["id"] = "20261207-00000%d-abcdef1%d" % (i, i)
                doc["steps"][0]["output"] = "line of output %d\\n" % i * 350000
                send("document", doc)
                del doc
            send("end", {{}})
        """)
        proc = subprocess.run([sys.executable, "-c", PEAK, RW, "pull", "evilhost"],
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        kib, code = proc.stdout.split()
        assert code == "0", proc.stderr
        return int(kib)

    one, six = peak(1), peak(6)
    assert stored_sessions(rw_home) == 6
    assert six < one + 20 * 1024, (one, six)


def test_a_flood_on_stderr_before_the_remote_answers_is_held_in_pieces(evil, tmp_path, monkeypatch):
    # 32 MB without a newline on ssh's stderr, then 100,000 lines, then the
    # run: rw keeps the last lines in pieces, not the flood.
    def peak(flood: bool) -> int:
        before = tmp_path / "before.py"
        before.write_text(
            'for _ in range(32):\n    sys.stderr.write("x" * 1000000)\nsys.stderr.write("\\n")\n'
            'sys.stderr.write("line\\n" * 100000); sys.stderr.flush()\n'
            if flood
            else ""
        )
        monkeypatch.setenv("RW_TEST_BEFORE", str(before))
        evil(f'send("report", {a_report(result="passed", trigger=None, exit_code=0)!r})')
        proc = subprocess.run(
            [sys.executable, "-c", PEAK, RW, "guard", "--host", "evilhost", "--", "./deploy.sh"],
            capture_output=True, text=True, timeout=300,
        )  # fmt: skip
        kib, code = proc.stdout.split()
        assert code == "0", proc.stderr
        assert "Traceback" not in proc.stderr
        return int(kib)

    quiet, flooded = peak(False), peak(True)
    assert flooded < quiet + 20 * 1024, (quiet, flooded)


def test_a_session_that_is_not_one_stops_the_pull_and_keeps_those_before(evil, rw_home):
    evil(f"""
        send("document", {document(1)!r})
        send("document", {{"format": "not rw's", "session": {{}}}})
        send("document", {document(2)!r})
        send("end", {{}})
    """)
    proc = piped("pull", "evilhost")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "rw: evilhost: not a session exported by rw export --format json"
    )
    assert stored_sessions(rw_home) == 1


# -- 4. what runs there is what was checked --------------------------------------------------


LOCAL_SSH = r"""
import os, sys
env = {k: v for k, v in os.environ.items() if k not in ("RW_HOME", "XDG_CACHE_HOME")}
env["HOME"] = os.environ["RW_TEST_THERE"]
os.chdir(env["HOME"])
os.execve("/bin/sh", ["sh", "-c", sys.argv[-1]], env)
"""


@pytest.mark.parametrize(
    "tamper",
    [
        ("rewind_daemon/remote/agent.py", "a", "\nopen(MARKER, 'w').write('agent.py ran')\n"),
        ("shlex.py", "w", "open(MARKER, 'w').write('a shlex of its own ran')\n"),
        ("rewind_daemon/guard/__init__.py", "a", "\nopen(MARKER, 'w').write('guard ran')\n"),
    ],
    ids=["appended", "a module that shadows the standard library", "a package's init"],
)
def test_the_bootstrap_runs_only_what_matches_the_checked_bundle(rw_home, tmp_path, monkeypatch,
                                                                 tamper):  # fmt: skip
    # The real bootstrap and agent, run here by sh as ssh would run them there.
    write_config(rw_home, "[daemon]\nautostart = false\n")
    there = tmp_path / "there"
    (there / "site").mkdir(parents=True)
    fake = tmp_path / "local_ssh.py"
    fake.write_text(LOCAL_SSH)
    monkeypatch.setenv("RW_SSH", f"{sys.executable} {fake}")
    monkeypatch.setenv("RW_TEST_THERE", str(there))
    first = piped("guard", "--host", "here", "--paths", "~/site", "--", "echo", "first")
    assert first.returncode == 0, first.stderr
    assert "sending rw" in first.stderr and first.stdout == "first\n"
    [where] = list((there / ".cache" / "rw" / "remote").iterdir())
    again = piped("guard", "--host", "here", "--paths", "~/site", "--", "echo", "again")
    assert again.returncode == 0 and "sending rw" not in again.stderr, again.stderr  # reused

    marker = tmp_path / "marker"
    name, mode, code = tamper
    with open(where / "lib" / name, mode) as fh:
        fh.write(code.replace("MARKER", repr(str(marker))))
    third = piped("guard", "--host", "here", "--paths", "~/site", "--", "echo", "third")
    assert third.returncode == 0, third.stderr
    assert third.stdout == "third\n"
    assert not marker.exists(), marker.read_text()
    assert "sending rw" in third.stderr  # not as shipped: replaced
    assert "MARKER" not in (where / "lib" / "rewind_daemon/remote/agent.py").read_text()
    assert not (where / "lib" / "shlex.py").exists()

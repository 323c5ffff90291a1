"""rw search: real shells (bash, zsh, rw record), the real daemon and store."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pexpect
import pytest

from rewind_daemon.store import Store

from ..conftest import RW, make_site, rw, rw_json, wait_for, write_config
from ..recorder.conftest import recorded  # noqa: F401 - a fixture
from ..recorder.test_output_store import HOOKED, TOKEN, only_session, wait_output


def search(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RW, "search", *args], capture_output=True, text=True, timeout=60, env=env,
        stdin=subprocess.DEVNULL,
    )  # fmt: skip


def found(*args: str) -> list[tuple[int, str]]:
    """(step, command) of each hit of `rw search ARGS --json`, in order."""
    proc = search(*args, "--json")
    assert proc.returncode in (0, 1), proc.stderr
    return [(h["step"], h["command"]) for h in json.loads(proc.stdout)]


def backlog(rw_home) -> tuple[int, int]:
    s = Store(rw_home / "data" / "rw.db", readonly=True)
    try:
        return s.search_backlog()
    finally:
        s.close()


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_commands_of_live_shells_are_found_newest_first_with_each_filter(
    daemon, shells, tmp_path, kind
):
    app, other = tmp_path / "srv" / "app", tmp_path / "srv" / "app2"
    app.mkdir(parents=True)
    other.mkdir()
    sh = shells(kind)
    for line in [
        "rw name web",  # 1
        f"cd {app}",  # 2
        "echo nginx-reload /etc/nginx/nginx.conf",  # 3
        "ls /nonexistent/nginx.conf",  # 4: fails
        f"cd {other}",  # 5
        "echo restart Nginx",  # 6
        "echo unrelated",  # 7
    ]:
        sh.run(line)
    sid = sh.session_id()
    proc = search("nginx")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert [ln.split()[:3] for ln in lines] == [
        ["web", "6", "0"],
        ["web", "4", "2"],
        ["web", "3", "0"],
    ]
    assert lines[1].endswith("ls /nonexistent/nginx.conf")
    hits = rw_json("search", "nginx")
    assert [(h["step"], h["exit_code"], h["session"], h["session_name"]) for h in hits] == [
        (6, 0, sid, "web"), (4, 2, sid, "web"), (3, 0, sid, "web"),
    ]  # fmt: skip
    first = hits[0]
    assert first["command"] == "echo restart Nginx" and first["cwd"] == str(other)
    assert first["match"] == {"in": "command", "line": "echo restart Nginx", "line_number": 1,
                              "spans": [[13, 18]], "line_cut": False}  # fmt: skip
    assert {"started_at", "duration_ms", "pipestatus", "rw_command"} <= set(first)
    # Filters
    assert found("nginx", "--failed") == [(4, "ls /nonexistent/nginx.conf")]
    assert [n for n, _ in found("nginx", "--cwd", str(app))] == [4, 3]
    assert [n for n, _ in found("nginx", "--cwd", str(tmp_path / "srv"))] == [6, 4, 3]
    assert found("nginx", "--cwd", str(tmp_path / "srv" / "ap")) == []  # not a prefix of names
    assert [n for n, _ in found("nginx", "--session", "web")] == [6, 4, 3]
    assert [n for n, _ in found("nginx", "--since", "1h")] == [6, 4, 3]
    assert found("nginx", "--until", "1h") == []
    assert found("nginx", "--since", "2999-01-01") == []
    # Words: where a word starts, a prefix of the last one; case unless a capital is typed
    assert [n for n, _ in found("/etc/nginx/ngin")] == [3]
    assert [n for n, _ in found("nginx.co")] == [4, 3]
    assert found("ginx") == [] and search("ginx").returncode == 1
    assert [n for n, _ in found("ginx", "--regex")] == [6, 4, 3]
    assert [n for n, _ in found("Nginx")] == [6]
    assert [n for n, _ in found("NGINX", "-i")] == [6, 4, 3]
    assert [n for n, _ in found("nginx", "-s")] == [4, 3]
    assert [n for n, _ in found(r"^ls\s", "-E")] == [4]
    # The limit: the newest, and a note that there is more
    limited = search("nginx", "--limit", "2")
    assert [ln.split()[1] for ln in limited.stdout.splitlines()] == ["6", "4"]
    assert limited.stderr == "rw: more than 2 steps match; --limit N shows more\n"
    # Typed in the shell, rw search does not find itself (it is stored before it runs).
    typed = sh.run("rw search nginx").splitlines()
    assert [ln.split()[1] for ln in typed] == ["6", "4", "3"]
    assert [ln.split()[1] for ln in search("nginx").stdout.splitlines()] == ["8", "6", "4", "3"]
    # Everything is in the index once rw search has asked the daemon
    assert backlog(daemon) == (0, 0)


@pytest.mark.parametrize(
    "args, message",
    [
        (["("], None),  # not a regex: found as typed
        (["(", "--regex"], "rw: bad regex '(': missing ), unterminated subpattern"),
        (["x", "--since", "last tuesday"], "rw: cannot read 'last tuesday' as a time"),
        (["x", "--until", "2026-13-45"], "rw: cannot read '2026-13-45' as a time"),
        (["x", "--session", "nosuch"], "rw: no session named or numbered 'nosuch'"),
        (["x", "-i", "-s"], "rw: --ignore-case and --case-sensitive are one or the other"),
        ([""], "rw: the pattern is empty"),
        (["x", "--limit", "0"], "Error: Invalid value for '--limit'"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(daemon, shells, args, message):
    shells("bash").run("echo '(x'")
    proc = search(*args)
    if message is None:
        assert proc.returncode == 0 and proc.stdout.endswith("echo '(x'\n")
        return
    assert proc.returncode == 2, proc
    assert proc.stdout == ""
    assert message in proc.stderr and "Traceback" not in proc.stderr
    assert len([ln for ln in proc.stderr.splitlines() if ln.startswith(("rw:", "Error"))]) == 1


def test_recorded_output_is_searched_with_output_and_secrets_are_never_found(
    daemon,
    recorded,  # noqa: F811 - the fixture
):
    sh = recorded("bash", rc=HOOKED["bash"])
    # (the words looked for are in the output alone, not in the commands)
    sh.run('u=Una; echo first; echo "E: ${u}ble to locate package rwtest-nope" >&2; false')
    sh.run(f"echo token {TOKEN} printed")
    sh.run("printf 'Reading lists\\nE: %sble to fetch some archives\\n' Una")
    sh.run("echo plain")
    sid = only_session()
    for n in range(1, 5):
        wait_output(sid, n)
    assert search("Unable").returncode == 1  # commands only, by default
    hits = rw_json("search", "--output", "E: Unable")
    assert [(h["step"], h["exit_code"], h["match"]["in"]) for h in hits] == [
        (3, 0, "output"), (1, 1, "output"),
    ]  # fmt: skip
    assert hits[0]["match"]["line"] == "E: Unable to fetch some archives"
    assert hits[0]["match"]["line_number"] == 2 and hits[0]["match"]["spans"] == [[0, 9]]
    assert hits[1]["match"]["line"] == "E: Unable to locate package rwtest-nope"
    assert [h["step"] for h in rw_json("search", "--output", "unable", "--failed")] == [1]
    text = search("--output", "E: Unable").stdout.splitlines()
    assert text[0].split()[1:3] == ["3", "0"] and "printf 'Reading lists" in text[0]
    assert text[1].strip() == "2: E: Unable to fetch some archives"
    # A command that matches is shown as the command, not its output.
    assert rw_json("search", "--output", "printf")[0]["match"]["in"] == "command"
    # The secret the command printed is stored nowhere, so found nowhere: not
    # by its words, its prefix or a regex over every step.
    for args in ([TOKEN], [TOKEN[:12]], ["ghp_", "--regex"], ["Zx9Zx9", "--regex"]):
        assert found("--output", *args) == [], args
    assert [n for n, _ in found("--output", "token")] == [2]
    # On a terminal the match is in colour.
    term = pexpect.spawn(RW, ["search", "--output", "fetch"], env=dict(os.environ))
    term.expect(pexpect.EOF)
    assert b"\x1b[31m\x1b[1mfetch\x1b[0m" in term.before
    assert "\x1b" not in search("--output", "fetch").stdout  # not into a pipe


def test_gc_takes_dropped_outputs_out_of_the_index(
    rw_home,
    recorded,  # noqa: F811 - the fixture
):
    rw("daemon", "start")
    sh = recorded("bash", rc=HOOKED["bash"])
    for i in range(1, 6):
        # (prints "marker1 markerall": words of the output, not of the command)
        sh.run(f"head -c 20000 /dev/urandom | base64 -w 100; m=mark; echo ${{m}}er{i} ${{m}}erall")
    sid = only_session()
    for i in range(1, 6):
        wait_output(sid, i)
    assert [h["step"] for h in rw_json("search", "--output", "markerall")] == [5, 4, 3, 2, 1]
    db = rw_home / "data" / "rw.db"

    def index_rows() -> tuple[set[int], set[int]]:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            words = {r[0] for r in con.execute("SELECT rowid FROM search_outputs")}
            stored = {r[0] for r in con.execute(
                "SELECT s.search_id FROM step_outputs o JOIN steps s"
                " ON s.session = o.session AND s.number = o.number WHERE s.search_id > 0"
                " AND (o.session, o.number) NOT IN (SELECT session, number FROM search_pending)"
            )}  # fmt: skip
            return words, stored
        finally:
            con.close()

    words, stored = index_rows()
    assert len(words) == 5 and words == stored
    con = sqlite3.connect(db)
    sizes = dict(con.execute(
        "SELECT number, length(raw) + length(text) + coalesce(length(timing), 0) FROM step_outputs"
    ).fetchall())  # fmt: skip
    con.close()
    write_config(rw_home, f"[record]\nmax_total_output = {sizes[4] + sizes[5] + 100}\n")
    assert "recorded output of 3 step(s)" in rw("gc").stdout
    assert [h["step"] for h in rw_json("search", "--output", "markerall")] == [5, 4]
    assert found("--output", "marker1") == [] and found("--output", "marker3") == []
    words, stored = index_rows()
    assert len(words) == 2 and words == stored  # no words left of what gc dropped
    con = sqlite3.connect(db)
    con.execute("INSERT INTO search_outputs (search_outputs) VALUES ('integrity-check')")
    con.close()


def test_replays_guarded_runs_and_imports_are_found(daemon, shells, tmp_path):
    work = tmp_path / "work"
    sh = shells("bash")
    sh.run("rw name job")
    sh.run(f"mkdir -p {work} && cd {work}")
    sh.run("echo WARNING: replayword here")
    replayed = subprocess.run(
        [RW, "replay", "job", "--from", "2"], capture_output=True, text=True,
        stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert replayed.returncode == 0, replayed.stderr
    replay_id = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    hits = rw_json("search", "--output", "replayword")
    # the live step (its command) and the replay's (command, and output)
    assert [(h["session"], h["match"]["in"]) for h in hits] == [
        (replay_id, "command"), (sh.session_id(), "command"),
    ]  # fmt: skip
    live = sh.session_id()
    assert [h["session"] for h in rw_json("search", "WARNING: replayword")] == [replay_id, live]
    out_hits = rw_json("search", "--output", "--regex", "^WARNING")
    assert [(h["session"], h["match"]["in"]) for h in out_hits] == [(replay_id, "output")]
    site = make_site(tmp_path)
    guarded = subprocess.run(
        [RW, "guard", "--paths", str(site), "--", "sh", "-c", "w=guard; echo ${w}word printed"],
        capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
    )  # fmt: skip
    assert guarded.returncode == 0, guarded.stderr
    guard_hits = rw_json("search", "--output", "guardword printed")
    assert [h["match"]["in"] for h in guard_hits] == ["output"]
    assert rw_json("sessions")[0]["origin"] == "guard"
    assert guard_hits[0]["session"] == rw_json("sessions")[0]["id"]
    history = tmp_path / "hist"
    history.write_text("kubectl rollout restart deploy/api\nls\n")
    rw("import", "bash", str(history))
    hit = rw_json("search", "rollout restart")
    assert [(h["step"], h["command"], h["session_name"]) for h in hit] == [
        (1, "kubectl rollout restart deploy/api", "import-bash-history"),
    ]  # fmt: skip


def test_steps_not_indexed_yet_are_found_and_the_daemon_indexes_them(daemon, tmp_path):
    rw("daemon", "stop")  # imports write the store directly: nothing indexes them now
    history = tmp_path / "hist"
    history.write_text("".join(f"echo step{i} pending-word\n" for i in range(1, 301)))
    rw("import", "bash", str(history))
    assert backlog(daemon) == (300, 0)
    hits = found("pending-word", "--limit", "400")
    assert [n for n, _ in hits] == list(range(300, 0, -1))
    assert [n for n, _ in found("step17 pending")] == [17]
    assert [n for n, _ in found("step17")] == [179, 178, 177, 176, 175, 174, 173, 172, 171, 170, 17]
    assert backlog(daemon) == (300, 0)  # (read, not indexed: the daemon is stopped)
    rw("daemon", "start")
    wait_for(lambda: backlog(daemon) == (0, 0), 20)  # when idle, without being asked
    assert [n for n, _ in found("pending-word", "--limit", "400")] == list(range(300, 0, -1))
    assert [n for n, _ in found("step17 pending")] == [17]

"""Replay through the executor, with breakpoints, driven as a user would."""

from __future__ import annotations

import os
import signal
import subprocess

import pexpect
import pytest

from rewind_daemon.timeline.executor import Executor

from ..conftest import RW, rw, rw_json, steps_of


@pytest.fixture
def recorded(daemon, shells, tmp_path):
    """A deploy-like session: cd, export, a function, files, a failure."""
    work = tmp_path / "work"
    sh = shells("bash")
    for line in [
        "rw name job",
        f"mkdir -p {work} && cd {work}",
        "export STAGE=one",
        "greet() { echo hello-$1; }",
        "greet $STAGE > greeting.txt",
        "ls missing-file",
        "echo WARNING: disk is $STAGE",
        "echo done > done.txt",
    ]:
        sh.run(line)
    return work


def replay(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RW, "replay", *args], capture_output=True, text=True, stdin=subprocess.DEVNULL,
        timeout=60,
    )  # fmt: skip


def test_executor_keeps_state_between_steps(tmp_path):
    with Executor(str(tmp_path), dict(os.environ)) as ex:
        assert ex.run("cd /usr && export RW_X=1").exit_code == 0
        ex.run("f() { echo f-$1; }; alias hi='echo hi'")
        r = ex.run("f $RW_X; hi; pwd; read line; echo read=$line; (exit 3)")
        assert r.output == b"f-1\nhi\n/usr\nread=\n" and r.exit_code == 3
        assert r.cwd == "/usr" and r.env["RW_X"] == "1"
        assert ex.run("false | true").pipestatus == "1 0"
        assert ex.run("exit 4").exit_code is None


def test_replay_carries_state_and_is_recorded(recorded):
    work = recorded
    for f in ("greeting.txt", "done.txt"):
        (work / f).unlink()
    proc = replay("job", "--from", "2")
    assert proc.returncode == 0, proc.stderr
    assert "WARNING: disk is one" in proc.stdout
    assert (work / "greeting.txt").read_text() == "hello-one\n"
    assert (work / "done.txt").read_text() == "done\n"
    replayed = next(s for s in rw_json("sessions") if s["origin"] == "replay")
    assert replayed["parent"] == rw_json("log", "job")[0]["session"]
    steps = steps_of(replayed["id"])
    assert [s["command"] for s in steps[1:]] == [s["command"] for s in steps_of("job")[1:]]
    assert [s["exit_code"] for s in steps[1:]] == [0, 0, 0, 0, 2, 0, 0]


def test_without_a_terminal_a_breakpoint_stops_with_exit_1(recorded):
    rw("breakpoint", "add", "job", "--on-error")
    proc = replay("job", "--from", "2")
    assert proc.returncode == 1
    assert "stopped at step 7" in proc.stderr and "on error" in proc.stderr
    assert "done" not in proc.stdout
    assert replay("job", "--from", "2", "--no-breakpoints").returncode == 0


def test_breakpoint_add_list_rm(recorded):
    bad = rw("breakpoint", "add", "job", "--pattern", "([unclosed", check=False)
    assert bad.returncode == 2 and "invalid regex" in bad.stderr
    assert rw_json("breakpoint", "list", "job") == []
    rw("breakpoint", "add", "job", "--step", "3", "--on-error")
    listed = rw_json("breakpoint", "list", "job")
    assert [b["kind"] for b in listed] == ["step", "on-error"]
    rw("breakpoint", "rm", "job", str(listed[0]["id"]))
    assert [b["kind"] for b in rw_json("breakpoint", "list", "job")] == ["on-error"]
    assert rw("breakpoint", "rm", "job", "999", check=False).returncode == 2


def spawn_replay(*args: str) -> pexpect.spawn:
    p = pexpect.spawn(
        RW, ["replay", *args], encoding="utf-8", timeout=20, env=dict(os.environ),
        dimensions=(40, 250),
    )  # fmt: skip
    p.delaybeforesend = None
    return p


PROMPT = "[b]ack [q]uit"


def test_pattern_on_output_and_step_breakpoints_pause_at_the_right_step(recorded):
    rw("breakpoint", "add", "job", "--pattern", "^WARNING", "--in", "output")
    rw("breakpoint", "add", "job", "--step", "5")
    p = spawn_replay("job", "--from", "2")
    p.expect_exact("paused before step 5 (breakpoint at step 5)")
    p.expect_exact(PROMPT)
    p.sendline("c")
    p.expect_exact("paused before step 8 (the step before hit breakpoint output matches")
    p.expect_exact(PROMPT)
    p.sendline("q")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 1
    assert not (recorded / "done.txt").exists() or (recorded / "done.txt").read_text()


def test_edit_skip_shell_and_back_at_the_prompt(recorded):
    work = recorded
    (work / "done.txt").unlink()
    p = spawn_replay("job", "--from", "3", "--step")
    # step 3: edit the export
    p.expect_exact("paused before step 3")
    p.expect_exact(PROMPT)
    p.sendline("e")
    p.expect_exact("rw: command")
    p.sendline("export STAGE=edited")
    # step 4: run it, then at step 5 go back: step 4 runs again
    p.expect_exact("paused before step 4")
    p.expect_exact(PROMPT)
    p.sendline("n")
    p.expect_exact("paused before step 5")
    p.expect_exact(PROMPT)
    p.sendline("b")
    p.expect_exact("paused before step 5")
    p.expect_exact(PROMPT)
    # a shell in the paused state; what it changes carries on
    p.sendline("h")
    p.expect_exact("(rw paused)")
    p.sendline("export STAGE=from-shell; cd ..")
    p.expect_exact("(rw paused)")
    p.sendline("exit")
    p.expect_exact("paused before step 5")
    p.expect_exact(PROMPT)
    p.sendline("c")  # greet $STAGE > greeting.txt, from the parent directory
    p.expect_exact("paused before step 6")
    p.expect_exact(PROMPT)
    p.sendline("s")  # skip `ls missing-file`
    for _ in range(2):
        p.expect_exact(PROMPT)
        p.sendline("c")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0
    assert (work.parent / "greeting.txt").read_text() == "hello-from-shell\n"
    assert (work.parent / "done.txt").read_text() == "done\n"
    replayed = next(s for s in rw_json("sessions") if s["origin"] == "replay")
    cmds = [s["command"] for s in steps_of(replayed["id"])]
    assert cmds[2:] == [
        "export STAGE=edited",
        "greet() { echo hello-$1; }",
        "greet() { echo hello-$1; }",  # run again after `back`
        "greet $STAGE > greeting.txt",
        "echo WARNING: disk is $STAGE",
        "echo done > done.txt",
    ]


def test_zsh_session_replays_in_zsh_with_its_syntax(daemon, shells, tmp_path):
    sh = shells("zsh")
    for line in [
        "rw name zjob",
        f"cd {tmp_path}",
        "export WORDS='alpha beta'",
        "greet() { print -l ${(s: :)WORDS} }",
        "greet > words.txt",
    ]:
        sh.run(line)
    (tmp_path / "words.txt").unlink()
    proc = replay("zjob", "--from", "2")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "words.txt").read_text() == "alpha\nbeta\n"


def test_zsh_paused_shell_carries_state(daemon, shells, tmp_path):
    sh = shells("zsh")
    for line in ["rw name zp", f"cd {tmp_path}", "export V=one", "echo $V > v.txt"]:
        sh.run(line)
    p = spawn_replay("zp", "--from", "4", "--step")
    p.expect_exact("paused before step 4")
    p.expect_exact(PROMPT)
    p.sendline("h")
    p.expect_exact("(rw paused)")
    p.sendline("export V=from-zsh-shell")
    p.expect_exact("(rw paused)")
    p.sendline("exit")
    p.expect_exact("paused before step 4")
    p.expect_exact(PROMPT)
    p.sendline("c")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0
    assert (tmp_path / "v.txt").read_text() == "from-zsh-shell\n"


def test_show_prints_a_replayed_steps_output(recorded):
    assert replay("job", "--from", "2").returncode == 0
    replayed = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    shown = rw("show", replayed, "7").stdout
    assert shown.endswith("output    (21 bytes)\nWARNING: disk is one\n")
    assert rw_json("show", replayed, "7")["output"] == "WARNING: disk is one\n"
    assert rw_json("show", "job", "7")["output"] is None  # live steps record no output


def test_skip_stays_in_step_mode(recorded):
    """`s` skips the step and pauses before the next, with --step and after `n`."""
    work = recorded
    p = spawn_replay("job", "--from", "5", "--step")
    for step in (5, 6):
        p.expect_exact(f"paused before step {step} (stepping)")
        p.expect_exact(PROMPT)
        p.sendline("s")
    p.expect_exact("paused before step 7 (stepping)")
    p.expect_exact(PROMPT)
    p.sendline("q")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 1
    rw("breakpoint", "add", "job", "--step", "4")
    (work / "done.txt").unlink()
    p = spawn_replay("job", "--from", "4")
    p.expect_exact("paused before step 4 (breakpoint at step 4)")
    p.expect_exact(PROMPT)
    p.sendline("n")  # run step 4, stop before 5
    p.expect_exact("paused before step 5 (stepping)")
    p.expect_exact(PROMPT)
    p.sendline("s")  # skip 5: still stepping
    p.expect_exact("paused before step 6 (stepping)")
    p.expect_exact(PROMPT)
    p.sendline("q")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 1
    assert not (work / "done.txt").exists()


def _parents() -> dict[int, int]:
    parent = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat", "rb") as f:
                    parent[int(d)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                pass
    return parent


def _kill_tree(root: int) -> None:
    """Stop, then kill, `root` and every process below it (replays of old code
    forked without end, each executor in a process group of its own)."""
    tree = {root}
    for _ in range(50):
        for pid in tree:
            try:
                os.kill(pid, signal.SIGSTOP)
            except ProcessLookupError:
                pass
        parent = _parents()
        more = {p for p, pp in parent.items() if pp in tree} - tree
        if not more:
            break
        tree |= more
    for pid in tree:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def fenced_replay(*args: str, timeout: float = 30, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.Popen(
        [RW, "replay", *args], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True, **kw,
    )  # fmt: skip
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_tree(proc.pid)
        proc.communicate()
        raise AssertionError(f"rw replay {' '.join(args)} still ran after {timeout}s") from None
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def test_a_replay_never_replays_rw_commands_or_itself(daemon, tmp_path):
    """A session that replays itself: by an rw step (skipped) and through a shell
    rw cannot see into (refused by the nested replay). Old code: nested replays
    without end."""
    from ..cli.test_cli_export import import_document

    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path)}
    import_document(
        tmp_path / "loop.json", {"name": "loop", "shell": "bash"},
        [
            {"command": "echo one >> ran.txt", **ok},
            {"command": f"{RW} replay loop", **ok},
            {"command": f"sh -c '{RW} replay loop; echo nested=$?' >> ran.txt 2>&1", **ok},
            {"command": f"RW_X=1 {RW} log loop >> ran.txt", **ok},
        ],
    )  # fmt: skip
    proc = fenced_replay("loop")
    assert proc.returncode == 0, proc.stderr
    assert "step 2 is rw's own, not run again" in proc.stderr
    assert "step 4 is rw's own, not run again" in proc.stderr
    ran = (tmp_path / "ran.txt").read_text()
    assert ran.startswith("one\nrw: this rw replay runs inside session "), ran
    assert ran.endswith("nested=2\n") and ran.count("one") == 1
    assert [s["origin"] for s in rw_json("sessions")].count("replay") == 1
    listed = replay("loop", "--dry-run").stdout
    assert f"    2  {RW} replay loop  (rw's own: not run)" in listed


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_shell_cannot_replay_its_own_session(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo one")
    out = sh.run("rw replay current; echo status=$?")
    assert "cannot replay it" in out and out.endswith("status=2"), out
    assert "    1  echo one\n" in sh.run("rw replay current --dry-run")  # only shows
    assert not [s for s in rw_json("sessions") if s["origin"] == "replay"]


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_replayed_rw_back_applies_what_it_changed(daemon, shells, kind, tmp_path):
    sh = shells(kind)
    sh.run("rw name travelled")
    sh.run(f"cd {tmp_path}")
    sh.run("export RW_A=one")
    sh.run("export RW_A=two; cd /")
    sh.run("rw back 1")  # back to RW_A=one, in tmp_path
    proc = fenced_replay("travelled", "--from", "2")
    assert proc.returncode == 0, proc.stderr
    assert "step 5 is rw's own, not run again: rw back 1" in proc.stderr
    assert f"applied: cd {tmp_path}, export RW_A" in proc.stderr
    replayed = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    step = rw_json("show", replayed, "5")
    assert step["command"] == "rw back 1" and step["rw_command"] == "back"
    assert step["cwd_after"] == str(tmp_path) and step["env"]["RW_A"] == "one"
    assert step["exit_code"] == 0 and step["output"] == ""


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_step_whose_directory_is_gone_never_runs_elsewhere(daemon, shells, kind, tmp_path):
    gone, elsewhere = tmp_path / "gone", tmp_path / "elsewhere"
    gone.mkdir()
    elsewhere.mkdir()
    sh = shells(kind)
    sh.run("rw name dirs")
    sh.run(f"cd {gone}")
    sh.run("echo written > out.txt")
    for f in gone.iterdir():
        f.unlink()
    gone.rmdir()
    listed = replay("dirs", "--dry-run").stdout
    assert f"echo written > out.txt  (its directory {gone} no longer exists)" in listed
    proc = fenced_replay("dirs", "--from", "2", cwd=elsewhere)
    assert proc.returncode == 1, proc.stderr
    assert f"stopped before step 3: its directory {gone} no longer exists" in proc.stderr
    assert "--create-dirs" in proc.stderr and "Traceback" not in proc.stderr
    assert list(elsewhere.iterdir()) == [] and not gone.exists()
    proc = fenced_replay("dirs", "--from", "2", "--create-dirs", cwd=elsewhere)
    assert proc.returncode == 0, proc.stderr
    assert f"made {gone}, the directory of step 3" in proc.stderr
    assert (gone / "out.txt").read_text() == "written\n"
    assert list(elsewhere.iterdir()) == []


@pytest.fixture(params=["bash", "zsh"])
def secret_session(daemon, shells, tmp_path, request):
    sh = shells(request.param)
    sh.run("rw name secret")
    sh.run(f"cd {tmp_path}")
    sh.run("export API_TOKEN='hunter2 x'")
    sh.run('echo "token=$API_TOKEN" > token.txt')
    assert rw_json("log", "secret")[2]["command"] == "export API_TOKEN=<redacted>"
    (tmp_path / "token.txt").unlink()
    return tmp_path


def test_a_redacted_step_without_a_terminal_stops_naming_it(secret_session):
    work = secret_session
    listed = replay("secret", "--dry-run").stdout
    assert "export API_TOKEN=<redacted>  (asks for a value stored redacted)" in listed
    env = {k: v for k, v in os.environ.items() if k != "API_TOKEN"}
    proc = fenced_replay("secret", "--from", "2", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "stopped before step 3: it holds a value stored redacted" in proc.stderr
    assert "API_TOKEN in: export API_TOKEN=<redacted>" in proc.stderr
    assert not (work / "token.txt").exists()
    # from the environment, when asked to
    proc = fenced_replay("secret", "--from", "2", "--env-secrets",
                         env={**env, "API_TOKEN": "from env's 'value'"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert (work / "token.txt").read_text() == "token=from env's 'value'\n"
    replayed = [s["id"] for s in rw_json("sessions") if s["origin"] == "replay"][0]
    stored = rw("show", replayed, "3", "--env", "--json").stdout
    assert "from env" not in stored and "API_TOKEN=<redacted>" in stored


def test_a_redacted_step_on_a_terminal_asks_for_the_value(secret_session):
    work = secret_session
    p = spawn_replay("secret", "--from", "2")
    p.expect_exact("step 3 holds a value stored redacted: API_TOKEN in: export API_TOKEN=")
    p.expect_exact("API_TOKEN (not shown, not stored)")
    p.sendline("typed value")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0
    assert "typed value" not in p.before  # not echoed
    assert (work / "token.txt").read_text() == "token=typed value\n"


def test_back_at_a_pause_when_the_directory_was_deleted(daemon, shells, tmp_path):
    work = tmp_path / "work"
    sh = shells("bash")
    for line in ["rw name del", f"mkdir -p {work} && cd {work}", "echo a > a.txt", "echo b > b"]:
        sh.run(line)
    p = pexpect.spawn(RW, ["replay", "del", "--from", "3", "--step"], encoding="utf-8",
                      timeout=20, env=dict(os.environ), cwd=str(work))  # fmt: skip
    p.expect_exact("paused before step 3")
    p.expect_exact(PROMPT)
    p.sendline("n")
    p.expect_exact("paused before step 4")
    p.expect_exact(PROMPT)
    for f in work.iterdir():
        f.unlink()
    work.rmdir()  # the replay's own directory and the steps'
    p.sendline("b")
    p.expect_exact(f"cannot go back to step 3: its directory {work} no longer exists")
    p.expect_exact(PROMPT)
    p.sendline("h")  # a shell in the paused state: there is no such directory
    p.expect_exact(f"no shell: the paused directory {work} no longer exists")
    p.expect_exact(PROMPT)
    p.sendline("q")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 1 and "Traceback" not in p.before


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_replay_keeps_bytes_that_are_not_utf8(daemon, shells, kind, tmp_path):
    sh = shells(kind)
    sh.run("rw name raw")
    sh.run(f"cd {tmp_path}")
    sh.run("export RW_A=$'\\xff\\xfe' RW_B=$'ok\\xffmid\\xc3\\xa9end'")
    sh.run('printf %s "$RW_A|$RW_B" > out.bin')
    sh.run("true")
    (tmp_path / "out.bin").unlink()
    rw("breakpoint", "add", "raw", "--step", "1")  # on rw's own step: pauses before step 2
    proc = fenced_replay("raw", "--from", "1")
    assert (
        proc.returncode == 1
        and "stopped at step 2 (the step before hit breakpoint at step 1 (on rw's own step 1))"
        in proc.stderr
    )
    proc = fenced_replay("raw", "--from", "4", "--no-breakpoints")  # from the stored state
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.bin").read_bytes() == b"\xff\xfe|ok\xffmid\xc3\xa9end"
    proc = fenced_replay("raw", "--from", "3", "--no-breakpoints")  # through the executor
    assert proc.returncode == 0, proc.stderr
    replayed = [s for s in rw_json("sessions") if s["origin"] == "replay"][0]["id"]
    env = rw_json("show", replayed, "5")["env"]
    assert env["RW_A"] == "\udcff\udcfe" and env["RW_B"] == "ok\udcffmidéend"


def test_a_killed_replay_whose_pid_came_back_blocks_nothing(daemon, tmp_path):
    """A replay killed before it could end its session leaves it open; when its pid
    is used again by a process above a new replay, that is not the old replay."""
    import time

    from rewind_daemon import paths
    from rewind_daemon.paths import new_session_id
    from rewind_daemon.store import Store

    from ..cli.test_cli_export import import_document

    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path)}
    source = import_document(tmp_path / "s.json", {"name": "old", "shell": "bash"},
                             [{"command": "echo ran > ran.txt", **ok}])  # fmt: skip
    store = Store(paths.resolve().db)
    with store.transaction():
        store.upsert_session(
            new_session_id(), parent_id=source, shell="bash", shell_version="",
            pid=os.getpid(), tty=None, started_at=time.time() - 3600, cwd=str(tmp_path),
            host="", user="", origin="replay",
        )  # fmt: skip
    store.close()
    proc = fenced_replay(source)  # this test's process is the replay's parent
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "ran.txt").read_text() == "ran\n"


def test_a_replayed_steps_output_is_stored_as_recorded_output_is(daemon, shells, tmp_path):
    """One model for all output: text and bytes, capped, redacted (a token the
    step prints is stored nowhere)."""
    sh = shells("bash")
    sh.run("rw name tok")
    sh.run(r"printf '\033[1mtoken\033[0m ghp_%s\n' $(printf 'Zx9%.0s' {1..12})")
    proc = replay("tok", "--from", "2")
    assert proc.returncode == 0, proc.stderr
    token = "ghp_" + "Zx9" * 12
    assert token in proc.stdout  # shown as it runs; never stored
    replayed = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    doc = rw_json("show", replayed, "2")
    assert doc["output"] == "token <redacted>\n"
    assert doc["output_bytes"] == len(f"\x1b[1mtoken\x1b[0m {token}\n")
    raw = subprocess.run([RW, "show", replayed, "2", "--raw"], capture_output=True).stdout
    assert raw == b"\x1b[1mtoken\x1b[0m <redacted>\n"
    db = b"".join(p.read_bytes() for p in (daemon / "data").glob("rw.db*"))
    assert token.encode() not in db

"""Replay through the executor, with breakpoints, driven as a user would."""

from __future__ import annotations

import os
import subprocess

import pexpect
import pytest

from rewind_daemon.executor import Executor

from .conftest import RW, rw, rw_json, steps_of


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
    assert shown.endswith("output:\nWARNING: disk is one\n")
    assert rw_json("show", replayed, "7")["output"] == "WARNING: disk is one\n"
    assert rw_json("show", "job", "7")["output"] is None  # live steps record no output

"""Going back in live bash and zsh shells: rw back and rw branch."""

from __future__ import annotations

import json
import os
import re

import pytest

from ..conftest import rw, rw_json, steps_of

SHELLS = ["bash", "zsh"]


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


def env_line(sh) -> str:
    return sh.run('echo "pwd=$PWD A=${RW_A-unset} B=${RW_B-unset} C=${RW_C-unset}"')


def test_back_restores_cwd_and_environment_and_branches(daemon, shells, kind, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    one.mkdir()
    two.mkdir()
    sh = shells(kind)
    sh.run(f"cd {one}")
    sh.run("export RW_A=1 RW_B='two words'")
    before = env_line(sh)  # step 3: the state `rw back 2` must give back
    sh.run(f"cd {two}; export RW_B=changed RW_C=$'new\\nline'; unset RW_A")
    sh.run("true")
    original = sh.session_id()
    out = sh.run("rw back 2")
    assert "went back to before step 4" in out and "files are not reverted" in out
    assert env_line(sh) == before
    sh.run("echo in-branch")
    branch = sh.session_id()
    assert branch != original
    session = next(s for s in rw_json("sessions") if s["id"] == branch)
    assert session["parent"] == original and session["branch_point"] == 3
    assert f"from {original} after step 3" in rw("sessions").stdout
    cmds = [s["command"] for s in steps_of(branch)]
    assert cmds[:3] == [f"cd {one}", "export RW_A=1 RW_B='two words'", cmds[2]]
    assert cmds[3:] == [cmds[3], "echo in-branch"]
    assert cmds[3].startswith("echo")  # the env_line command of the branch
    # the original history is untouched, including the `rw back` itself
    orig = [s["command"] for s in steps_of(original)]
    assert orig[-2:] == ["true", "rw back 2"] and len(orig) == 6
    assert steps_of(original)[-1]["exit_code"] == 0


def test_back_dry_run_changes_nothing(daemon, shells, kind, tmp_path):
    sh = shells(kind)
    sh.run("export RW_A=first")
    sh.run("export RW_A=second")
    sid = sh.session_id()
    out = sh.run("rw back --dry-run")
    assert "would go back to before step 2" in out
    assert "export RW_A=first (was second)" in out
    assert sh.run("echo $RW_A") == "second"
    assert sh.session_id() == sid


def test_back_leaves_redacted_values_alone(daemon, shells, kind):
    sh = shells(kind)
    sh.run("export GITHUB_TOKEN=first-token")
    sh.run("export GITHUB_TOKEN=second-token")
    out = sh.run("rw back 1")
    assert "GITHUB_TOKEN left as it is" in out
    assert sh.run("echo $GITHUB_TOKEN") == "second-token"


def test_back_errors(daemon, shells, kind):
    sh = shells(kind)
    sh.run("true")
    out = sh.run("rw back 5; echo status=$?")
    assert "cannot go back 5" in out and out.endswith("status=2")
    out = sh.run("command rw back; echo status=$?")
    assert "runs through the rw shell function" in out and out.endswith("status=2")
    proc = rw("back", check=False)  # not in a recorded shell at all
    assert proc.returncode == 2 and "not recorded by rw" in proc.stderr


def test_branch_from_last_failure_bash(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run(f"cd {tmp_path}")
    sh.run("export RW_A=before")
    sh.run("export RW_A=during; (exit 7)")
    sh.run("echo after")
    original = sh.session_id()
    out = sh.run("rw branch")
    assert "went back to before step 3" in out and "one Up-arrow away" in out
    assert sh.run("echo $RW_A") == "before"
    # Up-arrow past the echo just typed, twice, brings the failed command back
    sh.p.send("\x1b[A\x1b[A")
    sh.p.sendline("")
    sh.p.expect_exact("<rwp> ")
    branch = sh.session_id()
    assert branch != original
    cmds = [s["command"] for s in steps_of(branch)]
    assert cmds[-1] == "export RW_A=during; (exit 7)"
    assert steps_of(branch)[-1]["exit_code"] == 7
    session = next(s for s in rw_json("sessions") if s["id"] == branch)
    assert session["parent"] == original and session["branch_point"] == 2


def test_branch_from_last_failure_zsh(daemon, shells, tmp_path):
    sh = shells("zsh")
    sh.run(f"cd {tmp_path}")
    sh.run("export RW_A=before")
    sh.run("export RW_A=during; (exit 7)")
    out = sh.run("rw branch")
    assert "on your command line" in out
    # the failed command waits in the line editor: Enter runs it again
    sh.p.sendline("")
    sh.p.expect_exact("<rwp> ")
    branch = sh.session_id()
    steps = steps_of(branch)
    assert steps[-1]["command"] == "export RW_A=during; (exit 7)"
    assert steps[-1]["exit_code"] == 7
    assert [s["command"] for s in steps[:2]] == [f"cd {tmp_path}", "export RW_A=before"]


def test_branch_without_a_failure(daemon, shells, kind):
    sh = shells(kind)
    sh.run("true")
    out = sh.run("rw branch; echo status=$?")
    assert "no failed step" in out and out.endswith("status=2")


def test_branch_session_step_makes_a_branch(daemon, shells, kind):
    sh = shells(kind)
    sh.run("rw name deploy")
    sh.run("echo one")
    sh.run("echo two")
    out = rw("branch", "deploy", "2").stdout
    assert out.startswith("session ") and "a branch of" in out
    branch = out.split()[1].rstrip(":")
    session = next(s for s in rw_json("sessions") if s["id"] == branch)
    assert session["name"] == "deploy-branch-2"
    assert session["parent"] == sh.session_id() and session["branch_point"] == 2
    assert session["origin"] == "branch"
    assert session["ended_at"] is not None  # no shell records into it: not open
    listed = next(line for line in rw("sessions").stdout.splitlines() if branch in line)
    assert "(open)" not in listed
    assert [s["command"] for s in steps_of("deploy-branch-2")] == ["rw name deploy", "echo one"]
    assert rw_json("log", "deploy")[-1]["command"] == "echo two"  # the original is untouched
    named = rw("branch", "deploy", "1", "--name", "retry").stdout
    assert "(retry): a branch of" in named
    assert [s["command"] for s in rw_json("log", "retry")] == ["rw name deploy"]
    bad = rw("branch", "deploy", "9", check=False)
    assert bad.returncode == 2 and "steps 1 to" in bad.stderr


def test_branch_exec_opens_a_shell_in_the_state_after_the_step(daemon, shells, kind, tmp_path):
    work = tmp_path / "work"
    work.mkdir()
    sh = shells(kind)
    sh.run("rw name job")
    sh.run(f"cd {work}")
    sh.run("export RW_A=kept")
    sh.run("cd /; export RW_A=later")
    sh.p.sendline("rw branch job 3 --exec")
    if kind == "zsh":
        sh.p.sendline("PS1='<''rwp> '; unset zle_bracketed_paste; unsetopt prompt_sp")
    else:
        sh.p.sendline("PS1='<''rwp> '")
    sh.p.expect_exact("<rwp> ")  # the subshell's first prompt with our PS1
    assert sh.run('echo "$PWD $RW_A"') == f"{work} kept"
    sh.run("echo in-the-branch")
    opened = next(s for s in rw_json("sessions") if s["name"] == "job-branch-3")
    assert opened["ended_at"] is None  # its shell records into it
    sh.run("exit")
    assert sh.run("echo back-home $RW_A") == "back-home later"
    branch = rw_json("log", "job-branch-3")
    cmds = [s["command"] for s in branch]
    assert cmds[:3] == ["rw name job", f"cd {work}", "export RW_A=kept"]
    assert "echo in-the-branch" in cmds


def test_rewind_shows_and_restores_into_a_branch(daemon, shells, kind, tmp_path):
    work = tmp_path / "w"
    sh = shells(kind)
    sh.run("rw name job")
    sh.run(f"mkdir -p {work} && cd {work}")
    sh.run("export RW_A=one")
    sh.run("ls no-such-file")
    sh.run("export RW_A=two; cd /")
    shown = rw("rewind", "job", "4").stdout  # from outside: shows, changes nothing
    assert "✗" not in shown.split("→")[0]
    assert "→    4" in shown and "failed before step 4: none" in shown
    assert "export RW_A=one (was" not in shown  # this process never had RW_A
    assert "export RW_A=one" in shown
    failed = rw("rewind", "job", "5").stdout
    assert "failed before step 5: 4" in failed
    other = shells(kind)  # another shell: rewind restores job's state into it
    out = other.run("rw rewind job 4")
    assert "export RW_A=one" in out
    assert other.run('echo "$PWD $RW_A"') == f"{work} one"
    branch = other.session_id()
    session = next(s for s in rw_json("sessions") if s["id"] == branch)
    assert session["parent"] == sh.session_id() and session["branch_point"] == 3
    assert [s["command"] for s in steps_of(branch)][:3] == [
        "rw name job", f"mkdir -p {work} && cd {work}", "export RW_A=one",
    ]  # fmt: skip


def test_rewind_exec_replays_from_the_step(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("rw name job")
    sh.run(f"cd {tmp_path}")
    sh.run("echo replayed > out.txt")
    (tmp_path / "out.txt").unlink()
    proc = rw("rewind", "job", "2", "--exec")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "out.txt").read_text() == "replayed\n"


def test_rewind_over_a_step_with_an_empty_command(daemon, shells, tmp_path):
    from ..cli.test_cli_export import import_document

    ok = {"exit_code": 0, "cwd_before": str(tmp_path), "cwd_after": str(tmp_path)}
    sid = import_document(
        tmp_path / "empty.json",
        {"name": "empty", "shell": "bash"},
        [{"command": "echo one", **ok}, {"command": "", **ok}, {"command": "touch three", **ok}],
    )
    for step in ("2", "3"):
        proc = rw("rewind", sid, step, check=False)
        assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
        assert f"→ {step:>4}" in proc.stdout
    # replayed from the empty step, stopped there by a breakpoint: one line, exit 1
    rw("breakpoint", "add", sid, "--step", "2")
    proc = rw("rewind", sid, "2", "--exec", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "rw: stopped at step 2 (breakpoint" in proc.stderr
    rw("replay", sid, "--from", "2", "--no-breakpoints")
    assert (tmp_path / "three").exists()


def test_a_dry_run_and_the_real_back_land_on_the_same_step(daemon, shells, kind):
    """rw's own steps (the dry run, rw log) are not counted: `rw back 2` goes
    where `rw back 2 --dry-run` said it would."""
    sh = shells(kind)
    for value in ("one", "two", "three"):
        sh.run(f"export RW_A={value}")
    dry = sh.run("rw back 2 --dry-run")
    assert "would go back to before step 2" in dry and "export RW_A=one (was three)" in dry
    sh.run("rw log > /dev/null")
    sh.run("command rw show 1 > /dev/null")
    out = sh.run("rw back 2")
    assert "went back to before step 2" in out and "export RW_A=one (was three)" in out
    assert sh.run("echo $RW_A") == "one"
    # in the branch, the steps the user counts are again the ones typed
    sh.run("export RW_A=four")
    sh.run("rw log > /dev/null")
    assert "went back to before step" in sh.run("rw back 1")
    assert sh.run("echo $RW_A") == "one"
    failed = sh.run("rw back 9; echo status=$?")
    assert "3 finished step(s) besides rw's own" in failed and failed.endswith("status=2")


def test_log_marks_rws_own_steps(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo hello")
    sh.run("rw name marked")
    sh.run("RW_X=1 \\rw log > /dev/null")
    steps = rw_json("log", "marked")
    assert [s["rw_command"] for s in steps] == [None, "name", "log"]
    on_terminal = sh.run("rw log").splitlines()
    assert "echo hello" in on_terminal[1] and "\x1b[2m" not in on_terminal[1]
    for line in on_terminal[2:]:
        assert line.startswith("\x1b[2m") and line.endswith("\x1b[0m"), repr(line)
    assert "\x1b" not in rw("log", "marked").stdout  # dimmed only on a terminal


HEX = (
    'for v in RW_A RW_B RW_C; do printf "%s=" $v; '
    'printf %s "${(P)v}" | od -An -tx1 | tr -d " \\n"; echo; done'
)


def hex_values(sh) -> str:
    line = HEX if sh.kind == "zsh" else HEX.replace("${(P)v}", "${!v}")
    return sh.run(line)


def test_bytes_that_are_not_utf8_come_back_exact(daemon, shells, kind):
    """Bytes in, same bytes out: $'\\xff\\xfe', invalid UTF-8 amid text, a newline,
    through rw back in the same shell and rw rewind into another one."""
    sh = shells(kind)
    sh.run("rw name bytes")
    sh.run("export RW_A=$'\\xff\\xfe' RW_B=$'ok\\xffmid\\xc3\\xa9\\x80end' RW_C=$'one\\ntwo'")
    want = hex_values(sh)
    assert "RW_A=fffe" in want and "RW_B=6f6bff6d6964c3a9" in want and "RW_C=6f6e650a74776f" in want
    sh.run("export RW_A=plain RW_B=plain RW_C=plain")
    out = sh.run("rw back 1")
    assert "Traceback" not in out and "export RW_A=\\xff\\xfe (was plain)" in out
    assert hex_values(sh) == want
    other = shells(kind)
    other.run("export RW_A=other RW_B=other RW_C=other")
    assert "Traceback" not in other.run("rw rewind bytes 4")
    assert hex_values(other) == want
    shown = rw_json("show", "bytes", "3")["env"]
    assert shown["RW_A"] == "\udcff\udcfe"  # exact in JSON, as \udcff escapes
    assert "RW_A=\\xff\\xfe" in rw("show", "bytes", "3", "--env").stdout
    for fmt in ("sh", "md", "json"):  # exports too: no traceback, bytes kept
        exported = rw("export", "bytes", "--format", fmt, "--from", "3").stdout
        assert fmt != "sh" or "export RW_A=$'\\xff\\xfe'" in exported


TERMINAL = {"TMUX": "tmux-a/default,11,0", "TMUX_PANE": "%1", "WINDOWID": "111",
            "SSH_TTY": "/dev/pts/7", "TERM_SESSION_ID": "w0t0p0:a"}  # fmt: skip


def test_rewind_into_another_terminal_leaves_terminal_bound_variables(daemon, shells, kind):
    sh = shells(kind, env=TERMINAL)
    sh.run("rw name term")
    sh.run("export RW_A=one")
    sh.run("export RW_A=two")
    theirs = {"TMUX": "tmux-b/other,22,1", "TMUX_PANE": "%7", "WINDOWID": "222",
              "SSH_TTY": "/dev/pts/9", "TERM_SESSION_ID": "w1t1p1:b"}  # fmt: skip
    other = shells(kind, env=theirs)
    out = other.run("rw rewind term 3")
    assert "export RW_A=one" in out and "TMUX" not in out
    line = 'echo "$RW_A $TMUX $TMUX_PANE $WINDOWID $SSH_TTY $TERM_SESSION_ID"'
    assert other.run(line) == "one " + " ".join(theirs.values())
    other.run("rw back 1")  # going back in a branch leaves them too
    assert other.run(line).endswith(" ".join(theirs.values()))


def test_the_readme_lists_the_terminal_bound_variables():
    from pathlib import Path

    from rewind_daemon.timeline.travel import TERMINAL_BOUND

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("<!-- terminal-bound variables -->")[1].split("<!-- end -->")[0]
    listed = set(re.findall(r"`([A-Z_]+)`", section))
    assert listed == TERMINAL_BOUND


def test_back_and_branch_in_a_deleted_directory(daemon, shells, kind, tmp_path):
    sh = shells(kind)
    sh.run(f"cd {tmp_path}")
    sh.run("mkdir gone && cd gone")
    sh.run("export RW_A=1; ls missing-file")
    sh.run(f"rm -rf {tmp_path}/gone")
    out = sh.run("rw back 1 --dry-run; echo status=$?")
    assert "Traceback" not in out and out.endswith("status=0"), out
    out = sh.run("rw back 2; echo status=$?")
    assert "Traceback" not in out and out.endswith("status=0"), out
    assert "cannot cd to" in out and "no longer exists" in out
    assert sh.run("echo ${RW_A-unset}") == "unset"
    sh.run(f"cd {tmp_path} && mkdir again && cd again")
    sh.run("export RW_A=2; ls missing-file")
    sh.run(f"rm -rf {tmp_path}/again")
    out = sh.run("rw branch; echo status=$?")
    assert "Traceback" not in out and out.endswith("status=0"), out
    assert "went back to before step" in out and "cannot cd to" in out
    if kind == "zsh":
        sh.p.send("\x15")  # the failed command waits on the command line: clear it
    assert sh.run("echo ${RW_A-unset}") == "unset"


def test_branch_exec_from_a_deleted_directory_into_one_gone_too(daemon, tmp_path):
    import subprocess

    from ..cli.test_cli_export import import_document
    from ..conftest import RW

    gone = tmp_path / "gone"
    ok = {"exit_code": 0, "cwd_before": str(gone), "cwd_after": str(gone)}
    sid = import_document(tmp_path / "s.json", {"name": "x", "shell": "bash"},
                          [{"command": "echo hi", **ok}])  # fmt: skip
    gone.mkdir()
    script = f"cd {gone} && rmdir {gone} && echo 'pwd; exit 0' | {RW} branch {sid} 1 --exec"
    home = tmp_path / "home"
    home.mkdir()
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True,
                          env={**os.environ, "HOME": str(home)}, timeout=60)  # fmt: skip
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert proc.stdout.splitlines()[-1] == str(home)  # pwd, in the shell it opened


def test_bytes_that_are_not_utf8_in_the_environment_a_shell_starts_with_are_kept(
    daemon, shells, kind
):
    """The session's start record carries the environment the shell was given
    (zsh: its values raw); bytes that are not UTF-8 there come back exact."""
    sh = shells(kind, env={"RW_RAW": "a\udcff\udcfeb"})  # the bytes a, ff, fe, b
    sh.run("rw name rawstart")
    sh.run("export RW_RAW=plain")
    doc = json.loads(rw("export", "rawstart", "--format", "json").stdout)
    assert doc["start_env"]["RW_RAW"] == "a\udcff\udcfeb"

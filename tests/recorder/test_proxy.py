"""`rw record`: the proxy is invisible, restores the terminal on every way out,
never nests, records each step's output, and degrades to pass-through."""

from __future__ import annotations

import os
import pwd
import re
import shutil
import subprocess
import time

import pexpect
import pytest

from rewind_daemon.recorder.spool import read_steps

from ..conftest import BIN, RW, wait_for
from ..shell import PROMPT

SHELLS = ["bash", "zsh"]


def unmarked(text: str) -> str:
    return re.sub("\x1b]133;[^\x07]*\x07", "", text).strip("\n")


STOPPED = "rw record: output recording stopped ("


@pytest.mark.parametrize("kind", SHELLS)
def test_stty_size_follows_a_resize_of_the_outer_terminal(recorded, kind):
    sh = recorded(kind)
    assert sh.run("stty size") == "40 200"
    sh.p.setwinsize(30, 100)
    time.sleep(0.3)  # the shell may redraw its prompt on SIGWINCH
    sh.p.sendline("")
    sh.p.expect_exact(PROMPT)
    deadline = time.monotonic() + 5
    while sh.run("stty size") != "30 100":
        assert time.monotonic() < deadline, "the shell never saw the new size"


@pytest.mark.parametrize("kind", SHELLS)
def test_ctrl_c_and_ctrl_z_reach_the_shells_job_and_the_shell_survives(recorded, kind):
    sh = recorded(kind)
    pid = sh.run("echo $$")
    started = time.monotonic()
    sh.interrupt_running("sleep 100")
    assert time.monotonic() - started < 10
    assert sh.run("echo $$ alive") == f"{pid} alive"
    sh.p.sendline("sleep 100; echo after")
    time.sleep(0.5)
    sh.p.sendcontrol("z")
    sh.p.expect_exact(PROMPT)
    assert "sleep 100" in sh.run("jobs")
    sh.p.sendline("fg")
    time.sleep(0.5)
    sh.p.sendintr()
    sh.p.expect_exact(PROMPT)
    assert sh.run("jobs") == ""
    assert sh.run("echo $$ alive") == f"{pid} alive"


@pytest.mark.parametrize("kind", SHELLS)
def test_the_shell_gets_the_signal_dispositions_a_terminal_gives(recorded, kind):
    # Python ignores SIGPIPE: a shell inheriting that would see `yes | head` end
    # with yes failing on EPIPE instead of dying of SIGPIPE (141).
    status = "${PIPESTATUS[0]}" if kind == "bash" else "${pipestatus[1]}"
    assert recorded(kind).run(f"yes | head -1; echo {status}") == "y\n141"


@pytest.mark.parametrize("kind", SHELLS)
def test_bytes_reach_the_terminal_exactly_as_from_a_bare_shell(recorded, tmp_path, kind):
    data = tmp_path / "bytes"
    payload = (
        "héllo wörld ✓ 日本語 🎉\n".encode()
        + b"\x1b[1;31mred\x1b[0m \x1b[38;5;208morange\x1b[0m\n"
        + b"\x1b[?1049h\x1b[H\x1b[2Jfull screen\x1b[?1049l"  # the alternate screen and back
        + b"\x1b]133;A\x07\x1b]133;C;rw=nottoken:S1:1\x07\x1b]0;title\x07"  # others' OSCs
        + bytes(range(1, 256))
        + b"\nend\n"
    )
    data.write_bytes(payload)
    seen = {}
    for how in ("bare", "recorded"):
        if how == "bare":
            args = ["--norc", "--noprofile", "-i"] if kind == "bash" else ["-f", "-i"]
            p = pexpect.spawn(kind, args, env={"PATH": os.environ["PATH"], "TERM": "dumb"})
            p.sendline("PS1='<''rwp> '; unset zle_bracketed_paste 2>/dev/null")
            p.expect_exact(b"<rwp> ")
        else:
            p = recorded(kind, encoding=None).p
        p.sendline(f"cat {data}; echo DO''NE")
        p.expect_exact(b"DONE\r\n")
        seen[how] = p.before.split(b"\r\n", 1)[1]
        p.close(force=True)
    assert seen["recorded"] == seen["bare"]
    assert seen["recorded"].startswith("héllo wörld ✓ 日本語 🎉\r\n".encode())


@pytest.mark.parametrize("kind", SHELLS)
def test_100000_lines_pass_through_complete_and_are_spooled_whole(recorded, kind):
    sh = recorded(kind, marks=True)
    out = sh.run("seq 1 100000", timeout=60)
    assert out.split("\n") == [str(i) for i in range(1, 100001)]
    assert sh.exit_status() == 0
    (step, _exit) = read_steps(sh.spool)
    assert step.data == "".join(f"{i}\r\n" for i in range(1, 100001)).encode()


def test_without_the_c_loop_the_same_bytes_are_shown_and_spooled(recorded, tmp_path):
    # (rw installed without a compiler runs the recorder's loop in Python.)
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(
        "import sys\nsys.modules['rewind_daemon.recorder._relay'] = None  # (as if not built)\n"
    )
    sh = recorded("bash", marks=True, env={"PYTHONPATH": str(site)})
    out = sh.run("seq 1 100000", timeout=60)
    assert out.split("\n") == [str(i) for i in range(1, 100001)]
    assert sh.run("printf 'a\\033]133;A\\007b\\033[31mc\\n'") == "a\x1b]133;A\x07b\x1b[31mc"
    assert sh.exit_status() == 0
    steps = read_steps(sh.spool)
    assert [s.data for s in steps[:2]] == [
        "".join(f"{i}\r\n" for i in range(1, 100001)).encode(),
        b"a\x1b]133;A\x07b\x1b[31mc\r\n",
    ]


@pytest.mark.parametrize("kind", SHELLS)
def test_each_steps_output_is_spooled_exactly(recorded, kind):
    sh = recorded(kind, marks=True)
    assert sh.run("printf 'a\\000b \\033[32mgreen\\033[0m\\n'; echo err >&2") != ""
    sh.run(":")  # prints nothing
    sh.p.sendcontrol("c")  # Ctrl-C at an empty prompt: no step
    sh.p.expect_exact(PROMPT)
    sh.run("")
    # Two lines at once: each ends at a prompt of its own. What is typed while
    # a command runs is echoed into its output, so `false` waits for both.
    sh.p.sendline("echo 'pasted 1'\necho 'pasted 2'")
    sh.p.expect_exact(PROMPT)
    sh.p.expect_exact(PROMPT)
    sh.run("false")
    assert sh.exit_status() == 1
    steps = read_steps(sh.spool)
    assert [(s.seq, s.data, s.ended) for s in steps] == [
        (1, b"a\x00b \x1b[32mgreen\x1b[0m\r\nerr\r\n", True),
        (2, b"", True),
        (3, b"pasted 1\r\n", True),
        (4, b"pasted 2\r\n", True),
        (5, b"", True),
        (6, steps[-1].data, False),  # `exit`: the shell ends before its D
    ]
    assert steps[-1].data in (b"", b"exit\r\n")
    assert oct(sh.spool.stat().st_mode & 0o777) == "0o600"


@pytest.mark.parametrize("kind", SHELLS)
def test_the_exit_status_is_the_shells(recorded, kind):
    assert recorded(kind).exit_status("exit 7") == 7
    sh = recorded(kind)
    sh.p.sendline("kill -KILL $$")
    sh.p.expect(pexpect.EOF)
    sh.p.close()
    assert sh.p.exitstatus == 128 + 9


@pytest.mark.parametrize("kind", SHELLS)
def test_rw_record_in_a_recorded_terminal_does_not_stack_a_second_proxy(recorded, kind):
    sh = recorded(kind)
    before = sh.run("echo $RW_RECORD $$")
    out = sh.run("rw record; echo rc=$?")
    assert out.startswith("rw: this terminal is already recorded (rw record, pid ")
    assert out.endswith("rc=0") and len(out.split("\n")) == 2
    assert sh.run("echo $RW_RECORD $$") == before
    # One exit ends it all: no second shell was started.
    assert sh.exit_status("exit 3") == 3


def test_rw_record_inherited_from_another_terminal_does_not_stop_recording(recorded):
    stale = f"sometoken:{os.getpid()}:/dev/pts/999"
    sh = recorded("bash", env={"RW_RECORD": stale})
    value = sh.run("echo $RW_RECORD")
    assert value != stale and value.split(":")[2] == sh.run("tty")


STTY_EXITS = {
    "exit": ("exit 0", 0),
    "shell killed": ("kill -KILL $$", 137),
    "SIGTERM to rw record": ("p=${RW_RECORD#*:}; kill -TERM ${p%%:*}", 143),
    "SIGHUP to rw record": ("p=${RW_RECORD#*:}; kill -HUP ${p%%:*}", 129),
}


@pytest.mark.parametrize("how", [*STTY_EXITS, "internal error"])
def test_the_terminal_mode_is_restored_on_every_way_out(shells, tmp_path, how):
    outer = shells("bash", init=False)
    before = outer.run("stty -g")
    assert before
    rc = tmp_path / "inner.rc"
    rc.write_text("PS1='<in''ner> '\n")
    env = "RW_RECORD_FAULT=loop " if how == "internal error" else ""
    outer.p.sendline(f"{env}{BIN}/rw record bash -- --rcfile {rc} -i")
    outer.p.expect_exact("<inner> ")
    if how == "internal error":
        outer.p.send("x")
        outer.p.expect_exact(PROMPT)
        assert "rw: the recorder failed: injected fault" in outer.p.before
        status = 1
    else:
        line, status = STTY_EXITS[how]
        outer.p.sendline(line)
        outer.p.expect_exact(PROMPT)
    assert outer.run("echo $?") == str(status)
    assert outer.run("stty -g") == before


@pytest.mark.parametrize("kind", SHELLS)
@pytest.mark.parametrize("fault", ["splitter", "spool"])
def test_an_internal_fault_degrades_to_pass_through_and_the_shell_goes_on(recorded, kind, fault):
    sh = recorded(kind, marks=True, env={"RW_RECORD_FAULT": fault})
    out = sh.run("echo first")  # the fault, at the first step
    assert out.count(STOPPED) == 1 and "; your shell goes on" in out
    # From then on the bytes go through as they come, marks included.
    assert unmarked(out).endswith("first")
    pid = unmarked(sh.run("echo $$"))
    for i in range(5):
        assert unmarked(sh.run(f"echo line{i}")) == f"line{i}"
    assert unmarked(sh.run("seq 3")) == "1\n2\n3"
    assert unmarked(sh.run("echo $$")) == pid
    assert sh.exit_status("exit 5") == 5
    steps = read_steps(sh.spool) if sh.spool.exists() else []
    assert all(s.data == b"" for s in steps)


def test_output_is_in_the_spool_once_it_pauses_before_its_step_ends(recorded):
    # The spool's records wait while output comes in a burst, and are written
    # as soon as it pauses: a step that printed and then waits is in the spool.
    sh = recorded("bash", marks=True)
    sh.p.sendline("printf 'before-the-pause\\n'; sleep 5; echo after")
    sh.p.expect_exact("before-the-pause")
    wait_for(lambda: sh.spool.exists() and b"before-the-pause" in sh.spool.read_bytes(), 2)
    assert b"after" not in sh.spool.read_bytes()
    sh.p.expect_exact(PROMPT)
    assert [s.data for s in read_steps(sh.spool)][-1] == b"before-the-pause\r\nafter\r\n"


def test_the_last_bytes_are_shown_even_when_they_could_start_a_mark(rw_home):
    # ARGS after -- go to the shell: here a command, whose output ends with what
    # could be the start of a mark (held back, waiting for its end).
    p = pexpect.spawn(RW, ["record", "bash", "--", "-c", "printf 'last\\033]13'; exit 4"])
    p.expect(pexpect.EOF)
    p.close()
    assert p.before.endswith(b"last\x1b]13") and p.exitstatus == 4


@pytest.mark.parametrize("kind", SHELLS)
def test_what_is_typed_is_never_recorded(recorded, kind):
    sh = recorded(kind, marks=True)
    sh.p.sendline("read -rs pw; echo got ${#pw}")  # a password prompt: no echo
    time.sleep(0.3)
    sh.p.sendline("hunter2-secret")
    sh.p.expect_exact(PROMPT)
    assert "got 14" in sh.p.before and "hunter2" not in sh.p.before
    sh.run("echo typed-at-the-prompt >/dev/null")
    assert sh.exit_status() == 0
    spooled = sh.spool.read_bytes()
    assert b"hunter2" not in spooled and b"typed-at-the-prompt" not in spooled
    assert [s.data for s in read_steps(sh.spool)][:2] == [b"got 14\r\n", b""]


@pytest.mark.skipif(os.getuid() != 0, reason="mounting a small filesystem needs root")
def test_a_full_disk_stops_recording_once_and_the_shell_goes_on(recorded, rw_home):
    spool = rw_home / "data" / "spool"
    spool.mkdir(parents=True)
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(spool)]
    subprocess.run(mount, check=True)
    try:
        sh = recorded("bash", marks=True)
        out = sh.run("seq 1 100000 | tail -1; seq 1 20000", timeout=60)
        assert out.count(STOPPED) == 1
        assert "cannot write the output spool: No space left on device" in out
        assert unmarked(out).endswith("\n19999\n20000")
        assert unmarked(sh.run("echo still here")) == "still here"
        assert sh.exit_status("exit 9") == 9
    finally:
        subprocess.run(["umount", "-l", str(spool)], check=False)


def test_rw_record_stopped_from_outside_gives_the_terminal_back_until_fg(shells, tmp_path):
    outer = shells("bash", init=False)
    before = outer.run("stty -g")
    rc = tmp_path / "inner.rc"
    rc.write_text("PS1='<in''ner> '\n")
    outer.p.sendline(f"{BIN}/rw record bash -- --rcfile {rc} -i")
    outer.p.expect_exact("<inner> ")
    outer.p.sendline("p=${RW_RECORD#*:}; kill -TSTP ${p%%:*}")
    outer.p.expect_exact(PROMPT)  # the outer shell has its terminal back, as it was
    assert outer.run("stty -g") == before
    outer.p.sendline("fg")
    outer.p.sendline("echo in-$((6*7))")
    outer.p.expect_exact("in-42")
    outer.p.expect_exact("<inner> ")
    outer.p.sendline("exit 6")
    outer.p.expect_exact(PROMPT)
    assert outer.run("echo $?") == "6"
    assert outer.run("stty -g") == before


def test_without_a_terminal_rw_record_says_so(rw_home):
    proc = subprocess.run(
        [RW, "record", "bash"], stdin=subprocess.DEVNULL, capture_output=True, text=True
    )
    assert proc.returncode == 2
    assert proc.stderr == "rw: rw record needs a terminal: standard input is not one\n"


def test_the_login_shell_is_shell_then_the_passwd_entry(shells):
    sh = shells("bash", init=False)
    zsh = shutil.which("zsh")
    sh.p.sendline(f"SHELL={zsh} rw record -- -f -i")
    sh.p.sendline("echo zsh-$ZSH_VERSION; exit")
    sh.p.expect_exact("zsh-5")
    sh.p.expect_exact(PROMPT)
    out = sh.run("SHELL=/bin/sh rw record -- -c 'echo ran-$0'; echo rc=$?")
    login = pwd.getpwuid(os.getuid()).pw_shell
    if os.path.basename(login) in ("bash", "zsh"):
        assert out.split("\n")[-2:] == [f"ran-{login}", "rc=0"]
    else:
        assert out.split("\n")[-1] == "rc=2"


def test_a_shell_rw_does_not_record_is_one_line_and_exit_2(rw_home):
    proc = subprocess.run([RW, "record", "fish"], capture_output=True, text=True)
    assert (proc.returncode, proc.stderr) == (2, "rw: rw record records bash or zsh, not 'fish'\n")


def test_typing_ahead_of_a_busy_shell_never_stops_its_output(recorded):
    # 2,000 lines typed while the shell prints and does not read: more than the
    # terminal's input buffer holds. The proxy queues them; output keeps flowing.
    # (bash: zsh itself drops typed-ahead lines here, with or without rw.)
    sh = recorded("bash")
    sh.p.sendline("for i in $(seq 1 30); do echo tick$i; sleep 0.05; done; wc -l; echo D''ONE")
    typed = "".join(f"typed line {i:04d}\n" for i in range(2000))
    sh.p.send(typed)
    sh.p.sendcontrol("d")
    sh.p.expect_exact("tick30", timeout=30)
    sh.p.expect_exact("DONE", timeout=60)
    assert sh.p.before.split()[-1] == "2000"
    sh.p.expect_exact(PROMPT)
    assert sh.run("echo alive") == "alive"


@pytest.mark.parametrize("kind", SHELLS)
def test_a_background_job_printing_at_the_prompt_belongs_to_no_step(recorded, kind):
    sh = recorded(kind, marks=True)
    sh.run("{ sleep 0.5; echo bg-late; } &")
    sh.p.expect_exact("bg-late", timeout=10)  # printed while the shell waits at its prompt
    time.sleep(0.2)
    sh.run("echo next")
    assert sh.exit_status() == 0
    steps = read_steps(sh.spool)
    assert not [s for s in steps if b"bg-late" in s.data]
    assert b"next\r\n" in [s.data for s in steps]

"""rw's own hooks mark each step for `rw record`: the real bash and zsh, with
rc files as users have them, under the real recorder; each step's output in the
output spool is exactly what the command printed."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pexpect
import pytest

from rewind_daemon.capture import records
from rewind_daemon.recorder.spool import OUTPUT_SUFFIX, read_steps

from ..conftest import BIN, RW, rw, write_config
from ..shell import PROMPT, Shell
from .test_tmux import Tmux

SHELLS = ["bash", "zsh"]
# What the user's rc file holds before and after rw's line (zsh: no bracketed
# paste or PROMPT_SP under pexpect, as tests/shell.py does).
BEFORE = {
    "bash": "PS1='<rwp> '\n",
    "zsh": "PS1='<rwp> '; unset zle_bracketed_paste; unsetopt prompt_sp\n",
}
INIT = 'eval "$(rw init {kind}{flags})"\n'


def write_rc(home: Path, kind: str, text: str) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / (".bashrc" if kind == "bash" else ".zshrc")).write_text(text)


class Started(Shell):
    """A real terminal shell started as `argv` (`rw record KIND`, or the shell
    itself) with the rc file in `home`, driven as Shell is."""

    def __init__(self, argv: list[str], *, home: Path, rw_home: Path, env: dict | None = None):
        self.kind = "zsh" if "zsh" in argv else "bash"
        self.bin_dir = BIN
        self.env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "RW_HOME": str(rw_home),
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "SHELL": shutil.which(self.kind) or self.kind,
            **(env or {}),
        }
        self.p = pexpect.spawn(
            argv[0], argv[1:], env=self.env, encoding="utf-8", timeout=20, cwd=str(home),
            dimensions=(40, 200),
        )  # fmt: skip
        self.p.delaybeforesend = None
        self.p.expect_exact(PROMPT)

    def exit(self, line: str = "exit") -> int | None:
        self.p.sendline(line)
        self.p.expect(pexpect.EOF)
        self.p.close()
        return self.p.exitstatus


@pytest.fixture
def started(no_autostart, tmp_path):
    """Factory: started(["rw", "record", "bash"], rc=...). No daemon runs, so
    the spools stay as the shells and the recorder wrote them."""
    opened: list[Started] = []
    home = tmp_path / "home"

    def make(argv: list[str], rc: str, env: dict | None = None) -> Started:
        kind = "zsh" if "zsh" in argv else "bash"
        write_rc(home, kind, rc)
        sh = Started(argv, home=home, rw_home=no_autostart, env=env)
        opened.append(sh)
        return sh

    yield make
    for sh in opened:
        sh.close()


def outputs(rw_home: Path) -> dict[str, list]:
    """Each session's steps in the output spools: {session: [StepOutput]}."""
    spool = rw_home / "data" / "spool"
    return {
        f.name.removesuffix(OUTPUT_SUFFIX): read_steps(f)
        for f in sorted(spool.glob(f"*{OUTPUT_SUFFIX}"))
    }


def only_session(rw_home: Path) -> list:
    found = outputs(rw_home)
    assert len(found) == 1, found
    (steps,) = found.values()
    sid = next(iter(found))
    assert (rw_home / "data" / "spool" / f"{sid}.spool").exists()  # the hooks' own session
    return steps


def recorded_rc(kind: str, after: str = "") -> str:
    return BEFORE[kind] + INIT.format(kind=kind, flags="") + after


@pytest.mark.parametrize("kind", SHELLS)
def test_each_steps_output_is_exact_with_the_real_hooks(started, no_autostart, kind):
    sh = started([RW, "record", kind], recorded_rc(kind))
    sh.run("echo out; echo err >&2")
    sh.run("printf 'a\\tb \\033[31mred\\033[0m\\n'")
    sh.run("ls /nonexistent-rw")  # fails, on stderr
    sh.run("false")
    sh.run("{ echo into-the-file; } >/dev/null; echo shown")  # a mark is never redirected
    assert sh.exit("exit 3") == 3
    steps = only_session(no_autostart)
    assert [(s.seq, s.data, s.ended) for s in steps] == [
        (1, b"out\r\nerr\r\n", True),
        (2, b"a\tb \x1b[31mred\x1b[0m\r\n", True),
        (3, b"ls: cannot access '/nonexistent-rw': No such file or directory\r\n", True),
        (4, b"", True),
        (5, b"shown\r\n", True),
        (6, b"", True),  # `exit 3`: its end is marked before the shell goes
    ]


@pytest.mark.parametrize("kind", SHELLS)
def test_ctrl_c_at_the_prompt_makes_no_step(started, no_autostart, kind):
    sh = started([RW, "record", kind], recorded_rc(kind))
    sh.run("echo one")
    sh.p.sendcontrol("c")  # at an empty prompt
    sh.p.expect_exact(PROMPT)
    sh.p.send("echo never-run")
    time.sleep(0.2)
    sh.p.sendcontrol("c")  # a line typed, then dropped
    sh.p.expect_exact(PROMPT)
    sh.interrupt_running("sleep 100")  # Ctrl-C while a step runs: it ends (130)
    sh.run("echo two")
    assert sh.exit() == 0
    steps = only_session(no_autostart)
    assert [(s.seq, s.data) for s in steps[:3]] == [
        (1, b"one\r\n"),
        (2, steps[1].data),
        (3, b"two\r\n"),
    ]
    assert steps[1].ended and b"never-run" not in b"".join(s.data for s in steps)


@pytest.mark.parametrize("kind", SHELLS)
def test_a_theme_that_sets_the_prompt_after_init_keeps_the_marks(started, no_autostart, kind):
    # A two-line prompt set after rw's line, with a hook of its own that prints.
    theme = {
        "bash": "PS1='[\\u \\w]\\n<rwp> '\n__theme() { :; }\nPROMPT_COMMAND+=(__theme)\n",
        "zsh": "PS1=$'[%n %~]\\n<rwp> '\nprecmd_functions+=(__theme)\n__theme() { :; }\n",
    }
    sh = started([RW, "record", kind], recorded_rc(kind, theme[kind]))
    sh.run("echo themed")
    sh.run("seq 3")
    assert sh.exit() == 0
    steps = only_session(no_autostart)
    assert [s.data for s in steps[:2]] == [b"themed\r\n", b"1\r\n2\r\n3\r\n"]


@pytest.mark.parametrize("kind", SHELLS)
def test_a_background_job_printing_at_the_prompt_belongs_to_no_step(started, no_autostart, kind):
    sh = started([RW, "record", kind], recorded_rc(kind))
    sh.run("{ sleep 0.5; echo bg-late; } &")
    sh.p.expect_exact("bg-late", timeout=10)
    time.sleep(0.2)
    sh.run("echo next")
    assert sh.exit() == 0
    steps = only_session(no_autostart)
    assert not [s for s in steps if b"bg-late" in s.data.split(b"\r\n")]
    # (bash says the job is done as the next line starts: that line's output;
    # zsh, where its SIGCHLD comes late, as that line ends: after `next`.)
    (step,) = [s for s in steps if b"next" in s.data.split(b"\r\n")]
    assert step.data.count(b"\r\n") <= 2


@pytest.mark.parametrize("kind", SHELLS)
def test_a_shell_whose_rc_lacks_the_hooks_is_recorded(started, no_autostart, kind):
    sh = started([RW, "record", kind], BEFORE[kind] + "export FROM_RC=yes\n")
    assert sh.run("echo rc-$FROM_RC") == "rc-yes"  # the user's rc ran as usual
    assert sh.run("type __rw_precmd >/dev/null && echo hooked") == "hooked"
    if kind == "zsh":  # ZDOTDIR is the user's again (they had none)
        assert sh.run("echo zdotdir=${ZDOTDIR-unset}") == "zdotdir=unset"
    assert sh.exit() == 0
    steps = only_session(no_autostart)
    assert [s.data for s in steps[:2]] == [b"rc-yes\r\n", b"hooked\r\n"]


def test_a_zsh_with_a_zdotdir_of_its_own_reads_it(started, no_autostart, tmp_path):
    zdot = tmp_path / "zdot"
    zdot.mkdir()
    (zdot / ".zshenv").write_text("export FROM_ZSHENV=yes\n")
    (zdot / ".zshrc").write_text(BEFORE["zsh"] + "FROM_ZSHRC=yes\n")
    sh = started([RW, "record", "zsh"], "PS1='wrong> '\n", env={"ZDOTDIR": str(zdot)})
    assert sh.run("echo $FROM_ZSHENV $FROM_ZSHRC $ZDOTDIR") == f"yes yes {zdot}"
    assert sh.exit() == 0
    assert [s.data for s in only_session(no_autostart)][0] == f"yes yes {zdot}\r\n".encode()


@pytest.mark.parametrize("kind", SHELLS)
def test_init_record_gives_a_recorded_shell_exactly_once(started, no_autostart, kind):
    rc = BEFORE[kind] + INIT.format(kind=kind, flags=" --record")
    sh = started([kind, "-i"], rc)
    # The terminal's shell was exec'ed into rw record, which runs the shell:
    # its parent is the process pexpect started.
    assert sh.run("echo $PPID") == str(sh.p.pid)
    assert sh.run("echo ${RW_RECORD:+recorded}") == "recorded"
    outer = sh.run("echo $$")
    # A shell started inside is not recorded a second time: its parent is the
    # recorded shell, and its commands are its own session's steps.
    sh.p.sendline(kind)
    sh.p.expect_exact(PROMPT)
    assert sh.run("echo $PPID") == outer
    sh.run("echo inner")
    sh.p.sendline("exit")
    sh.p.expect_exact(PROMPT)
    sh.run("echo outer")
    assert sh.exit("exit 4") == 4
    found = outputs(no_autostart)
    assert len(found) == 2
    by_output = {tuple(s.data for s in steps): sid for sid, steps in found.items()}
    inner = next(k for k in by_output if b"inner\r\n" in k)
    outer_steps = next(k for k in by_output if k is not inner)
    assert inner[:2] == (outer.encode() + b"\r\n", b"inner\r\n")
    assert outer_steps[:3] == (
        f"{sh.p.pid}\r\n".encode(),
        b"recorded\r\n",
        outer.encode() + b"\r\n",
    )
    assert b"outer\r\n" in outer_steps


@pytest.mark.parametrize("kind", SHELLS)
def test_rw_record_off_keeps_a_shell_unrecorded(started, no_autostart, kind):
    rc = BEFORE[kind] + INIT.format(kind=kind, flags=" --record")
    sh = started([kind, "-i"], rc, env={"RW_RECORD": "off"})
    assert sh.run("echo $$") == str(sh.p.pid)  # not exec'ed: no recorder
    sh.run("echo hello")
    assert sh.exit() == 0
    assert outputs(no_autostart) == {}
    sh = started([kind, "-i"], rc)  # the same rc, without RW_RECORD=off
    assert sh.run("echo hello") == "hello"
    assert sh.exit() == 0
    assert [s.data for s in only_session(no_autostart)] == [b"hello\r\n", b""]


@pytest.mark.parametrize("kind", SHELLS)
def test_the_config_switch_records_and_a_recorder_that_cannot_start_leaves_the_shell(
    started, no_autostart, kind
):
    write_config(no_autostart, "[daemon]\nautostart = false\n[record]\noutput = true\n")
    rc = BEFORE[kind] + INIT.format(kind=kind, flags="")
    sh = started([kind, "-i"], rc, env={"RW_RECORD_FAULT": "start"})
    assert "rw: output is not recorded in this shell: the recorder could not start" in sh.p.before
    assert sh.run("echo alive-$RW_RECORD") == "alive-off"
    assert sh.exit("exit 5") == 5
    sh = started([kind, "-i"], rc)
    assert sh.run("echo $PPID") == str(sh.p.pid)
    assert sh.exit() == 0


@pytest.mark.parametrize("kind", SHELLS)
def test_a_pasted_block_is_one_step_per_line(no_autostart, tmp_path, kind):
    home = tmp_path / "home"
    rc = "PS1='<rwp> '\n" + ("unsetopt prompt_sp\n" if kind == "zsh" else "")
    write_rc(home, kind, rc + INIT.format(kind=kind, flags=""))
    t = Tmux(
        tmp_path,
        f"env -u ZDOTDIR HOME={home} RW_HOME={no_autostart} LANG=C.UTF-8 TERM=screen "
        f"PATH={BIN}:/usr/bin:/bin {RW} record {kind}",
    )
    try:
        t.wait(lambda s: "<rwp>" in s, "the prompt")
        t.tmux("set-buffer", "echo p1\necho p2 >&2\nfalse\nprintf 'p4\\n'\n")
        t.tmux("paste-buffer", "-p")
        t.wait(lambda s: "printf 'p4" in s, "the paste shown")  # read as one, before the Enter
        t.type("Enter")
        t.wait(lambda s: s.count("<rwp>") >= 2 and "p4" in s, "the block run")
        t.type("exit", "Enter")
        deadline = time.monotonic() + 10
        while b"\x1eRWO" not in b"".join(
            f.read_bytes() for f in (no_autostart / "data" / "spool").glob("*.output")
        ) or not _ended(no_autostart, 5):
            assert time.monotonic() < deadline, "the recorder never wrote the last step"
            time.sleep(0.1)
    finally:
        t.close()
    steps = only_session(no_autostart)
    assert [(s.seq, s.data, s.ended) for s in steps[:4]] == [
        (1, b"p1\r\n", True),
        (2, b"p2\r\n", True),
        (3, b"", True),
        (4, b"p4\r\n", True),
    ]


def _ended(rw_home: Path, seq: int) -> bool:
    steps = [s for steps in outputs(rw_home).values() for s in steps]
    return any(s.seq == seq and s.finished for s in steps)


@pytest.mark.parametrize(
    "text, message",
    [
        ('[record]\noutput = "yes"\n', "record.output must be true or false"),
        (
            "[record]\noutptu = true\n",
            "[record] has no key 'outptu' (output, max_step_output, max_total_output)",
        ),
        ("record = 1\n", "[record] must be a table"),
    ],
)
def test_a_bad_record_switch_is_one_line_and_exit_2(rw_home, text, message):
    write_config(rw_home, text)
    proc = rw("init", "bash", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.endswith(f"{message}\n") and len(proc.stderr.splitlines()) == 1


@pytest.mark.parametrize("kind", SHELLS)
def test_a_shell_on_another_terminal_prints_no_marks(no_autostart, tmp_path, kind):
    # RW_RECORD inherited from a recorded shell (a live recorder, another
    # terminal: a tmux pane, an ssh login): the hooks mark nothing there, since
    # no recorder would take the marks out.
    home = tmp_path / "home"
    write_rc(home, kind, recorded_rc(kind))
    other, other_slave = os.openpty()  # the terminal RW_RECORD names
    env = {
        "PATH": f"{BIN}:/usr/bin:/bin", "HOME": str(home), "RW_HOME": str(no_autostart),
        "TERM": "dumb", "RW_RECORD": f"{'ab' * 12}:{os.getpid()}:{os.ttyname(other_slave)}",
    }  # fmt: skip
    p = pexpect.spawn(kind, ["-i"], env=env, cwd=str(home), timeout=20)
    os.set_blocking(other, False)
    try:
        p.expect_exact(PROMPT.encode())
        p.sendline("echo o''ne; false")
        p.expect_exact(b"one\r\n")
        p.expect_exact(PROMPT.encode())
        p.sendline("exit")
        p.expect(pexpect.EOF)
        assert b"\x1b]133" not in p.before
        with pytest.raises(BlockingIOError):  # nor on the other terminal
            os.read(other, 4096)
    finally:
        p.close(force=True)
        os.close(other)
        os.close(other_slave)


@pytest.mark.parametrize("kind", SHELLS)
def test_init_record_records_a_terminal_that_inherited_another_ones_recorder(
    started, no_autostart, kind
):
    # A tmux pane or an ssh login opened from a recorded shell: RW_RECORD names
    # the recorded terminal, not this one; this terminal gets its own recorder.
    other, other_slave = os.openpty()
    try:
        stale = f"{'ab' * 12}:{os.getpid()}:{os.ttyname(other_slave)}"
        rc = BEFORE[kind] + INIT.format(kind=kind, flags=" --record")
        sh = started([kind, "-i"], rc, env={"RW_RECORD": stale})
        assert sh.run("echo $PPID") == str(sh.p.pid)
        value = sh.run("echo $RW_RECORD")
        assert value != stale and value.split(":")[2] == sh.run("tty")
        assert sh.exit() == 0
    finally:
        os.close(other)
        os.close(other_slave)
    assert [s.data for s in only_session(no_autostart)][0] == f"{sh.p.pid}\r\n".encode()


def test_a_zshenv_that_moves_zdotdir_is_followed(started, no_autostart, tmp_path):
    # ~/.zshenv sets ZDOTDIR (the XDG layout); zsh then reads .zshrc from there.
    zdot = tmp_path / "xdg-zsh"
    zdot.mkdir()
    (zdot / ".zshrc").write_text(BEFORE["zsh"] + "FROM_ZSHRC=moved\n")
    home = tmp_path / "home"
    home.mkdir()
    (home / ".zshenv").write_text(f"ZDOTDIR={zdot}\n")
    sh = started([RW, "record", "zsh"], "PS1='wrong> '\n")
    assert sh.run("echo $FROM_ZSHRC $ZDOTDIR") == f"moved {zdot}"
    assert sh.exit() == 0
    assert [s.data for s in only_session(no_autostart)][0] == f"moved {zdot}\r\n".encode()


def commands(rw_home: Path, sid: str) -> dict[int, str]:
    """The command of each step number the hooks spooled for session `sid`."""
    buf = (rw_home / "data" / "spool" / f"{sid}.spool").read_bytes()
    found = {}
    for r, _ in records.parse(buf, final=True):
        if isinstance(r, records.Record) and r.type in ("B", "H"):
            text = r.fields[4] if r.type == "B" else records.history_command(r.fields[4])
            found[int(r.fields[1])] = text
    return found


@pytest.mark.parametrize("kind", SHELLS)
def test_lines_that_run_no_command_of_the_shell_have_their_output(started, no_autostart, kind):
    # bash's DEBUG trap never sees a bare subshell or a background job; a line
    # typed with a leading space is not recorded, nor is its output any step's.
    rc = recorded_rc(kind, "HISTCONTROL=ignoreboth\n" if kind == "bash" else "")
    sh = started([RW, "record", kind], rc)
    sh.run("(echo sub; echo sub-err >&2)")
    sh.run(" echo hidden-output")
    sh.run("f() { echo in-f; }")
    sh.run("f")
    sh.run("{ echo bg-job; } &")  # last: the shells tell of its end at their own times
    time.sleep(0.3)
    assert sh.exit() == 0
    (sid,) = outputs(no_autostart)
    by_command = {
        commands(no_autostart, sid).get(s.seq): s.data for s in outputs(no_autostart)[sid]
    }
    assert by_command["(echo sub; echo sub-err >&2)"] == b"sub\r\nsub-err\r\n"
    assert by_command["f() { echo in-f; }"] == b""
    assert b"[1] " in by_command["{ echo bg-job; } &"]  # the job number the shell prints
    assert by_command["f"] == b"in-f\r\n"
    assert " echo hidden-output" not in by_command
    assert not [c for c, data in by_command.items() if c and b"hidden-output" in data]


@pytest.mark.parametrize("kind", SHELLS)
def test_a_recorder_that_cannot_be_run_leaves_the_shell_as_it_was(started, no_autostart, kind):
    # rw's program is there but cannot run (its interpreter is gone): exec
    # would fail, which ends zsh; the shell goes on unrecorded and says so.
    home = no_autostart.parent / "home"
    home.mkdir(exist_ok=True)
    broken = home / "broken-rw"
    broken.write_text("#!/nonexistent/python3\n")
    broken.chmod(0o755)
    # (The init code with that program in place of rw's.)
    rebind = f"s|^\\(\\s*\\)\\(typeset -g \\)\\?__rw_bin=.*|\\1\\2__rw_bin={broken}|"
    init = f'eval "$(rw init {kind} --record | sed "{rebind}")"\n'
    sh = started([kind, "-i"], BEFORE[kind] + init)
    assert "rw: output is not recorded in this shell: cannot start rw record" in sh.p.before
    assert sh.run("echo $$ ${RW_RECORD:-unrecorded}") == f"{sh.p.pid} unrecorded"
    assert sh.exit("exit 6") == 6

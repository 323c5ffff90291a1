"""The whole recorded flow, as a user has it: `[record] output = true` in the
config, rw's line in the rc file followed by a theme that sets the prompt,
a real terminal emulator (tmux), the real hooks, recorder, daemon and store.

One terminal per shell runs everything the issue asks to see: stdout and
stderr of a step, colours, 100,000 lines, a full-screen program, a resize,
Ctrl-C on a running step and at an empty prompt, a pasted block, a secret
printed by a command, a password typed at a prompt, and the daemon killed
in the middle of it all."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from ..conftest import BIN, RW, daemon_pid, rw, rw_json, wait_for, write_config
from ..terminal import Terminal

TOKEN = "ghp_" + "Qk7" * 12  # a GitHub token, as redact.py's rules know them
TYPED = "typed-pass-6152"  # typed at `read -s`: input, never output
# Themes set the prompt after rw's line; zsh's has a right prompt too.
THEME = {
    "bash": "PS1='\\[\\e[35m\\]<rwp>\\[\\e[0m\\] '\n",
    "zsh": "PROMPT='%F{magenta}<rwp>%f '\nRPROMPT='%~'\nsetopt interactive_comments\n",
}


class RecordedTerminal(Terminal):
    """A login-like terminal in tmux whose rc file has rw's line and then a
    theme; the config's `[record] output = true` makes it a recorded shell."""

    def __init__(self, kind: str, *, rw_home: Path, home: Path, socket: Path):
        self.kind = kind
        self.bin_dir = BIN
        self.home = home
        self.rw_home = rw_home
        self.socket = socket
        home.mkdir(parents=True, exist_ok=True)
        rc = f'eval "$(rw init {kind})"\n' + THEME[kind]
        env = {
            "PATH": f"{BIN}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "RW_HOME": str(rw_home),
            "TERM": "screen",
            "LANG": "C.UTF-8",
            "USER": os.environ.get("USER", "root"),
            "SHELL": f"/bin/{kind}",
        }
        if kind == "bash":
            (home / ".bashrc").write_text(rc)
            argv = ["bash", "-i"]
        else:
            (home / ".zshrc").write_text("unsetopt prompt_sp\n" + rc)
            argv = ["zsh", "-i"]
        self._tmux(
            "new-session", "-d", "-x", "100", "-y", "30", "-c", str(home), "--",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv,
        )  # fmt: skip
        self.wait_for_prompt(1)

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", *keys)

    def start(self, line: str) -> None:
        """Type `line` and Enter, without waiting for the prompt."""
        self._tmux("send-keys", "-l", line)
        self._tmux("send-keys", "Enter")


@pytest.fixture
def recorded_terminal(rw_home, tmp_path):
    made: list[RecordedTerminal] = []

    def make(kind: str) -> RecordedTerminal:
        t = RecordedTerminal(
            kind, rw_home=rw_home, home=tmp_path / "home", socket=tmp_path / "tmux.sock"
        )
        made.append(t)
        return t

    yield make
    for t in made:
        t.close()


def stored(sid: str, number: int) -> dict | None:
    doc = rw_json("show", sid, str(number))
    return doc if doc.get("output") is not None else None


def raw(sid: str, number: int) -> bytes:
    """`rw show --raw` into a pipe: the bytes as they are."""
    return subprocess.run(
        [RW, "show", sid, str(number), "--raw"], capture_output=True, check=True
    ).stdout


def session_with(steps: int) -> str | None:
    return next((s["id"] for s in rw_json("sessions") if s["steps"] >= steps), None)


def children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def the_recorded_shell(t: RecordedTerminal) -> int:
    """The shell the recorder runs: the pane's process became `rw record`
    (by exec, from rw's line in the rc file) and its child is the shell."""
    pane = int(t._tmux("display-message", "-p", "#{pane_pid}").strip())
    return wait_for(lambda: next((c for c in children(pane) if comm(c) == t.kind), None), 10)


def stty(shell: int, *args: str) -> str:
    """`stty` of the recorded shell's terminal (the recorder's PTY); "" when
    it could not be read (the shell was changing it: the caller asks again)."""
    with open(f"/proc/{shell}/fd/0", "rb", buffering=0) as tty:
        proc = subprocess.run(["stty", *args], stdin=tty, capture_output=True, text=True)
    return proc.stdout if proc.returncode == 0 else ""


def every_file_below(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_recorded_terminal_keeps_each_steps_output_through_all_a_user_does(
    rw_home, recorded_terminal, kind
):
    write_config(rw_home, "[record]\noutput = true\n")
    rw("daemon", "start")
    t = recorded_terminal(kind)
    shell = the_recorded_shell(t)
    t.type("echo out; echo err >&2")  # 1
    t.type(r"printf '\033[32mgreen\033[0m plain\n'")  # 2
    t.start("seq 1 100000")  # 3
    wait_for(lambda: t.screen().rstrip().splitlines()[-2:-1] == ["100000"], 60)
    t._tmux("clear-history")  # the 2,000 lines tmux keeps would not show the old prompts
    prompts = t.prompts()
    t.start("vim -u NONE -N")  # 4
    wait_for(lambda: t.screen().count("~") > 10, 15)
    t.keys(":q", "Enter")
    t.wait_for_prompt(prompts + 1)
    t._tmux("resize-window", "-x", "90", "-y", "20")
    wait_for(lambda: stty(shell, "size") == "20 90\n", 10)
    t.type("stty size")  # 5
    t.start("sleep 30")  # 6: interrupted
    wait_for(lambda: any(comm(c) == "sleep" for c in children(shell)), 10)
    t.interrupt()
    t.interrupt()  # at an empty prompt: no step
    os.kill(daemon_pid(rw_home) or 0, signal.SIGKILL)  # the daemon dies mid-session
    t.paste("echo p1\necho p2 >&2")  # 7, 8
    t.type(f"echo token {TOKEN} printed")  # 9
    t.start("read -rs pw")  # 10
    wait_for(lambda: "-echo " in stty(shell, "-a"), 10)
    t.type(TYPED)
    t.type("echo ${#pw}")  # 11
    rw("daemon", "start")
    sid = wait_for(lambda: session_with(11), 30)
    outputs = {n: wait_for(lambda n=n: stored(sid, n), 30) for n in range(1, 12)}
    steps = {s["step"]: s for s in rw_json("log", sid)}

    assert sorted(steps) == list(range(1, 12))  # no phantom step, none lost or doubled
    assert [steps[n]["command"] for n in (1, 5, 6, 7, 8)] == [
        "echo out; echo err >&2", "stty size", "sleep 30", "echo p1", "echo p2 >&2",
    ]  # fmt: skip
    assert outputs[1]["output"] == "out\nerr\n"
    assert outputs[2]["output"] == "green plain\n"
    assert raw(sid, 2) == b"\x1b[32mgreen\x1b[0m plain\r\n"
    assert outputs[3]["output"] == "".join(f"{i}\n" for i in range(1, 100001))
    assert outputs[3]["output_truncated"] is False
    assert "[full-screen: vim]" in outputs[4]["output"]
    assert outputs[5]["output"] == "20 90\n"
    assert steps[6]["exit_code"] == 130
    assert (outputs[7]["output"], outputs[8]["output"]) == ("p1\n", "p2\n")
    assert "token " in outputs[9]["output"] and TOKEN not in outputs[9]["output"]
    assert TOKEN.encode() not in raw(sid, 9)
    assert outputs[11]["output"] == f"{len(TYPED)}\n"

    t.start("exit")
    wait_for(lambda: not list((rw_home / "data" / "spool").glob("*.output")), 30)
    rw("daemon", "stop")
    everything = every_file_below(rw_home)
    assert TOKEN.encode() not in everything
    assert TYPED.encode() not in everything

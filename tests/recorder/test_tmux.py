"""`rw record` inside a real terminal emulator (tmux): full-screen programs take
the alternate screen and give the shell's screen back; a resize reaches the
shell."""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from ..conftest import BIN
from .conftest import RC

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    def __init__(self, tmp_path, command: str):
        self.socket = str(tmp_path / "tmux.sock")
        self.tmux("new-session", "-d", "-x", "100", "-y", "30", command)

    def tmux(self, *args: str) -> str:
        return subprocess.run(
            ["tmux", "-S", self.socket, "-f", "/dev/null", *args],
            capture_output=True, text=True, check=True, timeout=10,
        ).stdout  # fmt: skip

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p")

    def wait(self, predicate, what: str, timeout: float = 15) -> str:
        deadline = time.monotonic() + timeout
        while True:
            text = self.screen()
            if predicate(text):
                return text
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}; the screen:\n{text}")
            time.sleep(0.02)

    def type(self, *keys: str) -> None:
        self.tmux("send-keys", *keys)

    def close(self) -> None:
        subprocess.run(["tmux", "-S", self.socket, "kill-server"], capture_output=True)


@pytest.fixture
def tmux_record(rw_home, tmp_path):
    made = []

    def make(kind: str) -> Tmux:
        home = tmp_path / "home"
        home.mkdir(exist_ok=True)
        rc = home / f"rc.{kind}"
        rc.write_text(RC[kind])
        if kind == "bash":
            args = f"--rcfile {rc} -i"
        else:
            (home / ".zshrc").write_text(RC[kind])
            args = "-i"
        t = Tmux(
            tmp_path,
            f"env HOME={home} ZDOTDIR={home} RW_HOME={rw_home} LANG=C.UTF-8 "
            f"{BIN}/rw record {kind} -- {args}",
        )
        made.append(t)
        t.wait(lambda s: "<rwp>" in s, "the prompt")
        return t

    yield make
    for t in made:
        t.close()


@pytest.mark.parametrize("kind", ["bash", "zsh"])
@pytest.mark.parametrize("program", ["less", "vim"])
def test_a_full_screen_program_takes_the_alternate_screen_and_gives_it_back(
    tmux_record, tmp_path, kind, program
):
    if shutil.which(program) is None:
        pytest.skip(f"{program} is not installed")
    page = tmp_path / "page.txt"
    page.write_text("".join(f"LINE-{i:03d}\n" for i in range(200)))
    t = tmux_record(kind)
    t.type("echo before-$((6*7))", "Enter")
    t.wait(lambda s: "before-42" in s, "the echo")
    # (F: no file message, which a long path would wrap into a hit-enter prompt)
    vim = f"vim -u NONE -n --cmd 'set shortmess+=F' {page}"
    command = f"less {page}" if program == "less" else vim
    t.type(command, "Enter")
    full = t.wait(lambda s: "LINE-000" in s and "before-42" not in s, program)
    assert "LINE-020" in full
    t.type(*(["q"] if program == "less" else ["Escape", ":q!", "Enter"]))
    back = t.wait(lambda s: s.rstrip().endswith("<rwp>"), "the next prompt")
    assert "before-42" in back and "LINE-000" not in back


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_resize_of_the_tmux_window_reaches_the_shell(tmux_record, kind):
    t = tmux_record(kind)
    t.type("stty size", "Enter")
    t.wait(lambda s: "30 100" in s, "the first size")
    t.type("clear", "Enter")
    t.tmux("resize-window", "-x", "90", "-y", "20")
    time.sleep(0.3)
    t.type("stty size", "Enter")
    t.wait(lambda s: "20 90" in s, "the new size")


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_bracketed_paste_reaches_the_shell_as_one(tmux_record, kind):
    t = tmux_record(kind)
    if kind == "zsh":  # the tests' rc turns it off for pexpect; on here
        t.type(
            "unset zle_bracketed_paste; zle_bracketed_paste=($'\\e[?2004h' $'\\e[?2004l')", "Enter"
        )
    t.type("bind 'set enable-bracketed-paste on'" if kind == "bash" else ":", "Enter")
    t.tmux("set-buffer", "echo pasted-$((6*7))\necho second-$((7*8))\n")
    t.tmux("paste-buffer", "-p")  # -p: as a bracketed paste, when the program asked for it
    t.wait(lambda s: "second-$((7*8))" in s, "the paste")
    time.sleep(0.5)
    assert "pasted-42" not in t.screen()  # a paste waits for Enter: it came bracketed
    t.type("Enter")
    t.wait(lambda s: "pasted-42" in s and "second-56" in s, "both lines run")

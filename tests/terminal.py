"""A real interactive bash or zsh inside tmux, a real terminal emulator.

pexpect writes to the shell's PTY as if typed; text pasted into a terminal
reaches the line editor between bracketed-paste markers instead, and bash's
readline and zsh's line editor treat it differently from typed keys. Here
the text goes through tmux's `paste-buffer -p`, so the shell receives exactly
what a terminal sends for a paste. Each terminal has its own tmux server
(its own socket, no config file), killed on close.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

PROMPT = "<rwp> "


class Terminal:
    def __init__(
        self, kind: str, *, rw_home: Path, home: Path, bin_dir: Path, socket: Path, rc: str = ""
    ):
        if shutil.which("tmux") is None:
            raise AssertionError("tmux is not installed (scripts/test installs it)")
        self.kind = kind
        self.bin_dir = bin_dir
        self.home = home
        self.rw_home = rw_home
        self.socket = socket
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "RW_HOME": str(rw_home),
            # tmux's own terminal type: readline turns bracketed paste off on "dumb".
            "TERM": "screen",
            "LANG": "C.UTF-8",
            "USER": os.environ.get("USER", "root"),
        }
        if kind == "bash":
            rcfile = home / ".rw_paste_bashrc"
            rcfile.write_text(f"PS1='<''rwp> '\n{rc}\neval \"$({bin_dir}/rw init bash)\"\n")
            argv = ["bash", "--noprofile", "--rcfile", str(rcfile), "-i"]
        else:
            zdot = home / ".rw_paste_zsh"
            zdot.mkdir(exist_ok=True)
            # zle_bracketed_paste is left as zsh sets it: on.
            (zdot / ".zshrc").write_text(
                f"PS1='<''rwp> '\nunsetopt prompt_sp\nsetopt interactive_comments\n{rc}\n"
                f'eval "$({bin_dir}/rw init zsh)"\n'
            )
            env["ZDOTDIR"] = str(zdot)
            argv = ["zsh", "-i"]
        self._tmux(
            "new-session", "-d", "-x", "200", "-y", "50", "-c", str(home), "--",
            "env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv,
        )  # fmt: skip
        self.pid = int(self._tmux("display-message", "-p", "#{pane_pid}").strip())
        self.wait_for_prompt(1)

    def _tmux(self, *args: str, data: bytes | None = None) -> str:
        proc = subprocess.run(
            ["tmux", "-S", str(self.socket), "-f", "/dev/null", *args],
            input=data, capture_output=True, timeout=20, check=False,
        )  # fmt: skip
        if proc.returncode != 0:
            raise AssertionError(f"tmux {args[0]} failed: {proc.stderr.decode(errors='replace')}")
        return proc.stdout.decode(errors="replace")

    def screen(self) -> str:
        """Everything the terminal shows, scrollback included."""
        return self._tmux("capture-pane", "-p", "-J", "-S", "-")

    def prompts(self) -> int:
        return sum(1 for line in self.screen().splitlines() if line.startswith(PROMPT.strip()))

    def wait_for_prompt(self, count: int, timeout: float = 20) -> None:
        self._wait(lambda: self.prompts() >= count, f"prompt #{count}", timeout)

    def _wait(self, condition, what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"no {what}; the terminal shows:\n{self.screen()}")
            time.sleep(0.02)

    def paste(self, text: str, timeout: float = 30, wait: bool = True) -> None:
        """Paste `text` as a terminal does (bracketed), press Enter, and (unless
        not `wait`) wait for the prompt."""
        before = self.prompts()
        # The Enter goes once the line editor shows the paste's last line: the
        # paste was read as one, before the Enter.
        last = text.rstrip("\n").rsplit("\n", 1)[-1].strip()
        shown = self.screen().count(last)
        self._tmux("load-buffer", "-b", "rw", "-", data=text.encode())
        self._tmux("paste-buffer", "-p", "-d", "-b", "rw")
        self._wait(lambda: self.screen().count(last) > shown, "the paste shown", timeout)
        self._tmux("send-keys", "Enter")
        if wait:
            self.wait_for_prompt(before + 1, timeout)

    def interrupt(self) -> None:
        """Ctrl-C, and wait for the prompt it brings back."""
        before = self.prompts()
        self._tmux("send-keys", "C-c")
        self.wait_for_prompt(before + 1)

    def type(self, line: str, timeout: float = 20) -> None:
        """Type `line` and Enter, and wait for the next prompt."""
        before = self.prompts()
        self._tmux("send-keys", "-l", line)
        self._tmux("send-keys", "Enter")
        self.wait_for_prompt(before + 1, timeout)

    def clear_line(self) -> None:
        """Empty the command line (Ctrl-U)."""
        self._tmux("send-keys", "C-u")

    def close(self) -> None:
        subprocess.run(
            ["tmux", "-S", str(self.socket), "kill-server"], capture_output=True, check=False
        )

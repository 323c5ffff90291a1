"""A real interactive bash or zsh under a PTY, driven like a user would."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pexpect

PROMPT = "<rwp> "
# Typed with the quotes split, so the echo of the line never matches PROMPT.
SET_PROMPT = {
    "bash": "PS1='<''rwp> '",
    "zsh": "PS1='<''rwp> '; unset zle_bracketed_paste; unsetopt prompt_sp",
}


def _as_a_terminal_starts_it() -> None:
    """In the shell's process before it starts: Ctrl-C and Ctrl-\\ handled as a
    terminal emulator's shell gets them. (In full runs of the suite the shells
    started now and then with SIGINT and SIGQUIT ignored, as if inherited from a
    call of system() in another thread of this process, which their programs
    then inherited too; not found in rw's code or the tests'.)"""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_SETMASK, [])


class Shell:
    def __init__(
        self,
        kind: str,
        *,
        rw_home: Path,
        home: Path,
        bin_dir: Path,
        init: bool = True,
        env: dict[str, str] | None = None,
        before_init: list[str] = (),
        shell_args: list[str] | None = None,
    ):
        self.kind = kind
        home.mkdir(parents=True, exist_ok=True)
        self.env = {
            "PATH": f"{bin_dir}:/usr/local/bin:/usr/bin:/bin",
            "HOME": str(home),
            "RW_HOME": str(rw_home),
            "TERM": "dumb",
            "LANG": "C.UTF-8",
            "USER": os.environ.get("USER", "root"),
            **(env or {}),
        }
        self.bin_dir = bin_dir
        args = shell_args or (["--norc", "--noprofile", "-i"] if kind == "bash" else ["-f", "-i"])
        self.p = pexpect.spawn(
            kind, args, env=self.env, encoding="utf-8", timeout=20, cwd=str(home),
            dimensions=(40, 200), preexec_fn=_as_a_terminal_starts_it,
        )  # fmt: skip
        self.p.delaybeforesend = None
        self.p.sendline(SET_PROMPT[kind])
        self.p.expect_exact(PROMPT)
        for line in before_init:
            self.run(line)
        if init:
            out = self.run(f'eval "$({bin_dir}/rw init {kind})"')
            assert out == "", f"init printed {out!r}"

    def run(self, command: str, timeout: float = 20) -> str:
        """Type `command`, wait for the next prompt, return what was printed."""
        self.p.sendline(command)
        self.p.expect_exact(PROMPT, timeout=timeout)
        return self._output(command, self.p.before)

    @staticmethod
    def _output(command: str, raw: str) -> str:
        text = raw.replace("\r\n", "\n").replace("\r", "")
        lines = text.split("\n")
        # Drop the echo of what was typed (one line per typed line).
        lines = lines[len(command.split("\n")) :]
        return "\n".join(lines).strip("\n")

    def interrupt_running(self, command: str, after: float = 0.1) -> str:
        """Type `command`, press Ctrl-C once its program runs (a Ctrl-C while
        the hooks still run aborts the line before it starts), wait for the
        next prompt."""
        import time

        program = command.split()[0]
        self.p.sendline(command)
        deadline = time.monotonic() + 20
        while program not in self._children() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(after)
        self.p.sendintr()
        try:
            self.p.expect_exact(PROMPT)
        except pexpect.TIMEOUT:
            raise AssertionError(
                f"no prompt after Ctrl-C; below the shell: {self._signal_state()}"
            ) from None
        return self.p.before

    def _below(self) -> list[dict[str, str]]:
        """The processes below the shell's process (its children, theirs...; the
        shell may itself run under a proxy): the fields of their /proc status."""
        found, todo = [], [str(self.pid)]
        while todo:
            parent = todo.pop()
            try:
                pids = Path(f"/proc/{parent}/task/{parent}/children").read_text().split()
            except OSError:
                continue
            for pid in pids:
                try:
                    status = Path(f"/proc/{pid}/status").read_text().splitlines()
                except OSError:
                    continue
                found.append(dict(line.split(":\t", 1) for line in status if ":\t" in line))
                todo.append(pid)
        return found

    def _signal_state(self) -> list[str]:
        """Each process below the shell: its name and which signals it ignores
        and blocks (hex masks, as /proc says), to tell why a Ctrl-C did nothing."""
        return [
            f"{p.get('Name')} ign={p.get('SigIgn')} blk={p.get('SigBlk')}" for p in self._below()
        ]

    def _children(self) -> list[str]:
        """The program names of the processes below the shell."""
        return [p.get("Name", "") for p in self._below()]

    @property
    def pid(self) -> int:
        return self.p.pid

    def session_id(self) -> str:
        out = subprocess.run(
            [str(self.bin_dir / "rw"), "sessions", "--json"],
            env={**os.environ, "RW_HOME": self.env["RW_HOME"]},
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        for s in json.loads(out):
            if s["pid"] == self.pid and s["shell"] == self.kind:
                return s["id"]
        raise AssertionError(f"no session recorded for {self.kind} pid {self.pid}")

    def close(self) -> None:
        self.p.close(force=True)

"""The executor: one persistent shell, fed one step at a time.

Replay, rewind and the debugger all drive it. Commands reach the shell on a
private pipe (fd 3), never on its stdin, so a step that reads its input
cannot swallow the next one; after each step the shell reports its exit
status, directory and exported environment on another pipe (fd 4), framed
like the spool records. A marker on stdout closes each step's output, so
output is split between steps exactly.
"""

from __future__ import annotations

import fcntl
import os
import secrets
import select
import shutil
import signal
import subprocess
from collections.abc import Callable
from dataclasses import dataclass

from ..capture import records
from ..errors import RwError
from . import startenv

# The loop the shell runs. It reads NUL-terminated commands from fd 3 and
# eval's them in the shell itself, so cd, export, functions and aliases carry
# over from one step to the next as they did live.
_LOOPS = {
    "bash": r"""
shopt -s expand_aliases
while IFS= read -r -d '' __rw_cmd <&3; do
  __rw_rc=''
  eval "$__rw_cmd"$'\n''__rw_rc=$? __rw_ps="${PIPESTATUS[*]}"'
  __rw_x=$?
  [[ -n $__rw_rc ]] || __rw_rc=$__rw_x __rw_ps=$__rw_x
  printf '\n%s\n' "$__RW_MARK"
  { printf '%s\0' $'\036RW1' R "$__rw_rc" "$__rw_ps" "$PWD" declare && export -p &&
    printf '\0\036END\0'; } >&4
done
""",
    "zsh": r"""
while IFS= read -r -d '' __rw_cmd <&3; do
  __rw_rc=''
  eval "$__rw_cmd"$'\n''__rw_rc=$? __rw_ps="${pipestatus[*]}"'
  __rw_x=$?
  [[ -n $__rw_rc ]] || { __rw_rc=$__rw_x; __rw_ps=$__rw_x }
  printf '\n%s\n' "$__RW_MARK"
  () {
    emulate -L zsh
    setopt extendedglob
    print -rN -- $'\x1eRW1' R "$__rw_rc" "$__rw_ps" "$PWD" list0 \
      ${${(k)parameters[(R)*export*]}/(#m)*/$MATCH=${(P)MATCH}} $'\x1eEND' >&4
  }
done
""",
}
SHELL_ARGS = {"bash": ["--norc", "--noprofile", "-c"], "zsh": ["-f", "-c"]}

OutputSink = Callable[[bytes], None]


def _here() -> str:
    """The current directory; "/" when it was deleted (a shell must start somewhere)."""
    try:
        return os.getcwd()
    except OSError:
        return "/"


def _place_fds(commands: int, report: int) -> None:
    """In the child: the command pipe on fd 3, the report pipe on fd 4."""
    high_c = fcntl.fcntl(commands, fcntl.F_DUPFD, 10)
    high_r = fcntl.fcntl(report, fcntl.F_DUPFD, 10)
    os.dup2(high_c, 3)
    os.dup2(high_r, 4)


@dataclass(frozen=True)
class StepResult:
    exit_code: int | None  # None: the shell itself ended during the step
    pipestatus: str
    cwd: str
    env: dict[str, str]
    output: bytes


class ShellGone(RwError):
    """The executor's shell exited (a step ran `exit`, or `set -e` tripped)."""


class Executor:
    def __init__(self, cwd: str, env: dict[str, str], shell: str = "bash"):
        if shell not in _LOOPS:
            raise RwError(f"cannot run steps in {shell!r}; rw runs bash and zsh")
        if shutil.which(shell) is None:
            raise RwError(f"{shell} is not installed")
        self.mark = f"\x1eRWOUT-{secrets.token_hex(8)}"
        cmd_r, self._cmd_w = os.pipe()
        self._rep_r, rep_w = os.pipe()
        env = {k: v for k, v in env.items() if k != "__RW_MARK"}
        self.env = dict(env)  # the shell's exported environment, as of the last step
        env, later = startenv.split_start_env(env)  # nothing recorded runs as it starts
        env["__RW_MARK"] = self.mark
        self.cwd = cwd if os.path.isdir(cwd) else _here()
        self.shell = shell
        self.proc = subprocess.Popen(
            [shell, *SHELL_ARGS[shell], _LOOPS[shell]],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(3, 4),
            cwd=self.cwd,
            env=env,
            start_new_session=True,
            preexec_fn=lambda: _place_fds(cmd_r, rep_w),
        )
        os.close(cmd_r)
        os.close(rep_w)
        assert self.proc.stdout is not None
        self._out = self.proc.stdout.fileno()
        self._out_buf = b""
        self._rep_buf = b""
        if later:
            self.run(startenv.export_code(later))

    def run(self, command: str, sink: OutputSink | None = None) -> StepResult:
        """Run one step; stream its output to `sink` as it comes."""
        if "\0" in command:
            raise RwError("a command cannot contain a NUL byte")
        try:
            # Bytes that are not UTF-8 (kept as surrogates) go as they came.
            os.write(self._cmd_w, command.encode("utf-8", "surrogateescape") + b"\0")
        except BrokenPipeError:
            raise ShellGone("the shell has exited") from None
        mark = b"\n" + self.mark.encode() + b"\n"
        output = bytearray()
        report = None
        out_done = False
        while not (out_done and report is not None):
            fds = [fd for fd, done in ((self._out, out_done), (self._rep_r, report is not None))
                   if not done]  # fmt: skip
            ready, _, _ = select.select(fds, [], [])
            if self._out in ready:
                chunk = os.read(self._out, 65536)
                if not chunk:
                    return self._gone(output, sink)
                self._out_buf += chunk
                at = self._out_buf.find(mark)
                if at >= 0:
                    piece, self._out_buf = self._out_buf[:at], self._out_buf[at + len(mark) :]
                    out_done = True
                else:
                    # keep what could be the start of the mark
                    keep = len(mark) - 1
                    piece = self._out_buf[:-keep] if len(self._out_buf) > keep else b""
                    self._out_buf = self._out_buf[len(piece) :]
                if piece:
                    output += piece
                    if sink:
                        sink(piece)
            if self._rep_r in ready:
                chunk = os.read(self._rep_r, 65536)
                if not chunk:
                    return self._gone(output, sink)
                self._rep_buf += chunk
                report = self._report()
        code, pipestatus, cwd, fmt = report[:4]
        env = records.parse_env(fmt, report[4:])
        env.pop("__RW_MARK", None)
        self.cwd, self.env = cwd, env
        return StepResult(int(code), pipestatus, cwd, env, bytes(output))

    def _report(self) -> list[str] | None:
        """The fields of the shell's report, once it is whole. Read here rather
        than by records.parse: values that are not UTF-8 must keep their bytes
        (as surrogates), where the spool reader replaces them."""
        end = self._rep_buf.find(records.END)
        if end < 0:
            return None
        body, self._rep_buf = self._rep_buf[:end], self._rep_buf[end + len(records.END) :]
        fields = [f.decode("utf-8", "surrogateescape") for f in body.split(b"\0")]
        if fields[:2] != [records.MAGIC[:-1].decode(), "R"] or len(fields) < 6:
            raise RwError("the replay's shell sent a report rw cannot read")
        return fields[2:]

    def definitions(self) -> str:
        """This shell's functions and aliases, as code another shell can run."""
        listing = "declare -f; alias -p" if self.shell == "bash" else "typeset -f; alias -L"
        return self.run(listing).output.decode(errors="replace")

    def restart(self, cwd: str, env: dict[str, str], definitions: str = "") -> Executor:
        """A new shell in the given state, with these functions and aliases."""
        self.close()
        fresh = Executor(cwd, env, self.shell)
        if definitions.strip():
            fresh.run(definitions)
        return fresh

    def _gone(self, output: bytearray, sink: OutputSink | None) -> StepResult:
        rest = self._out_buf
        if rest:
            output += rest
            if sink:
                sink(rest)
        code = self.proc.wait()
        return (
            StepResult(None, "", self.cwd, {}, bytes(output))
            if code is None
            else StepResult(None, str(code), self.cwd, {}, bytes(output))
        )

    def interrupt(self) -> None:
        """Send SIGINT to the running step's process group."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def interrupt_step(self) -> None:
        """Send SIGINT to the running step's processes but not to the shell, which
        lives on (to the step's next command, if it has one) and reports the step."""
        for name in os.listdir("/proc"):
            if not name.isdigit() or int(name) == self.proc.pid:
                continue
            try:
                with open(f"/proc/{name}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()  # comm may hold ")"
                if int(fields[2]) == self.proc.pid:  # its process group
                    os.kill(int(name), signal.SIGINT)
            except (OSError, ValueError, IndexError):
                continue

    def kill(self) -> None:
        """SIGKILL to the shell's process group (safe from another thread: the
        step waiting on the shell sees it end)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        for fd in (self._cmd_w, self._rep_r):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc.stdout:
            self.proc.stdout.close()

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

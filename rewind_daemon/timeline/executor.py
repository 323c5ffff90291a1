"""The executor: one persistent shell, fed one step at a time.

Replay, rewind and the debugger all drive it. Commands reach the shell on a
private pipe (fd 3), never on its stdin, so a step that reads its input
cannot swallow the next one; after each step the shell reports its exit
status, directory and exported environment on another pipe (fd 4), framed
like the spool records. Its stdout and stderr are two pipes; a marker on each
closes each step's output there, so output is split between steps exactly.
The markers are written to copies of the two pipes that the loop keeps
(in $__rw_o and $__rw_e), so a step that sends its output elsewhere
(`exec >log 2>&1`) does not hide the end of the next one.

A caller that keeps one stream (replay, which stores a step's output as one)
gets stdout and stderr merged in the order rw read them: as near to the order
they were written as two pipes allow (what a step writes to both within a
moment may come a chunk apart).
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
# runs them in the shell itself, so cd, export, functions and aliases carry
# over from one step to the next as they did live.
#
# bash sources each step (from a here-string on fd 47) rather than eval'ing
# it, so that a SIGINT can end a step that loops in the shell itself: its trap
# returns from the sourced step with 130, as Ctrl-C would end it, and the
# shell lives on with its state (under set -e too: errexit is put back after).
# A step that names $BASH_SOURCE is eval'd as before (sourced, its BASH_SOURCE
# would be fd 47's path): pausing it falls back on ending the shell.
# zsh eval's it; a SIGINT ends its shell (130: its trap returns from the top
# level), and the driver starts a new one in the state from before the step.
_LOOPS = {
    "bash": r"""
shopt -s expand_aliases
exec {__rw_o}>&1 {__rw_e}>&2
trap '[[ -z ${__rw_busy-} ]] || { __rw_busy=; [[ $- != *e* ]] || { __rw_ee=1; set +e; }
  __rw_dbg=1; trap "return 130 2>/dev/null" DEBUG; return 130 2>/dev/null; }' INT
while IFS= read -r -d '' __rw_cmd <&3; do
  __rw_rc='' __rw_busy=1
  if [[ $__rw_cmd != *BASH_SOURCE* ]]; then
    . /dev/fd/47 47<<<"$__rw_cmd"$'\n''__rw_busy= __rw_rc=$? __rw_ps="${PIPESTATUS[*]}"'
  else  # as before: sourced, it would name fd 47
    eval "$__rw_cmd"$'\n''__rw_busy= __rw_rc=$? __rw_ps="${PIPESTATUS[*]}"'
  fi
  __rw_x=$? __rw_busy=
  [[ -z ${__rw_dbg-} ]] || { __rw_dbg=; trap - DEBUG; }
  [[ -z ${__rw_ee-} ]] || { __rw_ee=; set -e; }
  [[ -n $__rw_rc ]] || __rw_rc=$__rw_x __rw_ps=$__rw_x
  printf '%s\n' "$__RW_MARK" >&$__rw_o
  printf '%s\n' "$__RW_MARK" >&$__rw_e
  { printf '%s\0' $'\036RW1' R "$__rw_rc" "$__rw_ps" "$PWD" declare && export -p &&
    printf '\0\036END\0'; } >&4
done
""",
    "zsh": r"""
exec {__rw_o}>&1 {__rw_e}>&2
trap "return 130" INT
while IFS= read -r -d '' __rw_cmd <&3; do
  __rw_rc=''
  eval "$__rw_cmd"$'\n''__rw_rc=$? __rw_ps="${pipestatus[*]}"'
  __rw_x=$?
  [[ -n $__rw_rc ]] || { __rw_rc=$__rw_x; __rw_ps=$__rw_x }
  printf '%s\n' "$__RW_MARK" >&$__rw_o
  printf '%s\n' "$__RW_MARK" >&$__rw_e
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
        self._out, out_w = os.pipe()
        self._err, err_w = os.pipe()
        env = {k: v for k, v in env.items() if k != "__RW_MARK"}
        self.env = dict(env)  # the shell's exported environment, as of the last step
        env, later = startenv.split_start_env(env)  # nothing recorded runs as it starts
        env["__RW_MARK"] = self.mark
        self.cwd = cwd if os.path.isdir(cwd) else _here()
        self.shell = shell
        try:
            self.proc = subprocess.Popen(
                [shell, *SHELL_ARGS[shell], _LOOPS[shell]],
                stdin=subprocess.DEVNULL,
                stdout=out_w,
                stderr=err_w,
                pass_fds=(3, 4),
                cwd=self.cwd,
                env=env,
                start_new_session=True,
                preexec_fn=lambda: _place_fds(cmd_r, rep_w),
            )
        except BaseException:
            for fd in (self._cmd_w, self._rep_r, self._out, self._err):
                os.close(fd)
            raise
        finally:
            for fd in (cmd_r, rep_w, out_w, err_w):
                os.close(fd)
        self._bufs = {self._out: b"", self._err: b""}
        self._rep_buf = b""
        self._closed = False
        if later:
            self.run(startenv.export_code(later))

    def run(
        self, command: str, sink: OutputSink | None = None, err_sink: OutputSink | None = None
    ) -> StepResult:
        """Run one step; stream its stdout to `sink` as it comes, and its stderr
        to `err_sink` (to `sink` when there is none: the two merged). The
        result's output is the two merged, in the order they were read."""
        if "\0" in command:
            raise RwError("a command cannot contain a NUL byte")
        try:
            # Bytes that are not UTF-8 (kept as surrogates) go as they came.
            os.write(self._cmd_w, command.encode("utf-8", "surrogateescape") + b"\0")
        except BrokenPipeError:
            raise ShellGone("the shell has exited") from None
        mark = self.mark.encode() + b"\n"
        sinks = {self._out: sink, self._err: err_sink or sink}
        output = bytearray()
        report = None
        open_ = [self._out, self._err, self._rep_r]  # the pipes this step has yet to end on
        while open_:
            ready, _, _ = select.select(open_, [], [])
            for fd in (self._out, self._err):  # stdout first when both have come
                if fd not in ready:
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:
                    return self._gone(output, sinks)
                buf = self._bufs[fd] + chunk
                at = buf.find(mark)
                if at >= 0:
                    piece, self._bufs[fd] = buf[:at], buf[at + len(mark) :]
                    open_.remove(fd)
                else:
                    # keep only what could be the start of the mark (from its
                    # \x1e): the rest is told now, in the order it came
                    at = buf.rfind(b"\x1e", max(len(buf) - len(mark) + 1, 0))
                    cut = at if at >= 0 and mark.startswith(buf[at:]) else len(buf)
                    piece, self._bufs[fd] = buf[:cut], buf[cut:]
                if piece:
                    output += piece
                    to = sinks[fd]
                    if to:
                        to(piece)
            if self._rep_r in ready:
                chunk = os.read(self._rep_r, 65536)
                if not chunk:
                    return self._gone(output, sinks)
                self._rep_buf += chunk
                report = self._report()
                if report is not None:
                    open_.remove(self._rep_r)
        assert report is not None
        code, pipestatus, cwd, fmt = report[:4]
        env = records.parse_env(fmt, report[4:])
        env.pop("__RW_MARK", None)
        self.cwd, self.env = cwd, env
        return StepResult(int(code), pipestatus, cwd, env, bytes(output))

    def _report(self) -> list[str] | None:
        """The fields of the shell's report, once it is whole. Read here rather
        than by records.parse: values that are not UTF-8 must keep their bytes
        (as surrogates), where the spool reader replaces them. Its end marker is
        the one after its fields (records.own_end): a step may leave $PWD or a
        value holding the marker's bytes."""
        buf, at = self._rep_buf, len(records.MAGIC)
        if not buf.startswith(records.MAGIC):
            if records.MAGIC.startswith(buf):
                return None
            raise RwError("the replay's shell sent a report rw cannot read")
        end = records.own_end(buf, at, len(buf))
        if end is None:
            return None
        if end < 0:
            raise RwError("the replay's shell sent a report rw cannot read")
        body, self._rep_buf = buf[:end], buf[end + len(records.END) :]
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

    def _gone(self, output: bytearray, sinks: dict[int, OutputSink | None]) -> StepResult:
        """The shell ended during the step: what it wrote before, and its status."""
        for fd in (self._out, self._err):
            rest = self._bufs[fd]
            # what is still in the pipe (a process the step left may hold it open)
            for _ in range(64):
                if not select.select([fd], [], [], 0)[0]:
                    break
                chunk = os.read(fd, 65536)
                if not chunk:
                    break
                rest += chunk
            self._bufs[fd] = b""
            if rest:
                output += rest
                to = sinks[fd]
                if to:
                    to(rest)
        code = self.proc.wait()
        return StepResult(None, str(code), self.cwd, {}, bytes(output))

    def interrupt_step(self) -> None:
        """SIGINT to the running step, as Ctrl-C in a terminal: its programs and
        the shell. bash's step ends with 130 and the shell lives on with its
        state; zsh's shell ends (130). Between steps, nothing happens."""
        try:
            os.killpg(self.proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        """SIGKILL to the shell's process group (safe from another thread: the
        step waiting on the shell sees it end)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for fd in (self._cmd_w, self._rep_r, self._out, self._err):
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

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

"""The debugger's engine: a script's steps run one at a time on the executor,
with breakpoints, and going back. It knows nothing of the protocol: each
operation blocks until the run stops or ends and says which (a `Stopped` or an
`Ended`); output goes to a callback as it comes.

Going back is real: before a step runs (when the user commits to running it,
so after anything typed at the paused shell), its checkpoint is taken: the
shell's directory, exported environment, functions and aliases, and the files
of the watched paths (a checkpoint of rw's checkpoints). Going back restarts
the shell in that state and restores the files.
"""

from __future__ import annotations

import os
import re
import shlex
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..checkpoints.checkpoint import Checkpoints, Watch
from ..errors import RwError
from ..timeline.breakpoints import BreakpointSet
from ..timeline.executor import Executor, StepResult
from . import hover
from .recording import Recording
from .script import ScriptError, Step, split

TAIL = 4000  # characters of a step's output shown in its Step scope
GRACE = 2.0  # seconds a paused step has to end before its shell is ended

FAILED, OUTPUT = "failed", "output"  # the exception filters


@dataclass
class LineBreakpoint:
    id: int
    line: int  # the line asked for
    index: int | None  # the step it was moved to (None: no step there)
    condition: str | None = None
    hit_condition: str | None = None
    log_message: str | None = None
    hits: int = 0


@dataclass
class FunctionBreakpoint:
    id: int
    name: str
    condition: str | None = None
    hit_condition: str | None = None
    hits: int = 0

    def matches(self, command: str) -> bool:
        return bool(_runs(self.name).search(command))


def _runs(name: str) -> re.Pattern[str]:
    """A command that runs `name` (at command position, perhaps after sudo,
    env, command, exec, time or variable assignments)."""
    return re.compile(
        r"(?:^|[\n;&|({}!]|\b(?:then|do|else|if|while|until|time))\s*"
        r"(?:(?:[A-Za-z_][A-Za-z0-9_]*=\S*|sudo|command|exec|env|time|nohup)\s+)*"
        + re.escape(name)
        + r"(?=$|[\s;&|)])"
    )


_HIT = re.compile(r"\s*(==|>=|>|<=|<|%)?\s*(\d+)\s*\Z")


def check_hit_condition(text: str) -> str | None:
    """Why `text` is not a hit condition, or None."""
    return (
        None
        if _HIT.match(text)
        else f"a hit condition is N, ==N, >=N, >N, <=N, <N or %N, not {text!r}"
    )


def hit_condition_holds(text: str, hits: int) -> bool:
    m = _HIT.match(text)
    if m is None:
        return True
    op, n = m.group(1) or "==", int(m.group(2))
    return {
        "==": hits == n, ">=": hits >= n, ">": hits > n,
        "<=": hits <= n, "<": hits < n, "%": n > 0 and hits % n == 0,
    }[op]  # fmt: skip


@dataclass(frozen=True)
class Saved:
    """The state before a step ran, taken when the user committed to running it."""

    index: int
    cwd: str
    env: dict[str, str]
    definitions: str
    status: int  # $? before it
    checkpoint: int | None  # the watched files' checkpoint
    inner: int | None = None  # a step of the file the step `index` sources


@dataclass(frozen=True)
class Ran:
    index: int
    exit_code: int | None
    pipestatus: str
    started_at: float
    duration_ms: float
    output: bytes
    inner: int | None = None  # a step of the file the step `index` sources

    @property
    def tail(self) -> str:
        text = self.output.decode(errors="replace")
        return text if len(text) <= TAIL else "…" + text[-TAIL:]


@dataclass
class Sourced:
    """A sourced script stepped into: its steps run one by one in the shell,
    as sourcing it would run them."""

    path: str
    steps: list[Step]
    at: int  # the program's step that sources it
    pc: int = 0  # its step about to run


_SOURCE = re.compile(r"\s*(?:\.|source)\s+([^\s;&|<>()$`\\'\"*?\[\]{}~#]+)\s*\Z")


@dataclass(frozen=True)
class Stopped:
    reason: str  # entry, step, breakpoint, exception, goto, pause
    description: str = ""
    breakpoints: tuple[int, ...] = ()


@dataclass(frozen=True)
class Raised:
    """What an exception stop was about, for the exceptionInfo request."""

    id: str  # failed, output, rw breakpoint, not run
    description: str
    step: Step
    ran: Ran | None = None  # None: the step was not run


@dataclass(frozen=True)
class Ended:
    exit_code: int


Outcome = Stopped | Ended


@dataclass
class Launch:
    """What the debugger runs, and how."""

    path: str
    steps: list[Step]
    shell: str = "bash"
    cwd: str = "."
    env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    watch: list[Watch] | None = None  # None: the configured watched paths
    session: str | None = None  # a recorded session debugged (then `path` shows it)
    refused: dict[int, str] = field(default_factory=dict)  # steps not run, and why
    cwds: dict[int, str] = field(default_factory=dict)  # where recorded steps ran
    text: str = ""  # what the editor shows
    numbers: dict[int, int] = field(default_factory=dict)  # recorded step numbers
    stored: BreakpointSet | None = None  # a debugged session's own breakpoints


class Debugger:
    def __init__(
        self,
        launch: Launch,
        checkpoints: Checkpoints | None,
        on_output: Callable[[str, str], None],
        recording: Recording | None = None,
    ):
        self.launch = launch
        self.steps = launch.steps
        self.watch = launch.watch or []
        self.checkpoints = checkpoints if self.watch else None
        self.on_output = on_output  # (category, text)
        self.recording = recording
        # "Run Without Debugging" (launch's noDebug): steps run to the end, no
        # breakpoint, logpoint or exception filter stops or prints
        self.no_debug = False
        self.pc = 0  # the step about to run
        self.history: list[tuple[Saved, Ran]] = []  # the steps run, in order
        self.status = 0  # $? as the next step will see it
        self.line_breakpoints: list[LineBreakpoint] = []
        self.function_breakpoints: list[FunctionBreakpoint] = []
        self.filters: set[str] = set()
        self.file_breakpoints: dict[str, list[LineBreakpoint]] = {}  # in sourced files
        self.sourced: Sourced | None = None  # the sourced script stepped into
        self.output_pattern: re.Pattern[str] | None = None
        self.last_exception: Raised | None = None  # why the run stopped on an exception
        self._pause = threading.Event()
        self._running = False
        self._in_step = 0  # the step running now (its serial number), or 0
        self._serial = 0
        self._killed = False  # kill(): terminate or disconnect
        self.ended = False
        self._sourced_files: dict[int, tuple[str, list[Step]]] = {}
        self.ex = Executor(launch.cwd, launch.env, launch.shell)
        self.first_env = dict(self.ex.env)
        self._as_the_script()

    def _as_the_script(self) -> None:
        """$0 the script's path and $1... its arguments, as when it runs."""
        code = []
        if self.launch.session is None:
            zero = "0" if self.launch.shell == "zsh" else "BASH_ARGV0"
            code.append(f"{zero}={shlex.quote(self.launch.path)}")
        if self.launch.args:
            code.append("set -- " + " ".join(shlex.quote(a) for a in self.launch.args))
        if code:
            self.ex.run("; ".join(code))

    # --- what the front end shows ------------------------------------------

    @property
    def current(self) -> Step | None:
        if self.sourced is not None:
            return self.sourced.steps[self.sourced.pc]
        return self.steps[self.pc] if self.pc < len(self.steps) else None

    def step_of(self, index: int, inner: int | None) -> tuple[str, Step]:
        """(its file, the step) of a step run or saved."""
        if inner is None:
            return self.launch.path, self.steps[index]
        sourced = self._sourced_by(index)
        assert sourced is not None
        return sourced.path, sourced.steps[inner]

    def sourced_text(self, path: str) -> str | None:
        """The text of a sourced script stepped into, or None."""
        for known in self._sourced_files.values():
            if _same(known[0], path):
                try:
                    with open(known[0], encoding="utf-8", errors="surrogateescape") as f:
                        return f.read()
                except OSError:
                    return None
        return None

    def sources(self, index: int) -> str | None:
        """The file step `index` sources (a literal path, found as the shell
        would find it from where the paused shell is), if it can be stepped
        into: readable, and split into steps. None when it cannot."""
        sourced = self._sourced_by(index)
        return sourced.path if sourced is not None else None

    def _sourced_by(self, index: int) -> Sourced | None:
        found = self._sourced_files.get(index) or self._find_sourced(index)
        if found is None:
            return None
        self._sourced_files[index] = found  # where it was found, also after going back
        return Sourced(found[0], found[1], index)

    def _find_sourced(self, index: int) -> tuple[str, list[Step]] | None:
        m = _SOURCE.match(self.steps[index].command)
        if m is None:
            return None
        name = m.group(1)
        cwd = self.ex.cwd
        if "/" in name:
            candidates = [os.path.join(cwd, name)]
        else:  # bash looks in $PATH first, zsh's `source` in the directory first
            path = [os.path.join(d or ".", name)
                    for d in self.ex.env.get("PATH", "").split(":")]  # fmt: skip
            here = os.path.join(cwd, name)
            candidates = [here, *path] if self.launch.shell == "zsh" else [*path, here]
        for candidate in candidates:
            if os.path.isfile(candidate) and os.access(candidate, os.R_OK):
                try:
                    with open(candidate, encoding="utf-8", errors="surrogateescape") as f:
                        steps = split(f.read(), self.launch.shell)
                except (OSError, ScriptError):
                    return None
                return (os.path.realpath(candidate), steps) if steps else None
        return None

    def set_file_breakpoints(self, path: str, points: list[LineBreakpoint]) -> list[Step] | None:
        """Breakpoints in a script the program may source: its steps (to verify
        them against), or None when it cannot be read or split."""
        try:
            with open(path, encoding="utf-8", errors="surrogateescape") as f:
                steps = split(f.read(), self.launch.shell)
        except (OSError, ScriptError):
            return None
        for bp in points:
            bp.index = _step_at_line(steps, bp.line)
        self.file_breakpoints[os.path.realpath(path)] = points
        return steps

    def env_changed(self) -> set[str]:
        """Exported variables the last step changed (or set, or unset)."""
        before = self.history[-1][0].env if self.history else self.first_env
        now = self.ex.env
        return {k for k in before.keys() | now.keys() if before.get(k) != now.get(k)}

    def step_at_line(self, line: int) -> int | None:
        """The step a breakpoint at `line` belongs to: the one covering it, else the next."""
        return _step_at_line(self.steps, line)

    # --- the paused shell --------------------------------------------------

    def evaluate(self, command: str) -> StepResult:
        """A command typed at the paused shell (the REPL): its changes stay."""
        self._check_paused()
        res = self.ex.run(_no_errexit(f"{{ {command}\n}}"))
        if res.exit_code is None:
            self.ended = True
        return res

    def expand(self, words: str) -> str:
        """Words expanded without side effects (hover, watch): parsed by rw and
        resolved from the paused shell's variables, never handed to a shell."""
        self._check_paused()
        run = self.ex.run
        return hover.expand(
            words, self.launch.shell, lambda code: run(_no_errexit(code)).output, self.status
        )

    def complete(self, line: str) -> tuple[int, list[str]]:
        """Completions for the console's `line` (the text before the cursor):
        where the word being completed starts, and what can take its place:
        commands and functions first in a line, `$` variables, else file
        names. Asked of the paused shell in a subshell (nothing changes)."""
        self._check_paused()
        start = max(line.rfind(c) for c in " \t;|&(<>`") + 1
        word = line[start:]
        first = not line[:start].strip() or line[:start].rstrip()[-1:] in (";", "|", "&", "(")
        kind = "v" if word.startswith("$") else "c" if first else "f"
        stem = word.lstrip("${") if kind == "v" else word
        quoted = shlex.quote(stem)
        if self.launch.shell == "zsh":
            listing = {
                "v": f"print -rl -- ${{(k)parameters[(I){quoted}*]}}",
                "c": f"print -rl -- ${{(k)commands[(I){quoted}*]}} ${{(k)builtins[(I){quoted}*]}}"
                f" ${{(k)functions[(I){quoted}*]}} ${{(k)aliases[(I){quoted}*]}}",
                "f": f"print -rl -- {quoted}*(N)",
            }[kind]
        else:
            listing = f"compgen -{'v' if kind == 'v' else 'c' if kind == 'c' else 'f'} -- {quoted}"
        res = self.ex.run(_no_errexit(f"( {listing} ) 2>/dev/null"))
        found = sorted(set(res.output.decode(errors="replace").split("\n")) - {""})[:200]
        prefix = word[: len(word) - len(stem)]
        return start, [prefix + f for f in found if not f.startswith("__rw_")]

    def set_export(self, name: str, value: str) -> None:
        if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
            raise RwError(f"not a variable name: {name!r}")
        self._check_paused()
        res = self.ex.run(f"\\builtin export {name}={shlex.quote(value)}")
        if res.exit_code:
            raise RwError(res.output.decode(errors="replace").strip() or f"cannot set {name}")

    def _check_paused(self) -> None:
        if self._running:
            raise RwError("the program is running; pause it first")
        if self.ended:
            raise RwError("the program has ended")

    # --- going forwards ----------------------------------------------------

    def next(self) -> Outcome:
        """Run the step about to run, and stop before the next one."""
        return self._go(single=True)

    def run(self) -> Outcome:
        """From the start without stopping on entry: a breakpoint on the first
        step stops before it."""
        self._check_paused()
        if self.steps and self.pc == 0:
            ids = self._breakpoints_at(0)
            if ids:
                return Stopped("breakpoint", "", tuple(ids))
        return self.continue_()

    def continue_(self) -> Outcome:
        """Run until a breakpoint, an exception filter, a pause or the end."""
        return self._go(single=False)

    def step_in(self) -> Outcome:
        """Into the script that the step about to run sources (`source FILE`,
        `. FILE`: a literal path, a readable script that splits), stopping
        before its first command, nothing run; otherwise as next."""
        self._check_paused()
        if self.sourced is None and self.pc < len(self.steps):
            if not self.launch.refused.get(self.pc):
                sourced = self._sourced_by(self.pc)
                if sourced is not None:
                    self.sourced = sourced
                    return Stopped("step")
        return self.next()

    def step_out(self) -> Outcome:
        """Out of the sourced script: the rest of it, stopping after the step
        that sources it (or at a breakpoint); outside one, as continue."""
        return self._go(single=False, out=self.sourced is not None)

    def pause(self) -> None:
        """Stop before the next step; interrupt the step running now (from any
        thread). A step that has not ended GRACE seconds later (a loop in a
        function, a trap of the script's own) has its shell ended: the shell
        is started again as it was before the step."""
        self._pause.set()
        serial, ex = self._in_step, self.ex
        if serial:
            ex.interrupt_step()
            timer = threading.Timer(GRACE, self._end_stuck, (serial, ex))
            timer.daemon = True
            timer.start()

    def _end_stuck(self, serial: int, ex: Executor) -> None:
        if self._in_step == serial and self.ex is ex:
            ex.kill()

    def _go(self, single: bool, out: bool = False) -> Outcome:
        self._check_paused()
        self._running = True
        self._pause.clear()
        self.last_exception = None
        try:
            while True:
                if self.sourced is None and self.pc >= len(self.steps):
                    return self._end(self.status)
                if self._pause.is_set():  # paused between steps
                    return Stopped("pause", "paused")
                if self.sourced is None:
                    refused = self.launch.refused.get(self.pc)
                    if refused:
                        return self._raise(Raised("not run", refused, self.steps[self.pc]))
                    if self._enter_for_breakpoints():
                        # stepping over (next) a source with breakpoints inside
                        single, out = False, single or out
                        ids = self._breakpoints_here()
                        if ids:
                            return Stopped("breakpoint", "", tuple(ids))
                inside = self.sourced is not None
                ran = self._run_one()
                if ran.exit_code is None:
                    code = int(ran.pipestatus) if ran.pipestatus.lstrip("-").isdigit() else 0
                    return self._end(code if code >= 0 else 128 - code)
                hit = self._exception(ran)
                if hit:
                    return hit
                if self._pause.is_set():
                    return Stopped("pause", "paused")
                if self.sourced is None and self.pc >= len(self.steps):
                    return self._end(self.status)
                if single or (out and inside and self.sourced is None):
                    return Stopped("step")
                ids = self._breakpoints_here()
                if ids:
                    return Stopped("breakpoint", "", tuple(ids))
        finally:
            self._running = False

    def _enter_for_breakpoints(self) -> bool:
        """Into the script the step about to run sources, when breakpoints are
        set in it (so that they stop the run there)."""
        if not any(self.file_breakpoints.values()):
            return False
        sourced = self._sourced_by(self.pc)
        if sourced is None or not self.file_breakpoints.get(sourced.path):
            return False
        self.sourced = sourced
        return True

    def _breakpoints_here(self) -> list[int]:
        return self._breakpoints_at(self.pc, None if self.sourced is None else self.sourced.pc)

    def _run_one(self) -> Ran:
        index = self.pc
        sourced = self.sourced
        inner = None if sourced is None else sourced.pc
        path, step = (self.launch.path, self.steps[index]) if sourced is None else (
            sourced.path, sourced.steps[sourced.pc])  # fmt: skip
        definitions = self.ex.definitions()
        checkpoint = None
        if self.checkpoints is not None:
            try:
                checkpoint = self.checkpoints.create(
                    self.watch, origin="dap",
                    label=f"rw dap: before line {step.line} of {path}",
                ).id  # fmt: skip
            except RwError as e:
                self.on_output("stderr", f"rw dap: no checkpoint of the watched files: {e}\n")
        saved = Saved(index, self.ex.cwd, dict(self.ex.env), definitions, self.status, checkpoint,
                      inner)  # fmt: skip
        ran_in = self.launch.cwds.get(index) if sourced is None else None
        if ran_in and ran_in != self.ex.cwd and os.path.isdir(ran_in):
            # a recorded step runs where it ran (as rw replay does)
            self.ex.run(f"\\builtin cd -- {shlex.quote(ran_in)}")
        # $? as the script would see it: the previous command's status (in an
        # && list, so that set -e does not end the shell on it)
        command = step.command if not self.status else f"(exit {self.status}) && :\n{step.command}"
        started = time.time()
        clock = time.monotonic()
        self._record(lambda r: r.begin(step.command, self.ex.cwd))
        self._serial += 1
        self._in_step = self._serial
        try:
            res = self.ex.run(
                command,
                lambda b: self.on_output("stdout", b.decode(errors="replace")),
                lambda b: self.on_output("stderr", b.decode(errors="replace")),
            )
        finally:
            self._in_step = 0
        if res.exit_code is None and self._pause.is_set() and not self._killed:
            res = self._paused_shell_ended(saved, res)
        self._record(lambda r: r.end(res))  # written by flush(), after the stop is told
        ran = Ran(index, res.exit_code, res.pipestatus, started,
                  (time.monotonic() - clock) * 1000, res.output, inner)  # fmt: skip
        self.history.append((saved, ran))
        if sourced is not None and sourced.pc + 1 < len(sourced.steps):
            sourced.pc += 1
        else:  # the program's step, or the sourced script's last: on after it
            self.sourced = None
            self.pc = index + 1
        if res.exit_code is not None:
            self.status = res.exit_code
        return ran

    def _paused_shell_ended(self, saved: Saved, res: StepResult) -> StepResult:
        """The step's shell ended on a pause (zsh's does; bash's when the step
        would not end): a new one as before the step, the step ended with 130."""
        step = self.step_of(saved.index, saved.inner)[1]
        self.ex = self.ex.restart(saved.cwd, saved.env, saved.definitions)
        self._as_the_script()
        self.on_output(
            "console",
            f"rw dap: pausing line {step.line} ended its shell; the shell was started again "
            "as it was before that step (its directory, exports, functions and aliases)\n",
        )
        return StepResult(130, "130", self.ex.cwd, dict(self.ex.env), res.output)

    def flush(self) -> None:
        """Write what the recording holds (after the front end told the stop)."""
        self._record(lambda r: r.flush())

    def _record(self, what: Callable[[Recording], None]) -> None:
        """Record in the run's session; a store that fails stops the recording
        (said once), never the debugging."""
        if self.recording is None:
            return
        try:
            what(self.recording)
        except (RwError, sqlite3.Error) as e:
            self.recording = None
            self.on_output("stderr", f"rw dap: this run is no longer recorded: {e}\n")

    def _exception(self, ran: Ran) -> Stopped | None:
        if self.no_debug:
            return None
        path, step = self.step_of(ran.index, ran.inner)
        where = f"line {step.line}" + ("" if ran.inner is None else f" of {path}")
        stored = self.launch.stored
        if stored is not None:
            hit = stored.after(ran.exit_code, ran.output.decode(errors="replace"))
            if hit is not None:
                why = f"rw breakpoint {hit.id}, {hit.describe()}, after {where}"
                return self._raise(Raised("rw breakpoint", why, step, ran))
        if FAILED in self.filters and ran.exit_code:
            why = f"{where} exited with status {ran.exit_code}"
            return self._raise(Raised(FAILED, why, step, ran))
        if OUTPUT in self.filters and self.output_pattern is not None:
            if self.output_pattern.search(ran.output.decode(errors="replace")):
                why = f"the output of {where} matches /{self.output_pattern.pattern}/"
                return self._raise(Raised(OUTPUT, why, step, ran))
        return None

    def _raise(self, raised: Raised) -> Stopped:
        self.last_exception = raised
        return Stopped("exception", raised.description)

    def _breakpoints_at(self, index: int, inner: int | None = None) -> list[int]:
        """The breakpoints that stop before step `index` (or its sourced
        script's step `inner`); logpoints print and go on."""
        if self.no_debug:
            return []
        path, step = self.step_of(index, inner)
        command = step.command
        hit = []
        lines = self.line_breakpoints if inner is None else self.file_breakpoints.get(path, [])
        points: list[LineBreakpoint | FunctionBreakpoint] = [
            bp for bp in lines if bp.index == (index if inner is None else inner)
        ]
        points += [bp for bp in self.function_breakpoints if bp.matches(command)]
        stored = self.launch.stored
        if stored is not None and inner is None and index in self.launch.numbers:
            found = stored.before(self.launch.numbers[index], command)
            if found is not None:
                self.on_output("console", f"rw breakpoint {found.id}: {found.describe()}\n")
                hit.append(0)  # not one the editor set: no id of its own
        for bp in points:
            if bp.condition and not self._condition_holds(bp.condition):
                continue
            bp.hits += 1
            if bp.hit_condition and not hit_condition_holds(bp.hit_condition, bp.hits):
                continue
            if isinstance(bp, LineBreakpoint) and bp.log_message is not None:
                self.on_output("console", self._log_text(bp.log_message) + "\n")
                continue
            hit.append(bp.id)
        return hit

    def _condition_holds(self, condition: str) -> bool:
        # in a subshell: under set -u an unset variable ends it, not the script
        res = self.ex.run(_no_errexit(f"( {condition}\n) >/dev/null 2>&1"))
        if res.exit_code not in (0, 1):
            self.on_output(
                "stderr", f"rw dap: the condition {condition!r} exited {res.exit_code}: stopping\n"
            )
        return res.exit_code != 1

    def _log_text(self, message: str) -> str:
        """A logpoint's message, each {words} expanded in the paused shell."""
        parts = _braced(message)
        words = parts[1::2]
        if not words:
            return message
        quoted = " ".join(f'"{w}"' for w in words)
        res = self.ex.run(_no_errexit(f"( \\builtin printf '%s\\0' {quoted} ) 2>&1"))
        values = res.output.decode(errors="replace").split("\0")
        out = []
        for i, part in enumerate(parts):
            out.append(part if i % 2 == 0 else (values[i // 2] if i // 2 < len(values) else ""))
        return "".join(out)

    def _end(self, code: int) -> Ended:
        self.ended = True
        return Ended(code)

    # --- going back --------------------------------------------------------

    def step_back(self) -> Outcome:
        """Back to before the last step run."""
        self._check_paused()
        if not self.history:
            raise RwError("nothing to step back to: no step has run")
        self._restore(len(self.history) - 1)
        return Stopped("step")

    def reverse_continue(self) -> Outcome:
        """Back to the last step before this one that has a breakpoint (its
        condition holding in the state restored), or to the start."""
        self._check_paused()
        if not self.history:
            raise RwError("nothing to go back to: no step has run")
        for k in range(len(self.history) - 1, -1, -1):
            saved = self.history[k][0]
            if not self._has_breakpoint(saved.index, saved.inner):
                continue
            self._restore(k)
            ids = self._breakpoints_at(saved.index, saved.inner)
            if ids:
                return Stopped("breakpoint", "", tuple(ids))
        self._restore(0)
        return Stopped("entry", "back at the start")

    def _has_breakpoint(self, index: int, inner: int | None = None) -> bool:
        path, step = self.step_of(index, inner)
        command = step.command
        if inner is not None:
            return any(
                bp.index == inner and bp.log_message is None
                for bp in self.file_breakpoints.get(path, [])
            ) or any(bp.matches(command) for bp in self.function_breakpoints)
        stored = self.launch.stored
        number = self.launch.numbers.get(index)
        return (
            any(bp.index == index and bp.log_message is None for bp in self.line_breakpoints)
            or any(bp.matches(command) for bp in self.function_breakpoints)
            or (stored is not None and number is not None
                and stored.before(number, command) is not None)
        )  # fmt: skip

    def goto(self, index: int) -> Outcome:
        """To before step `index`: forwards skipping steps, backwards restoring."""
        self._check_paused()
        if not 0 <= index < len(self.steps):
            raise RwError(f"no step {index + 1}")
        if index < self.pc:
            # the history's steps are in the script's order (going back cuts it)
            k = next((k for k, (s, _) in enumerate(self.history) if s.index >= index), None)
            if k is not None:
                self._restore(k)
        self.pc = index
        self.sourced = None
        return Stopped("goto", f"at line {self.steps[index].line}")

    def restart(self) -> Outcome:
        """Back to the start, everything restored."""
        self._check_paused()
        if self.history:
            self._restore(0)
        self.pc = 0
        self.sourced = None
        return Stopped("entry")

    def _restore(self, k: int) -> None:
        """The state before the k-th step run: shell and watched files."""
        saved = self.history[k][0]
        self.ex = self.ex.restart(saved.cwd, saved.env, saved.definitions)
        self._as_the_script()
        if self.checkpoints is not None and saved.checkpoint is not None:
            self._restore_files(saved.checkpoint)
        dropped = [s.checkpoint for s, _ in self.history[k:] if s.checkpoint is not None]
        del self.history[k:]
        self._forget(dropped)
        self.pc = saved.index
        self.status = saved.status
        sourced = None if saved.inner is None else self._sourced_by(saved.index)
        if sourced is not None and saved.inner is not None:
            sourced.pc = saved.inner
        self.sourced = sourced

    def going_back(self, k: int) -> list[tuple[str, str]]:
        """What going back to before the k-th step run would restore, as
        (what, how) pairs: the directory, each export, the functions and
        aliases, and each watched file (compared with now)."""
        saved = self.history[k][0]
        out = []
        if saved.cwd != self.ex.cwd:
            out.append(("cwd", f"{saved.cwd} (now {self.ex.cwd})"))
        now = self.ex.env
        for name in sorted(saved.env.keys() | now.keys()):
            then = saved.env.get(name)
            if then != now.get(name):
                out.append((name, "unset" if then is None else then))
        if not self.ended and saved.definitions != self.ex.definitions():
            line = self.step_of(saved.index, saved.inner)[1].line
            out.append(("functions and aliases", f"as before line {line}"))
        if self.checkpoints is not None and saved.checkpoint is not None:
            comparison = self.checkpoints.compare(saved.checkpoint)
            for tree in comparison.trees:
                out += [("file", c.describe(tree.root).strip()) for c in tree.changes]
        elif self.watch:
            out.append(("files", "no checkpoint was taken"))
        return out

    def _restore_files(self, checkpoint: int) -> None:
        """The watched files as checkpointed; nothing done (one stat pass) when
        none changed since."""
        assert self.checkpoints is not None
        if self.checkpoints.compare(checkpoint).empty:
            return
        report = self.checkpoints.restore(checkpoint)
        for line in report.failed:
            self.on_output("stderr", f"rw dap: not restored: {line}\n")

    def _forget(self, checkpoints: list[int]) -> None:
        if self.checkpoints is not None and checkpoints:
            try:
                self.checkpoints.remove(checkpoints)
            except RwError:
                pass

    # --- the end -----------------------------------------------------------

    def kill(self) -> None:
        """End the shell's process group now (from any thread: a signal only);
        the step running returns and the run ends."""
        self._killed = True
        self._pause.set()
        self.ex.kill()

    def close(self) -> None:
        """End the shell and what it started; drop the run's checkpoints."""
        self.ended = True
        self.ex.close()
        self._record(lambda r: r.close())
        self.recording = None
        self._forget([s.checkpoint for s, _ in self.history if s.checkpoint is not None])
        self.history.clear()


def _no_errexit(command: str) -> str:
    """`command` as the first of an && list: its failure neither ends a shell
    under set -e (as the script's own commands would) nor hides its status."""
    return f"{command} && :"


def _braced(message: str) -> list[str]:
    """`message` cut at its outermost {...}: text, words, text, words, ... text."""
    parts, depth, start, last = [], 0, 0, 0
    for i, c in enumerate(message):
        if c == "{":
            if depth == 0:
                start = i
            depth += 1
        elif c == "}" and depth:
            depth -= 1
            if depth == 0:
                parts += [message[last:start], message[start + 1 : i]]
                last = i + 1
    return [*parts, message[last:]]


def _step_at_line(steps: list[Step], line: int) -> int | None:
    """The step a breakpoint at `line` belongs to: the one covering it, else the next."""
    for i, step in enumerate(steps):
        if step.covers(line) or step.line > line:
            return i
    return None


def _same(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return os.path.realpath(a) == os.path.realpath(b)

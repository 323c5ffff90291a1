"""Replaying a recorded session through the executor, with breakpoints.

The engine decides what runs and records the run as a new session (origin
replay, parent the source); a Controller, supplied by the front end, decides
what to do at each pause.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..capture.outputs import make_output
from ..errors import EXIT_PROBLEM, RwError
from ..paths import new_session_id
from ..redact import MASK, Redactor
from ..store import MAX_OUTPUT, StepRow, Store, env_blob
from . import startenv, travel
from .breakpoints import BreakpointSet
from .executor import Executor, OutputSink, StepResult
from .rw_commands import rw_verb

CONTINUE, NEXT, SKIP, EDIT, SHELL, BACK, QUIT = (
    "continue", "next", "skip", "edit", "shell", "back", "quit",
)  # fmt: skip
# Why a partial step (StepRow.partial) is never run as recorded.
PARTIAL = (
    "recorded partly: bash with history off kept only the first command of its line; "
    "edit it into the whole line, or skip it"
)


@dataclass(frozen=True)
class Pause:
    number: int  # the step about to run
    command: str
    reason: str  # why we stopped: a breakpoint, --step, or the previous step's result


@dataclass(frozen=True)
class Action:
    kind: str
    command: str | None = None  # for EDIT
    state: tuple[str, dict[str, str]] | None = None  # for SHELL: (cwd, env) to carry on from
    definitions: str | None = None  # for SHELL: functions and aliases to carry on with


class Controller:
    """What to do at a pause. The default, for no terminal: stop the replay.

    `state` is the paused shell's (cwd, env); `definitions()` gives its
    functions and aliases."""

    def pause(
        self, pause: Pause, state: tuple[str, dict[str, str]], definitions: Callable[[], str]
    ) -> Action:
        first = pause.command.split("\n", 1)[0]  # "" for an empty command
        raise RwError(f"stopped at step {pause.number} ({pause.reason}): {first}", EXIT_PROBLEM)

    def secret(self, secret: Secret) -> str:
        """The text to put in place of a value stored redacted (no terminal: stop)."""
        hint = f" (or pass --env-secrets with {secret.name} set)" if secret.name else ""
        raise RwError(
            f"stopped before step {secret.step}: it holds a value stored redacted, "
            f"{secret.where}; replay it on a terminal to type the value{hint}",
            EXIT_PROBLEM,
        )


@dataclass(frozen=True)
class Secret:
    """A value of a step's command that was stored redacted."""

    step: int
    command: str
    index: int  # 1, 2, ... of the step's redacted values
    name: str | None  # the variable it was assigned to (`NAME=<redacted>`), if any

    @property
    def where(self) -> str:
        first = self.command.split("\n", 1)[0]
        return f"{self.name} in: {first}" if self.name else f"value {self.index} of: {first}"


@dataclass
class ReplayResult:
    session: str
    ran: list[int] = field(default_factory=list)
    stopped: str | None = None  # why the replay ended early


def _state_before(store: Store, sid: str, step: StepRow) -> tuple[str, dict[str, str]]:
    state = travel.state_after(store, sid, step.number - 1, dict(os.environ))
    cwd = step.cwd_before if step.cwd_before and os.path.isdir(step.cwd_before) else state.cwd
    return cwd, state.env


def foreign_notice(sid: str) -> str:
    """Said once when a session from elsewhere is run."""
    return (
        f"session {sid} was imported (a file, or pulled from a host): it runs the "
        "commands it holds, as recorded there; from its environment, what a shell "
        "or a program would run as code, and PATH, are yours"
    )


# `NAME=` just before a redacted value: the variable it was assigned to.
_ASSIGNED = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)=\Z")


def redacted_values(number: int, command: str) -> list[Secret]:
    """The values of `command` that were stored redacted, in order."""
    parts = command.split(MASK)
    return [
        Secret(number, command, i, m.group(1) if (m := _ASSIGNED.search(part)) else None)
        for i, part in enumerate(parts[:-1], 1)
    ]


def replaying_sessions(store: Store) -> set[str]:
    """The sessions this process is part of through a replay running above it:
    each replay among its ancestor processes, and the session it replays. A
    replay refuses them (a step that replays its own session would start
    replays without end)."""
    ancestors = _ancestors()
    part_of: set[str] = set()
    for row in store.sessions():
        if row.origin != "replay" or row.ended_at is not None or row.pid not in ancestors:
            continue
        if ancestors[row.pid] > row.started_at + 1:
            continue  # a pid used again since (a replay that was killed)
        part_of.add(row.id)
        if row.parent_id:
            part_of.add(row.parent_id)
    return part_of


def _ancestors() -> dict[int, float]:
    """This process's ancestors: pid -> when it started (seconds since 1970)."""
    try:
        with open("/proc/stat", "rb") as f:
            boot = next(float(line.split()[1]) for line in f if line.startswith(b"btime "))
        tick = os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, StopIteration):
        return {}
    found: dict[int, float] = {}
    pid = os.getppid()
    while pid > 1 and pid not in found:
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                # pid (comm) state ppid ...: comm may hold spaces and parentheses
                fields = f.read().rsplit(b")", 1)[1].split()
            found[pid] = boot + int(fields[19]) / tick
            pid = int(fields[1])
        except (OSError, ValueError, IndexError):
            break
    return found


class Replay:
    def __init__(
        self,
        store: Store,
        source: str,
        steps: list[StepRow],
        *,
        breakpoints: BreakpointSet,
        every_step: bool,
        controller: Controller,
        sink: OutputSink,
        shell: str = "bash",
        create_dirs: bool = False,
        env_secrets: bool = False,
        redactor: Redactor | None = None,
        max_output: int = MAX_OUTPUT,
        say: Callable[[str], None] = lambda line: None,
    ):
        if not steps:
            raise RwError("no steps to replay")
        self.store, self.source, self.steps = store, source, steps
        self.breakpoints, self.every_step = breakpoints, every_step
        self.controller, self.sink, self.shell = controller, sink, shell
        self.create_dirs, self.env_secrets = create_dirs, env_secrets
        self.redactor = redactor or Redactor()
        self.max_output = max_output
        self.say = say
        self.foreign = travel.is_foreign(store, source)

    def run(self) -> ReplayResult:
        first = self.steps[0]
        sid = self._open_session(first.number - 1)
        result = ReplayResult(sid)
        cwd, env = _state_before(self.store, self.source, first)
        if self.foreign:
            self.say(foreign_notice(self.source))
        env["RW_SESSION"] = sid  # the steps run in the replay's session
        ex = Executor(cwd, env, self.shell)
        # (index, state before it) of each step run, for `back`
        states: list[tuple[int, str, dict[str, str]]] = []
        number = first.number  # numbering in the replay session: one per step run
        i = 0
        why_after: str | None = None  # a breakpoint hit by the step just run
        pause_next = False  # `next`, `skip`, `shell` or `back` asked to stop again
        no_pause_once = False  # `back`: re-run the previous step without asking
        try:
            while i < len(self.steps):
                step = self.steps[i]
                command = step.command
                if rw_verb(command) is not None:
                    # rw's own (rw log, rw back 2, rw replay ...): never run again;
                    # a breakpoint on it pauses before the next step instead
                    bp = self.breakpoints.before(step.number, command)
                    if bp and not why_after:
                        why_after = f"{bp.describe()} (on rw's own step {step.number})"
                    stop = self._apply_rw_step(ex, sid, number, step)
                    if stop:
                        result.stopped = stop
                        break
                    number += 1
                    i += 1
                    continue
                bp = self.breakpoints.before(step.number, command)
                reason = (
                    PARTIAL if step.partial
                    else f"breakpoint {bp.describe()}" if bp
                    else f"the step before hit breakpoint {why_after}" if why_after
                    else "stepping" if self.every_step or pause_next
                    else None
                )  # fmt: skip
                why_after, pause_next, then_pause = None, False, False
                if reason and (not no_pause_once or step.partial):
                    action = self.controller.pause(
                        Pause(step.number, command, reason), (ex.cwd, dict(ex.env)), ex.definitions
                    )
                    if action.kind == QUIT:
                        result.stopped = f"quit before step {step.number}"
                        break
                    if action.kind == SKIP:
                        i += 1
                        pause_next = True
                        continue
                    if action.kind == SHELL:
                        if action.state:
                            cwd, env = action.state
                            ex = ex.restart(cwd, env, action.definitions or ex.definitions())
                        pause_next = True
                        continue
                    if action.kind == BACK:
                        pause_next = True
                        if not states:
                            continue
                        j, cwd, back_env = states[-1]
                        if not os.path.isdir(cwd) and self._make_dir(cwd, self.steps[j]):
                            self.say(
                                f"cannot go back to step {self.steps[j].number}: its directory "
                                f"{cwd} no longer exists (--create-dirs makes it)"
                            )
                            continue
                        states.pop()
                        ex = ex.restart(cwd, back_env, ex.definitions())
                        i, no_pause_once = j, True
                        continue
                    if action.kind == EDIT and action.command:
                        command = action.command
                    elif step.partial:  # (half a line is not run as if it were the line)
                        self.say(f"step {step.number} is not run as recorded: {PARTIAL}")
                        no_pause_once = False
                        continue
                    then_pause = action.kind in (NEXT, EDIT)
                if no_pause_once:
                    no_pause_once, then_pause = False, True
                stop = self._check_dir(ex, step)
                if stop:
                    result.stopped = stop
                    break
                runnable = self._fill_secrets(step.number, command)
                states.append((i, ex.cwd, dict(ex.env)))
                res = self._run_step(ex, sid, number, runnable, recorded=command)
                result.ran.append(step.number)
                number += 1
                if res.exit_code is None:
                    result.stopped = f"the shell exited during step {step.number}"
                    break
                hit = self.breakpoints.after(res.exit_code, res.output.decode(errors="replace"))
                why_after = hit.describe() if hit else None
                pause_next = then_pause
                i += 1
        finally:
            ex.close()
            with self.store.transaction():
                self.store.end_session(sid, time.time())
        return result

    def _apply_rw_step(self, ex: Executor, sid: str, number: int, step: StepRow) -> str | None:
        """Show rw's own step and apply what it changed in the shell when it ran
        (rw back, rw branch, rw rewind: the directory and environment), recorded
        as step `number` with its recorded exit status; a reason to stop, or None."""
        first = step.command.split("\n", 1)[0]
        before = self.store.env_before(self.source, step.number)
        changes = []
        if before is not None and step.env_id is not None:
            changes = [
                (name, new) for name, _, new in
                travel.env_changes(self.store.env(before), self.store.env(step.env_id))
                if (new is None or MASK not in new)
                and not (self.foreign and startenv.untrusted(name))
            ]  # fmt: skip
        moved = step.cwd_after if step.cwd_after and step.cwd_after != step.cwd_before else None
        if moved is not None and not os.path.isdir(moved):
            problem = self._make_dir(moved, step)
            if problem:
                return problem
        code, done = [], []
        if moved is not None:
            code.append(f"\\builtin cd -- {travel.quote(moved)}")
            done.append(f"cd {moved}")
        for name, value in changes:
            if value is None:
                code.append(f"\\builtin unset {name}")
                done.append(f"unset {name}")
            else:
                code.append(f"\\builtin export {name}={travel.quote(value)}")
                done.append(f"export {name}")
        self.say(f"step {step.number} is rw's own, not run again: {first}")
        if done:
            self.say(f"  what it changed in the shell is applied: {', '.join(done)}")
        self._run_step(ex, sid, number, "\n".join(code) or ":", recorded=step.command, rw=step)
        return None

    def _check_dir(self, ex: Executor, step: StepRow) -> str | None:
        """A step never runs anywhere but where it ran: a reason to stop, or None."""
        want = step.cwd_before
        if not want or os.path.isdir(want):
            return None
        problem = self._make_dir(want, step)
        if problem:
            return problem
        if os.path.realpath(ex.cwd) != os.path.realpath(want):
            ex.run(f"\\builtin cd -- {travel.quote(want)}")
        return None

    def _make_dir(self, path: str, step: StepRow) -> str | None:
        if not self.create_dirs:
            return (
                f"stopped before step {step.number}: its directory {path} no longer exists "
                "(--create-dirs makes it)"
            )
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as e:
            return f"stopped before step {step.number}: cannot make {path}: {e.strerror}"
        self.say(f"made {path}, the directory of step {step.number}")
        return None

    def _fill_secrets(self, number: int, command: str) -> str:
        """`command` with each value stored redacted put back: from the environment
        (--env-secrets, for `NAME=<redacted>`), else asked of the controller."""
        secrets = redacted_values(number, command)
        if not secrets:
            return command
        parts = command.split(MASK)
        out = [parts[0]]
        for secret, part in zip(secrets, parts[1:]):
            if secret.name and self.env_secrets and secret.name in os.environ:
                value = os.environ[secret.name]
            else:
                value = self.controller.secret(secret)
            # Redaction took `NAME=value` quotes and all; elsewhere the value sat
            # inside the command's own quoting, as typed.
            out += [shlex.quote(value) if secret.name else value, part]
        return "".join(out)

    def _open_session(self, branch_point: int) -> str:
        source = self.store.get_session(self.source)
        assert source is not None
        sid = new_session_id()
        with self.store.transaction():
            self.store.upsert_session(
                sid, parent_id=self.source, shell=self.shell, shell_version="",
                pid=os.getpid(), tty=None, started_at=time.time(), cwd=travel.here(),
                host=source.host or "", user=source.user or "", origin="replay",
                env_id=source.env_id, branch_point=branch_point or None,
                name=f"{source.name or self.source[:12]}-replay",
            )  # fmt: skip
        return sid

    def _run_step(
        self,
        ex: Executor,
        sid: str,
        number: int,
        command: str,
        recorded: str,
        rw: StepRow | None = None,
    ) -> StepResult:
        """Run `command`; store it as `recorded` (the text with its secrets still
        redacted), and its environment redacted, as ingest does. For rw's own
        step `rw`, `command` applies its effect: its output is not shown, and its
        recorded exit status is kept."""
        started = time.time()
        cwd = ex.cwd
        with self.store.transaction():
            text = self.redactor.text(recorded)[0]
            self.store.begin_step(sid, number, number, text, cwd, started)
        res = ex.run(command, None if rw else self.sink)
        code = rw.exit_code if rw and res.exit_code is not None else res.exit_code
        with self.store.transaction():
            env = self.redactor.env(res.env)[0] if res.env else None
            env_id = self.store.add_env(*env_blob(env)) if env else None
            self.store.end_step(sid, number, ended_at=time.time(), exit_code=code,
                                pipestatus=res.pipestatus, cwd=res.cwd, env_id=env_id)  # fmt: skip
            out, _ = make_output(res.output, text, self.redactor, cap=self.max_output)
            self.store.set_output(sid, number, out)
        return res

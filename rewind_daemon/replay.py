"""Replaying a recorded session through the executor, with breakpoints.

The engine decides what runs and records the run as a new session (origin
replay, parent the source); a Controller, supplied by the front end, decides
what to do at each pause.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import travel
from .breakpoints import BreakpointSet
from .errors import EXIT_PROBLEM, RwError
from .executor import Executor, OutputSink, StepResult
from .store import StepRow, Store, env_blob

CONTINUE, NEXT, SKIP, EDIT, SHELL, BACK, QUIT = (
    "continue", "next", "skip", "edit", "shell", "back", "quit",
)  # fmt: skip


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


@dataclass
class ReplayResult:
    session: str
    ran: list[int] = field(default_factory=list)
    stopped: str | None = None  # why the replay ended early


def _state_before(store: Store, sid: str, step: StepRow) -> tuple[str, dict[str, str]]:
    state = travel.state_after(store, sid, step.number - 1, dict(os.environ))
    cwd = step.cwd_before if step.cwd_before and os.path.isdir(step.cwd_before) else state.cwd
    return cwd, state.env


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
    ):
        if not steps:
            raise RwError("no steps to replay")
        self.store, self.source, self.steps = store, source, steps
        self.breakpoints, self.every_step = breakpoints, every_step
        self.controller, self.sink, self.shell = controller, sink, shell

    def run(self) -> ReplayResult:
        first = self.steps[0]
        sid = self._open_session(first.number - 1)
        result = ReplayResult(sid)
        cwd, env = _state_before(self.store, self.source, first)
        ex = Executor(cwd, env, self.shell)
        states: list[tuple[str, dict[str, str]]] = []  # the state before each step run
        number = first.number  # numbering in the replay session: one per step run
        i = 0
        why_after: str | None = None  # a breakpoint hit by the step just run
        pause_next = False  # `next`, `shell` or `back` asked to stop again
        no_pause_once = False  # `back`: re-run the previous step without asking
        try:
            while i < len(self.steps):
                step = self.steps[i]
                command = step.command
                bp = self.breakpoints.before(step.number, command)
                reason = (
                    f"breakpoint {bp.describe()}" if bp
                    else f"the step before hit breakpoint {why_after}" if why_after
                    else "stepping" if self.every_step or pause_next
                    else None
                )  # fmt: skip
                why_after, pause_next, then_pause = None, False, False
                if reason and not no_pause_once:
                    action = self.controller.pause(
                        Pause(step.number, command, reason), (ex.cwd, dict(env)), ex.definitions
                    )
                    if action.kind == QUIT:
                        result.stopped = f"quit before step {step.number}"
                        break
                    if action.kind == SKIP:
                        i += 1
                        continue
                    if action.kind == SHELL:
                        if action.state:
                            cwd, env = action.state
                            ex = ex.restart(cwd, env, action.definitions or ex.definitions())
                        pause_next = True
                        continue
                    if action.kind == BACK:
                        if states and i > 0:
                            cwd, env = states.pop()
                            ex = ex.restart(cwd, env, ex.definitions())
                            i -= 1
                            no_pause_once = True
                        else:
                            pause_next = True
                        continue
                    if action.kind == EDIT and action.command:
                        command = action.command
                    then_pause = action.kind in (NEXT, EDIT)
                if no_pause_once:
                    no_pause_once, then_pause = False, True
                states.append((ex.cwd, dict(env)))
                res = self._run_step(ex, sid, number, command)
                result.ran.append(step.number)
                number += 1
                if res.exit_code is None:
                    result.stopped = f"the shell exited during step {step.number}"
                    break
                env = res.env
                hit = self.breakpoints.after(res.exit_code, res.output.decode(errors="replace"))
                why_after = hit.describe() if hit else None
                pause_next = then_pause
                i += 1
        finally:
            ex.close()
            with self.store.transaction():
                self.store.end_session(sid, time.time())
        return result

    def _open_session(self, branch_point: int) -> str:
        source = self.store.get_session(self.source)
        assert source is not None
        sid = travel.new_session_id()
        with self.store.transaction():
            self.store.upsert_session(
                sid, parent_id=self.source, shell=self.shell, shell_version="",
                pid=os.getpid(), tty=None, started_at=time.time(), cwd=os.getcwd(),
                host=source.host or "", user=source.user or "", origin="replay",
                env_id=source.env_id, branch_point=branch_point or None,
                name=f"{source.name or self.source[:12]}-replay",
            )  # fmt: skip
        return sid

    def _run_step(self, ex: Executor, sid: str, number: int, command: str) -> StepResult:
        started = time.time()
        cwd = ex.cwd
        with self.store.transaction():
            self.store.begin_step(sid, number, number, command, cwd, started)
        res = ex.run(command, self.sink)
        with self.store.transaction():
            env_id = self.store.add_env(*env_blob(res.env)) if res.env else None
            self.store.end_step(sid, number, ended_at=time.time(), exit_code=res.exit_code,
                                pipestatus=res.pipestatus, cwd=res.cwd, env_id=env_id)  # fmt: skip
            self.store.set_output(sid, number, res.output)
        return res

"""Breakpoints of a session, evaluated once, by the executor's driver, for
every front end (replay, rewind, the debugger)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from ..errors import NotFound, RwError
from ..store import Store

STEP, PATTERN, ON_ERROR = "step", "pattern", "on-error"


@dataclass(frozen=True)
class Breakpoint:
    id: int
    kind: str
    step: int | None = None
    pattern: str | None = None
    target: str | None = None  # "command" or "output", for patterns

    def describe(self) -> str:
        if self.kind == STEP:
            return f"at step {self.step}"
        if self.kind == ON_ERROR:
            return "on error"
        return f"{self.target} matches /{self.pattern}/"

    def to_json(self) -> dict:
        return {"id": self.id, "kind": self.kind, "step": self.step,
                "pattern": self.pattern, "in": self.target}  # fmt: skip


def compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as e:
        raise RwError(f"invalid regex {pattern!r}: {e}") from None


def add(
    store: Store,
    sid: str,
    *,
    step: int | None = None,
    pattern: str | None = None,
    target: str = "command",
    on_error: bool = False,
) -> list[Breakpoint]:
    """Add the breakpoints asked for (one per kind given); refuse bad ones whole."""
    wanted: list[tuple[str, int | None, str | None, str | None]] = []
    if step is not None:
        if step < 1:
            raise RwError("--step must be 1 or more")
        wanted.append((STEP, step, None, None))
    if pattern is not None:
        if target not in ("command", "output"):
            raise RwError("--in must be command or output")
        compile_pattern(pattern)
        wanted.append((PATTERN, None, pattern, target))
    if on_error:
        wanted.append((ON_ERROR, None, None, None))
    if not wanted:
        raise RwError("say where to break: --step N, --pattern RE or --on-error")
    with store.transaction():
        return [Breakpoint(store.add_breakpoint(sid, *w), *w) for w in wanted]


def listing(store: Store, sid: str) -> list[Breakpoint]:
    return [Breakpoint(*row) for row in store.breakpoints(sid)]


def remove(store: Store, sid: str, bp_id: int) -> None:
    with store.transaction():
        if not store.remove_breakpoint(sid, bp_id):
            raise NotFound(f"session {sid} has no breakpoint {bp_id}")


class BreakpointSet:
    """Answers "stop here?" before and after each step."""

    def __init__(self, points: list[Breakpoint]):
        self.points = points
        self._regex = {
            bp.id: compile_pattern(bp.pattern) for bp in points if bp.pattern is not None
        }

    def before(self, number: int, command: str) -> Breakpoint | None:
        for bp in self.points:
            if bp.kind == STEP and bp.step == number:
                return bp
            if bp.kind == PATTERN and bp.target == "command":
                if self._regex[bp.id].search(command):
                    return bp
        return None

    def after(self, exit_code: int | None, output: str) -> Breakpoint | None:
        for bp in self.points:
            if bp.kind == ON_ERROR and exit_code not in (0,):
                return bp
            if bp.kind == PATTERN and bp.target == "output":
                if self._regex[bp.id].search(output):
                    return bp
        return None

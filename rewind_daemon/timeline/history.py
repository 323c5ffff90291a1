"""Querying what was recorded: sessions, steps, and how to address them."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from datetime import datetime, timezone

from ..capture.termtext import text_of
from ..errors import NotFound, RwError
from ..paths import current_session_id
from ..store import OutputRow, SessionRow, StepRow, Store
from .rw_commands import rw_verb


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, timezone.utc).astimezone().isoformat(timespec="milliseconds")


@dataclass(frozen=True)
class Session:
    row: SessionRow

    def to_json(self) -> dict:
        r = self.row
        return {
            "id": r.id,
            "name": r.name,
            "shell": r.shell,
            "shell_version": r.shell_version,
            "parent": r.parent_id,
            "branch_point": r.branch_point,
            "steps": r.steps,
            "started_at": iso(r.started_at),
            "ended_at": iso(r.ended_at),
            "host": r.host,
            "user": r.user,
            "tty": r.tty,
            "pid": r.pid,
            "origin": r.origin,
        }


@dataclass(frozen=True)
class Step:
    row: StepRow

    @property
    def duration_ms(self) -> float | None:
        r = self.row
        if r.ended_at is None:
            return None
        return round((r.ended_at - r.started_at) * 1000, 3)

    @property
    def rw_command(self) -> str | None:
        """The verb when this step ran rw itself (`rw log`: "log"), else None."""
        return rw_verb(self.row.command)

    @property
    def pipestatus(self) -> list[int]:
        raw = self.row.pipestatus or ""
        return [int(x) for x in raw.split() if x.lstrip("-").isdigit()]

    def to_json(self) -> dict:
        r = self.row
        return {
            "session": r.session,
            "step": r.number,
            "command": r.command,
            "cwd": r.cwd_before,
            "cwd_after": r.cwd_after,
            "exit_code": r.exit_code,
            "pipestatus": self.pipestatus,
            "started_at": iso(r.started_at),
            "ended_at": iso(r.ended_at),
            "duration_ms": self.duration_ms,
            "rw_command": self.rw_command,
            # Only the first command of the line is known (bash with history off).
            "partial": r.partial,
        }


@dataclass(frozen=True)
class Output:
    """What a step printed, as stored (recorded shells, replays, guard runs)."""

    raw: bytes  # as the terminal got it: colours, escapes (redacted, capped)
    text: str
    size: int  # bytes the step printed
    omitted: int  # of them, left out by the cap (the middle)
    complete: bool  # its end was seen (not cut off by its shell's or recorder's end)

    @classmethod
    def of(cls, row: OutputRow, command: str) -> Output:
        # (a replay's output stored before v5 has no text yet: made from its bytes)
        text = row.text if row.text is not None else text_of(row.raw, command)
        return cls(row.raw, text, len(row.raw) if row.size < 0 else row.size, row.omitted,
                   row.complete)  # fmt: skip

    def tail(self, n: int) -> tuple[str, int]:
        """The last `n` lines of the text, and how many lines come before them."""
        lines = self.text.splitlines(keepends=True)
        return "".join(lines[-n:]) if n else "", max(0, len(lines) - n)


@dataclass(frozen=True)
class StepDetail:
    step: Step
    env: dict[str, str]
    env_changes: dict[str, tuple[str | None, str | None]]
    output: Output | None = None  # recorded by rw record, replays and guard runs
    checkpoint: int | None = None  # of the watched files, taken just before the step

    def to_json(self) -> dict:
        out = self.output
        return {
            **self.step.to_json(),
            "checkpoint": self.checkpoint,
            "env": self.env,
            "env_changes": {k: {"before": a, "after": b} for k, (a, b) in self.env_changes.items()},
            "output": None if out is None else out.text,
            "output_bytes": None if out is None else out.size,
            "output_truncated": None if out is None else out.omitted > 0,
            "output_complete": None if out is None else out.complete,
        }


@dataclass(frozen=True)
class Resolved:
    """The session a reference names, and a note when it had to choose."""

    id: str
    note: str | None = None


def resolve_session(store: Store | None, ref: str | None) -> str:
    """Session id for a name, id, id prefix, `current` or `last`."""
    return resolve(store, ref).id


def resolve(store: Store | None, ref: str | None) -> Resolved:
    """The session `ref` names (a name, id, id prefix, `current` or `last`; None:
    this shell's, else the last). A name that several sessions have means the
    recorded one, the newest; the note then says which and what the others are."""
    if store is None:
        raise NotFound("nothing has been recorded yet")
    if ref in (None, "", "current"):
        sid = current_session_id()
        if sid and store.get_session(sid):
            return Resolved(sid)
        if ref == "current":
            raise NotFound("this shell is not recorded by rw (no RW_SESSION); see rw doctor")
        ref = "last"
    if ref == "last":
        sid = store.latest_session_id()
        if sid is None:
            raise NotFound("nothing has been recorded yet")
        return Resolved(sid)
    assert ref is not None
    if store.get_session(ref):
        return Resolved(ref)
    named = store.session_ids_named(ref)
    if len(named) > 1:
        chosen = store.get_session(named[0])
        assert chosen is not None
        when = datetime.fromtimestamp(chosen.started_at).strftime("%Y-%m-%d %H:%M")
        others = ", ".join(named[1:4]) + (", ..." if len(named) > 4 else "")
        return Resolved(
            named[0],
            f"{len(named)} sessions are named {ref!r}: using {named[0]} ({chosen.origin}, "
            f"started {when}); give an id for another ({others}; see rw sessions)",
        )
    if named:
        return Resolved(named[0])
    prefixed = store.session_ids_with_prefix(ref)
    if len(prefixed) == 1:
        return Resolved(prefixed[0])
    if len(prefixed) > 1:
        raise RwError(f"session prefix {ref!r} is ambiguous: {', '.join(prefixed[:4])}, ...")
    raise NotFound(f"no session named or numbered {ref!r}; see rw sessions")


def list_sessions(store: Store | None, limit: int | None = None) -> list[Session]:
    if store is None:
        return []
    return [Session(r) for r in store.sessions(limit)]


def session_log(
    store: Store | None, ref: str | None, *, failed: bool = False, limit: int | None = None
) -> tuple[Session, list[Step]]:
    sid = resolve_session(store, ref)
    assert store is not None
    row = store.get_session(sid)
    assert row is not None
    return Session(row), [Step(r) for r in store.steps(sid, failed=failed, limit=limit)]


def step_detail(store: Store | None, ref: str | None, number: int) -> StepDetail:
    sid = resolve_session(store, ref)
    assert store is not None
    row = store.step(sid, number)
    if row is None:
        raise NotFound(f"session {sid} has no step {number}")
    env = store.env(row.env_id) if row.env_id else {}
    before: dict[str, str] = {}
    prev = store.step(sid, number - 1) if number > 1 else None
    if prev is not None and prev.env_id:
        before = store.env(prev.env_id)
    changes: dict[str, tuple[str | None, str | None]] = {}
    if row.env_id and (prev is not None and prev.env_id):
        for key in sorted(set(before) | set(env)):
            if before.get(key) != env.get(key):
                changes[key] = (before.get(key), env.get(key))
    from .travel import step_checkpoint

    try:
        checkpoint = step_checkpoint(store, sid, number)
    except sqlite3.OperationalError:  # a store from before checkpoints
        checkpoint = None
    stored = store.step_output(sid, number)
    output = None if stored is None else Output.of(stored, row.command)
    return StepDetail(Step(row), env, changes, output, checkpoint)

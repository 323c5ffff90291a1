"""A recorded session as the debugger's program: its steps, shown as a script
(each step's command as typed, under a `# step N` line), written at a stable
path in rw's data directory so that an editor opens it and breakpoints can
be set in it. rw's own steps (`rw back`, ...) are shown as comments and not
run; a step whose command holds a value stored redacted is shown, and stops
the run instead of running (type it in the console, or go past it)."""

from __future__ import annotations

import os
from dataclasses import dataclass

from ..display import escaped
from ..paths import Paths, ensure_private_dir
from ..redact import MASK
from ..store import Store
from ..timeline import breakpoints, history, travel
from ..timeline.breakpoints import BreakpointSet
from ..timeline.replay import foreign_notice
from ..timeline.rw_commands import is_rw_command
from .script import Step


@dataclass(frozen=True)
class RecordedProgram:
    session: str
    name: str  # for the debug run's own session
    path: str
    text: str
    steps: list[Step]
    shell: str
    cwd: str
    env: dict[str, str]
    refused: dict[int, str]  # step index -> why it is not run
    cwds: dict[int, str]  # step index -> the directory it ran in
    numbers: dict[int, int]  # step index -> its number in the session
    stored: BreakpointSet  # the session's own breakpoints (rw breakpoint)
    notice: str | None = None  # said once as it is launched


def load(store: Store, p: Paths, ref: str, base_env: dict[str, str]) -> RecordedProgram:
    sid = history.resolve(store, ref).id
    row = store.get_session(sid)
    assert row is not None
    rows = store.steps(sid)
    label = sid + (f" ({row.name})" if row.name else "")
    lines = [f"# rw session {escaped(label)}: its steps, as rw dap runs them", ""]
    steps: list[Step] = []
    refused: dict[int, str] = {}
    cwds: dict[int, str] = {}
    numbers: dict[int, int] = {}
    for r in rows:
        status = (
            "still running" if r.ended_at is None
            else "status unknown" if r.exit_code is None
            else f"exit {r.exit_code}"
        )  # fmt: skip
        if is_rw_command(r.command):
            lines.append(f"# step {r.number} ({status}), rw's own, not run:")
            lines += ["#   " + escaped(x, lines=True) for x in r.command.split("\n")]
            lines.append("")
            continue
        partly = ", recorded partly: only the first command of its line" if r.partial else ""
        lines.append(f"# step {r.number} ({status}{partly})")
        first = len(lines) + 1
        lines += r.command.split("\n")
        index = len(steps)
        numbers[index] = r.number
        steps.append(Step(index + 1, first, len(lines), r.command))
        if MASK in r.command:
            refused[index] = (
                f"step {r.number} holds a value stored redacted: type the command with it "
                "in the console, or jump past it"
            )
        elif r.partial:
            refused[index] = (
                f"step {r.number} was recorded partly (bash with history off kept only the "
                "first command of its line): type the whole line in the console, or jump past it"
            )
        if r.cwd_before:
            cwds[index] = r.cwd_before
        lines.append("")
    state = travel.state_after(store, sid, 0, base_env)
    cwd = next((d for d in (rows[0].cwd_before if rows else None, state.cwd)
                if d and os.path.isdir(d)), travel.here() or "/")  # fmt: skip
    folder = ensure_private_dir(p.data_dir / "dap")
    path = folder / f"{sid}.sh"
    text = "\n".join(lines) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8", errors="surrogateescape") as f:
        f.write(text)
    shell = row.shell if row.shell in ("bash", "zsh") else "bash"
    name = f"{row.name or sid[:12]}-dap"
    stored = BreakpointSet(breakpoints.listing(store, sid))
    notice = foreign_notice(sid) + "\n" if state.foreign else None
    return RecordedProgram(
        sid,
        name,
        str(path),
        text,
        steps,
        shell,
        cwd,
        state.env,
        refused,
        cwds,
        numbers,
        stored,
        notice,
    )

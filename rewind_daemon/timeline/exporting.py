"""Turning a recorded session into a shell script, a Markdown runbook, JSON or an
asciicast (casting.py)."""

from __future__ import annotations

import base64
import re
import time
from dataclasses import dataclass

from .. import __version__, display
from ..errors import RwError
from ..redact import MASK
from ..store import SessionRow, StepRow, Store
from .casting import to_cast
from .diffing import binaryish
from .history import Output
from .rw_commands import is_rw_command
from .travel import env_changes
from .travel import quote as shell_quoted

FORMATS = ("sh", "md", "json", "cast")
DOCUMENT_FORMAT = "rw-session"
DOCUMENT_VERSION = 1


# `rw name`, `rw back`, ...: they act on the recording, not on the work recorded.
@dataclass(frozen=True)
class Selection:
    """The session and the steps chosen for an export."""

    session: SessionRow
    steps: list[StepRow]
    first: int
    last: int
    outputs: dict[int, Output]  # what the steps printed, where it was recorded


def select(
    store: Store, sid: str, first: int | None = None, last: int | None = None, outputs: bool = True
) -> Selection:
    row = store.get_session(sid)
    if row is None:
        raise RwError(f"no session {sid!r}")
    lo, hi = first or 1, row.steps if last is None else last
    if row.steps and not (1 <= lo <= hi <= row.steps):
        raise RwError(f"session {sid} has steps 1 to {row.steps}; cannot export {lo} to {hi}")
    if not row.steps and (first or last):
        raise RwError(f"session {sid} has no steps")
    steps = [s for s in store.steps(sid) if lo <= s.number <= hi]
    commands = {s.number: s.command for s in steps}
    stored = store.step_outputs(sid, lo, hi) if outputs else {}
    return Selection(
        row, steps, lo, hi, {n: Output.of(o, commands.get(n, "")) for n, o in stored.items()}
    )


def export_session(
    store: Store,
    sid: str,
    fmt: str,
    *,
    first: int | None = None,
    last: int | None = None,
    include_failed: bool = False,
) -> str:
    """The session `sid` (steps `first`..`last`) as text in format `fmt`."""
    sel = select(store, sid, first, last, outputs=fmt != "cast")
    if fmt == "cast":
        return to_cast(store, sel.session, sel.steps, sel.first, sel.last)
    if fmt == "sh":
        return to_script(store, sel, include_failed=include_failed)
    if fmt == "md":
        return to_markdown(sel)
    if fmt == "json":
        return display.json_text(to_document(store, sel)) + "\n"
    raise RwError(f"unknown export format {fmt!r}; use one of {', '.join(FORMATS)}")


# --- sh ------------------------------------------------------------------------------


class _Envs:
    """Recorded environments by id, each decompressed once."""

    def __init__(self, store: Store):
        self.store = store
        self._cache: dict[int, dict[str, str]] = {}

    def get(self, env_id: int | None) -> dict[str, str] | None:
        if env_id is None:
            return None
        if env_id not in self._cache:
            self._cache[env_id] = self.store.env(env_id)
        return self._cache[env_id]


def _comment(text: str) -> str:
    """`text` for a `#` line: nothing in it can end the comment or drive a terminal."""
    return "# " + display.escaped(text)


def _env_lines(before: dict[str, str], after: dict[str, str]) -> list[str]:
    """Shell lines that turn environment `before` into `after` (env_changes leaves
    out the names bash cannot assign)."""
    lines = []
    for name, _old, new in env_changes(before, after):
        if new is None:
            lines.append(f"unset {name}")
        elif MASK in new:
            lines.append(f': "${{{name}:?set {name}: its recorded value was redacted}}"')
            lines.append(f"export {name}")
        else:
            lines.append(f"export {name}={shell_quoted(new)}")
    return lines


def _commented(command: str) -> list[str]:
    return ["#   " + display.escaped(line, lines=True) for line in command.split("\n")]


def _failed(step: StepRow) -> bool:
    return step.exit_code not in (None, 0)


# Steps run by eval in the script's shell, so cd, exports and functions carry on
# while a heredoc or quote one leaves open cannot swallow the next; no options of
# the script's own, since they would change what a recorded line does.
_STEP_CHECK = """\
# Each step runs as it was typed, without -e, -u or pipefail unless it set them;
# the script stops at a step that succeeded when recorded and fails now.
__rw_step_ok() {  # STEP STATUS [WHY]
  [ "$2" = 0 ] && return
  printf 'rw export: step %s %s\\n' "$1" \\
    "${3:-failed with exit status $2; it succeeded when recorded}" >&2
  exit "$2"
}"""


def to_script(store: Store, sel: Selection, *, include_failed: bool = False) -> str:
    """A bash script that runs the selected steps again.

    Each command reproduces its own changes to the directory and environment;
    what left-out steps changed is replayed with `cd`/`export`/`unset` lines.
    Every recorded value reaches the script quoted, or escaped in a comment.
    """
    s = sel.session
    envs = _Envs(store)
    out = ["#!/usr/bin/env bash", *_script_header(sel, include_failed), _STEP_CHECK, ""]
    recorded = store.env_before(s.id, sel.first)  # the env id in effect, as recorded
    # What the script's shell holds, as far as it is known (None: unknown).
    env = envs.get(recorded)
    if env is not None and sel.first > 1 and s.env_id is not None:
        out += _env_lines(envs.get(s.env_id) or {}, env)
    cwd: str | None = None
    for step in sel.steps:
        wanted = envs.get(recorded)
        if step.env_id is not None:
            recorded = step.env_id
        if is_rw_command(step.command):
            out.append(f"# step {step.number}, an rw command, is left out:")
            out += _commented(step.command)
            continue
        if step.ended_at is None:
            out.append(f"# step {step.number} was still running when this was exported:")
            out += _commented(step.command)
            continue
        if _failed(step):
            if include_failed:
                out.append(f"# step {step.number} failed with exit code {step.exit_code}:")
                out += _commented(step.command)
            continue
        if step.cwd_before and step.cwd_before != cwd:
            out.append(f"cd -- {shell_quoted(step.cwd_before)} || exit")
        if env is not None and wanted is not None and wanted is not env:
            out += _env_lines(env, wanted)
        if MASK in step.command:
            out.append(
                f"# step {step.number} held a secret, redacted when it was recorded; "
                "put the command back here with the secret in it:"
            )
            out += _commented(step.command)
            out.append(f"__rw_step_ok {step.number} 1 'held a redacted secret: edit this script'")
        elif step.partial:
            out.append(
                f"# step {step.number} was recorded partly (bash with history off kept only "
                "the first command of its line); put the whole line back here:"
            )
            out += _commented(step.command)
            out.append(f"__rw_step_ok {step.number} 1 'was recorded partly: edit this script'")
        else:
            out.append(f"# step {step.number}")
            out.append(f"eval {shell_quoted(step.command)}")
            if step.exit_code is None:  # imported from a history file
                why = '"failed with exit status $?; its status was not recorded"'
                out.append(f"__rw_step_ok {step.number} $? {why}")
            else:
                out.append(f"__rw_step_ok {step.number} $?")
        # The command itself redoes its own cd and exports.
        cwd = step.cwd_after or step.cwd_before or cwd
        if step.env_id is not None:
            env = envs.get(step.env_id)
    return "\n".join(out) + "\n"


def _script_header(sel: Selection, include_failed: bool) -> list[str]:
    s = sel.session
    label = s.id + (f" ({s.name})" if s.name else "")
    where = " on ".join(x for x in (s.shell or "a shell", s.host) if x)
    lines = [
        _comment(f"rw session {label}, steps {sel.first} to {sel.last},"),
        _comment(f"recorded in {where} from {_when(s.started_at)}; exported by rw {__version__}."),
    ]
    if s.shell and s.shell != "bash":
        typed = f"The commands were typed into {s.shell}; this script runs them in bash."
        lines.append(_comment(typed))
    if s.origin == "import":
        lines.append("# Imported from a history file: directories and environment are unknown.")
    if include_failed:
        lines.append("# Failed steps are kept as comments.")
    else:
        lines.append("# Failed steps are left out (rw export --include-failed keeps them).")
    return lines


# --- md ------------------------------------------------------------------------------


def _when(ts: float | None) -> str:
    if ts is None:
        return "?"
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def duration_text(step: StepRow) -> str:
    if step.ended_at is None:
        return "running"
    ms = (step.ended_at - step.started_at) * 1000
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f} s"
    return f"{ms // 60_000:.0f} min {(ms % 60_000) / 1000:02.0f} s"


def _exit_text(step: StepRow) -> str:
    if step.ended_at is None:
        return "running"
    return "?" if step.exit_code is None else str(step.exit_code)


def _longest_backtick_run(text: str) -> int:
    return max((len(m) for m in re.findall(r"`+", text)), default=0)


def fence(text: str) -> str:
    """A backtick fence longer than any backtick run in `text`."""
    return "`" * max(3, _longest_backtick_run(text) + 1)


def _code_span(text: str) -> str:
    ticks = "`" * (_longest_backtick_run(text) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{ticks}{pad}{text}{pad}{ticks}"


def _table_command(command: str, width: int = 60) -> str:
    first, _, rest = command.partition("\n")
    text = display.escaped(first) + (" …" if rest else "")
    if len(text) > width:
        text = text[: width - 1] + "…"
    return _code_span(text).replace("|", "\\|")


# A runbook shows this many lines of a step's output, the last ones (where an
# error is); `rw show` has all of it.
MD_OUTPUT_LINES = 50


def _markdown_output(sid: str, number: int, output: Output) -> list[str]:
    """The lines of a runbook that show a step's output: its text (escaped),
    the last MD_OUTPUT_LINES lines of it, with a note of what is not there."""
    where = f"`rw show {display.escaped(sid)} {number}"
    if binaryish(output):
        return ["", f"Output: {output.size} bytes, not text ({where} --raw` has them)."]
    text, before = output.tail(MD_OUTPUT_LINES)
    text = display.escaped(text.rstrip("\n"), lines=True)
    notes = []
    if before:
        notes.append(
            f"the last {MD_OUTPUT_LINES} of {before + MD_OUTPUT_LINES} lines; "
            f"{where} --output` prints all of it"
        )
    if output.omitted:
        notes.append(f"{output.omitted} of its {output.size} bytes were left out when recorded "
                     "(the middle: over the output cap)")  # fmt: skip
    if not output.complete:
        notes.append("its end was not recorded")
    if not text and not notes:
        return []
    head = "Output" + (f" ({'; '.join(notes)})" if notes else "") + ":"
    mark = fence(text)
    return ["", head, "", f"{mark}text", text, mark] if text else ["", head]


def to_markdown(sel: Selection) -> str:
    """A runbook; recorded text in it has its control characters escaped."""
    s = sel.session
    esc = display.escaped
    title = esc(s.name or f"session {s.id}")
    failed = sum(1 for st in sel.steps if _failed(st))
    out = [f"# {title}", ""]
    facts = [
        ("Session", _code_span(esc(s.id)) + (f" ({esc(s.name)})" if s.name else "")),
        ("Shell", esc(" ".join(x for x in (s.shell, s.shell_version) if x)) or "?"),
        ("Host", esc(" as ".join(x for x in (s.host, s.user) if x)) or "?"),
        ("Started", _when(s.started_at)),
        ("Steps", f"{sel.first} to {sel.last}, {failed} failed" if sel.steps else "none"),
    ]
    if s.parent_id:
        facts.append(("Branch of", f"{_code_span(esc(s.parent_id))} after step {s.branch_point}"))
    if s.origin == "import":
        facts.append(("Origin", "imported history: exit codes and directories are unknown"))
    out += [f"- **{k}:** {v}" for k, v in facts]
    if not sel.steps:
        return "\n".join(out) + "\n"
    out += ["", "| Step | Command | Exit | Duration | Directory |", "|---:|---|---:|---:|---|"]
    for st in sel.steps:
        cwd = _code_span(esc(st.cwd_before)).replace("|", "\\|") if st.cwd_before else "?"
        out.append(
            f"| {st.number} | {_table_command(st.command)} | {_exit_text(st)} "
            f"| {duration_text(st)} | {cwd} |"
        )
    lang = s.shell if s.shell in ("bash", "zsh", "sh") else "sh"
    for st in sel.steps:
        command = esc(st.command, lines=True)
        mark = fence(command)
        out += ["", f"## Step {st.number}", "", f"{mark}{lang}", command, mark, ""]
        about = [f"exit code {_exit_text(st)}", duration_text(st)]
        if st.cwd_before:
            about.append(f"in {_code_span(esc(st.cwd_before))}")
        if st.cwd_after and st.cwd_after != st.cwd_before:
            about.append(f"then in {_code_span(esc(st.cwd_after))}")
        if len((st.pipestatus or "").split()) > 1:
            about.append(f"PIPESTATUS {esc(st.pipestatus or '')}")
        if st.partial:
            about.append(
                "recorded partly (only the first command of its line: bash with history off)"
            )
        out.append(", ".join(about) + f"; started {_when(st.started_at)}.")
        if st.number in sel.outputs:
            out += _markdown_output(sel.session.id, st.number, sel.outputs[st.number])
    return "\n".join(out) + "\n"


# --- json ----------------------------------------------------------------------------


def _pipestatus(raw: str | None) -> list[int] | None:
    if raw is None:
        return None
    return [int(x) for x in raw.split() if x.lstrip("-").isdigit()]


def _output_fields(output: Output | None) -> dict:
    """A step's recorded output: its bytes (`output` when they are UTF-8, else
    `output_base64`: what `rw import json` reads back), and its text."""
    if output is None:
        return {}
    fields = {
        "output_text": output.text,
        "output_bytes": output.size,
        "output_truncated": output.omitted > 0,
    }
    try:
        return {"output": output.raw.decode(), **fields}
    except UnicodeDecodeError:
        return {"output_base64": base64.b64encode(output.raw).decode(), **fields}


def to_document(store: Store, sel: Selection) -> dict:
    """Everything recorded about the selected steps; `rw import json` reads it back.
    Times are Unix epoch seconds."""
    s = sel.session
    envs = _Envs(store)
    return {
        "format": DOCUMENT_FORMAT,
        "version": DOCUMENT_VERSION,
        "session": {
            "id": s.id,
            "name": s.name,
            "shell": s.shell,
            "shell_version": s.shell_version,
            "host": s.host,
            "user": s.user,
            "tty": s.tty,
            "pid": s.pid,
            "cwd": s.cwd,
            "started_at": s.started_at,
            "ended_at": s.ended_at,
            "parent": s.parent_id,
            "branch_point": s.branch_point,
            "origin": s.origin,
        },
        "start_env": envs.get(store.env_before(s.id, sel.first)),
        "steps": [
            {
                "step": st.number,
                "command": st.command,
                "cwd_before": st.cwd_before,
                "cwd_after": st.cwd_after,
                "started_at": st.started_at,
                "ended_at": st.ended_at,
                "exit_code": st.exit_code,
                "pipestatus": _pipestatus(st.pipestatus),
                "env": envs.get(st.env_id),
                "partial": st.partial,
                **_output_fields(sel.outputs.get(st.number)),
            }
            for st in sel.steps
        ],
    }

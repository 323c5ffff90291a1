"""Remote runs come home: a guarded run recorded on a remote is stored here as a
session of origin `guard` whose host is the destination as the user gave it, so
`rw sessions`, `rw log`, `rw show` and `rw diff` see it beside the local ones."""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass

from ..capture.outputs import make_output
from ..errors import RwError
from ..guard.runner import REPORT_STEP
from ..paths import is_session_id, new_session_id
from ..redact import Redactor
from ..store import OutputRow, Store
from ..timeline import importing
from . import checks


def _text(doc: dict, key: str, required: bool = False) -> str | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or "\0" in value:
        raise RwError(f"the remote's record: {key} is not text")
    return value


def _time(doc: dict, key: str, required: bool = False) -> float | None:
    value = doc.get(key)
    if value is None and not required:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise RwError(f"the remote's record: {key} is not a time")
    if not importing.sane_time(float(value)):
        raise RwError(f"the remote's record: {key} ({value:.0f}) is not from 1970 to tomorrow")
    return float(value)


def _int(doc: dict, key: str) -> int | None:
    value = doc.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or abs(value) > 2**31:
        raise RwError(f"the remote's record: {key} is not a number")
    return value


def bring_home(
    store: Store,
    destination: str,
    run: dict,
    redactor: Redactor,
    cap: int,
    command: str | None = None,
) -> str | None:
    """Store the remote's record of a guarded run (see agent.recorded_run); the
    id of the session here, None when there is nothing to store. The remote's
    session id is kept when it is free here, so the two stores name the run
    alike; a run already brought home is not stored twice.

    The remote's record is data, never trusted as what was typed: `command` is
    the command line as asked here, and the run is stored as a guard run with
    it. Without one (--attach), the remote's word is all there is, and the run
    is stored as an import (which never stands for a session recorded here)."""
    if not run:
        return None
    s, step = run.get("session"), run.get("step")
    if not isinstance(s, dict) or not isinstance(step, dict):
        raise RwError("the remote's record of the run is incomplete")
    sid = _text(s, "id", required=True) or ""
    if is_session_id(sid) and store.session_exists(sid):
        row = store.get_session(sid)
        if row is not None and row.host == destination and row.origin in ("guard", "import"):
            return sid  # already home
        sid = new_session_id()
    elif not is_session_id(sid):
        sid = new_session_id()
    try:
        raw = base64.b64decode(run.get("output_base64") or "", validate=True)
    except (binascii.Error, ValueError):
        raise RwError("the remote's record: its output is not base64") from None
    report = run.get("report")
    if report is not None:
        checks.report(report)  # read back as a GuardReport by rw guard --again, rw show
    origin = "guard" if command is not None else "import"
    if command is not None:
        command, _ = redactor.text(command)
    else:
        command, _ = redactor.text(_text(step, "command", required=True) or "")
    cwd = _text(step, "cwd_before") or _text(s, "cwd") or ""
    started = _time(s, "started_at", required=True) or 0.0
    step_started = _time(step, "started_at", required=True) or started
    with store.transaction():
        store.upsert_session(
            sid, parent_id=None, shell=_text(s, "shell") or "bash",
            shell_version=_text(s, "shell_version") or "", pid=_int(s, "pid"), tty=None,
            started_at=started, cwd=_text(s, "cwd") or "", host=destination,
            user=_text(s, "user") or "", origin=origin,
        )  # fmt: skip
        store.begin_step(sid, 1, 1, command, cwd, step_started)
        ended = _time(step, "ended_at")
        if ended is not None:
            store.end_step(
                sid, 1, ended_at=ended, exit_code=_int(step, "exit_code"),
                pipestatus=_text(step, "pipestatus") or "", cwd=_text(step, "cwd_after") or cwd,
                env_id=None,
            )  # fmt: skip
        program = command.split(" ", 1)[0]
        out, _ = make_output(raw, program, redactor, cap=cap)
        store.set_output(sid, 1, out)
        if isinstance(report, dict):
            report = {**report, "session": sid, "host": destination}
            text = json.dumps(report)
            store.set_output(sid, REPORT_STEP, OutputRow(text.encode(), text, len(text)))
        session_ended = _time(s, "ended_at")
        if session_ended is not None:
            store.end_session(sid, session_ended)
    return sid


@dataclass(frozen=True)
class Pulled:
    session: str  # its id here
    name: str | None
    steps: int
    new: bool  # False: it was here already (pulled before)


def pull_home(store: Store, destination: str, document: bytes, redactor: Redactor) -> Pulled:
    """Store a session recorded on `destination` (a document as `rw export
    --format json` writes it) with its host, checked as an import is and stored
    as one (origin `import`: it never stands for a session recorded here, as
    `last` or under a name). It keeps the remote's id when that is free here,
    so a session pulled again is found and not stored twice."""
    session = importing.parse_document(document, destination)
    try:
        rid = json.loads(document)["session"].get("id")
    except (ValueError, KeyError, AttributeError):
        rid = None
    sid = rid if is_session_id(rid) else None
    if sid is not None and store.session_exists(sid):
        row = store.get_session(sid)
        if row is not None and row.host == destination:
            return Pulled(sid, row.name, row.steps, new=False)
        sid = None
    session.host = destination
    done = importing.save(store, session, redactor, sid=sid)
    return Pulled(done.session, done.name, done.steps, new=True)

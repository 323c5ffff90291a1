"""What a remote rw says, checked before anything here uses it.

The remote host is not trusted: a compromised or hostile server answers
whatever it likes. Every message it sends is checked here, in one place,
for its size (before it is read: see `LIMITS`), its JSON, its fields' types
and what must be there, before the client acts on it or the report is built;
what fails is a `Malformed` error naming the message and the field. Text that
passes is still the remote's: whoever shows it escapes it (display.escaped).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable

from ..errors import EXIT_PROBLEM, RwError
from ..guard.runner import NO_ROLLBACK, ROLLBACK_FAILED, ROLLED_BACK, GuardReport
from . import wire

MAX_MESSAGE = 64 * 1024  # hello, note, error, end: a line or two of text
MAX_REPORT = wire.MAX_FRAME  # a report lists every file the rollback restored: it may be long
MAX_DOCUMENT = wire.MAX_FRAME  # one session of `rw pull`, as `rw export --format json` writes it
MAX_PULL = 1024 * 1024 * 1024  # all the sessions of one `rw pull` (rw pull --max-bytes)
# The most a frame of each kind may hold; a header saying more is refused
# before its bytes are read.
LIMITS = {
    wire.HELLO: MAX_MESSAGE,
    wire.NOTE: MAX_MESSAGE,
    wire.ERROR: MAX_MESSAGE,
    wire.END: MAX_MESSAGE,
    wire.REPORT: MAX_REPORT,
    wire.SESSION: wire.MAX_FRAME,
    wire.DOCUMENT: MAX_DOCUMENT,
    wire.OUT: wire.MAX_FRAME,
    wire.EARLIER: wire.MAX_FRAME,  # an earlier run's record: checked as a session is
    wire.TAKEN: MAX_MESSAGE,
}
UNKNOWN = "whether the command ran, passed, halted or was rolled back there is unknown"


class Malformed(RwError):
    """The remote sent what rw does not take: the run's outcome there is unknown."""

    exit_code = EXIT_PROBLEM


Check = Callable[[object], bool]


def _text(v: object) -> bool:
    return isinstance(v, str)


def _int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and abs(v) <= 2**63


def _number(v: object) -> bool:
    return (
        isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v < 2**63
    )


def _bool(v: object) -> bool:
    return isinstance(v, bool)


def _texts(v: object) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _or_none(check: Check) -> Check:
    return lambda v: v is None or check(v)


def _one_of(*values: object) -> Check:
    return lambda v: v in values


_NAMES: dict[Check, str] = {
    _text: "text",
    _int: "an integer",
    _number: "a number",
    _bool: "true or false",
    _texts: "a list of text",
}

# field: (check, required, what it must be when the check's name is not enough)
Spec = dict[str, tuple[Check, bool, str]]


def _spec(**fields: tuple) -> Spec:
    out: Spec = {}
    for name, f in fields.items():
        check, required = f[0], f[1]
        out[name] = (check, required, f[2] if len(f) > 2 else _NAMES.get(check, "valid"))
    return out


_HELLO = _spec(python=(_text, True), cached=(_bool, True), home=(_text, False), dir=(_text, True))
_NOTE = _spec(message=(_text, True))
_ERROR = _spec(message=(_text, True), exit_code=(_int, False))
_TRIGGER = _spec(
    type=(_text, True),
    line_no=(_or_none(_int), False, "an integer or null"),
    line=(_or_none(_text), False, "text or null"),
    detail=(_or_none(_text), False, "text or null"),
)
_REQUEST = _spec(
    command=(lambda v: _texts(v) and bool(v), True, "a list of text, not empty"),
    cwd=(_text, True),
    paths=(_texts, False),
    packages=(_or_none(_bool), False, "true, false or null"),
    services=(_or_none(_bool), False, "true, false or null"),
    timeout=(_or_none(_number), False, "a number or null"),
    allow=(_texts, False),
    expect=(_texts, False),
    strict=(_bool, False),
    rollback=(_bool, False),
    redacted=(_bool, False),
    argv=(_or_none(_texts), False, "a list of text or null"),
)
_REPORT = _spec(
    result=(_one_of("passed", "halted"), True, '"passed" or "halted"'),
    exit_code=(_int, True),
    command=(_text, False),
    trigger=(lambda v: v is None or isinstance(v, dict), False, "an object or null"),
    checkpoint=(_int, True),
    checkpoint_status=(_text, False),
    reverted=(_texts, False),
    remaining=(_texts, False),
    covered=(_texts, False),
    not_covered=(_texts, False),
    session=(_or_none(_text), False, "text or null"),
    exit_status=(_or_none(_int), False, "an integer or null"),
    lines=(_int, False),
    started_at=(_number, True),
    ended_at=(_number, True),
    run_seconds=(_number, False),
    kill_seconds=(_or_none(_number), False, "a number or null"),
    containment=(_text, False),
    survivors=(_texts, False),
    rollback=(
        _one_of(None, ROLLED_BACK, ROLLBACK_FAILED, NO_ROLLBACK),
        False,
        "one of the rollback states or null",
    ),
    request=(lambda v: isinstance(v, dict), True, "an object"),
    host=(_or_none(_text), False, "text or null"),
)
_MESSAGES: dict[str, Spec] = {
    wire.HELLO: _HELLO,
    wire.NOTE: _NOTE,
    wire.ERROR: _ERROR,
    wire.END: {},
    wire.SESSION: {},  # its fields are checked as it is stored (sessions.bring_home)
    wire.EARLIER: {},  # the same, and its report by `report` (fleet)
    wire.TAKEN: _spec(bytes=(_int, True)),
}


def _fields(doc: dict, spec: Spec, what: str, prefix: str = "") -> None:
    for name, (check, required, must_be) in spec.items():
        if name not in doc:
            if required:
                raise Malformed(f"the remote's {what} is malformed: {prefix}{name} is missing")
            continue
        if not check(doc[name]):
            raise Malformed(f"the remote's {what} is malformed: {prefix}{name} is not {must_be}")


def _json(payload: bytes, what: str) -> dict:
    try:
        doc = json.loads(payload)
    except (ValueError, RecursionError):
        raise Malformed(f"the remote's {what} is malformed: not JSON") from None
    if not isinstance(doc, dict):
        raise Malformed(f"the remote's {what} is malformed: not a JSON object")
    return doc


def message(kind: str, payload: bytes) -> dict | None:
    """The JSON object of a message of `kind` (hello, note, error, end, session),
    its fields checked; None for a kind that carries no JSON or that this rw
    does not know (ignored, as before)."""
    spec = _MESSAGES.get(kind)
    if spec is None:
        return None
    doc = _json(payload, kind)
    _fields(doc, spec, kind)
    return doc


def report(doc: object) -> GuardReport:
    """The guard report a remote sent (GuardReport.to_json's form), checked
    field by field and for agreeing with itself."""
    if not isinstance(doc, dict):
        raise Malformed("the remote's report is malformed: not a JSON object")
    _fields(doc, _REPORT, "report")
    _fields(doc["request"], _REQUEST, "report", "request.")
    trigger = doc.get("trigger")
    if trigger is not None:
        _fields(trigger, _TRIGGER, "report", "trigger.")
    if (doc["result"] == "halted") != (trigger is not None):
        raise Malformed(f"the remote's report is malformed: result {doc['result']!r} "
                        f"with {'a' if trigger else 'no'} trigger")  # fmt: skip
    built = GuardReport.from_json(doc)
    if built.exit_code != doc["exit_code"]:
        raise Malformed(
            f"the remote's report is malformed: exit_code {doc['exit_code']} does not go with "
            "what it says happened"
        )
    return built


def report_message(payload: bytes) -> GuardReport:
    return report(_json(payload, "report"))

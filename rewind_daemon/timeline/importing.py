"""Turning bash and zsh history files, and rw's own JSON exports, into sessions."""

from __future__ import annotations

import base64
import contextlib
import getpass
import json
import math
import os
import re
import socket
import sqlite3
import stat
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from ..capture import records
from ..capture.outputs import make_output
from ..errors import RwError
from ..paths import new_session_id
from ..progress import Progress, no_progress
from ..redact import Redactor
from ..store import SessionRow, Store, env_blob
from . import startenv
from .exporting import DOCUMENT_FORMAT, DOCUMENT_VERSION

KINDS = ("bash", "zsh", "json")
BATCH = 2000  # steps stored per transaction
_BASH_TIMESTAMP = re.compile(r"#(\d{1,12})[ \t\r]*")
_ZSH_META = re.compile(rb"\x83(.)", re.DOTALL)
_ZSH_EXTENDED = re.compile(r": *(\d{1,12}):(\d{1,12});(.*)", re.DOTALL)


@dataclass
class ImportedStep:
    command: str
    started_at: float
    ended_at: float | None
    cwd_before: str | None = None
    cwd_after: str | None = None
    exit_code: int | None = None
    pipestatus: str | None = None
    env: dict[str, str] | None = None
    output: bytes | None = None
    partial: bool = False  # only the first command of its line is known


@dataclass
class ImportedSession:
    """A session read from a file, not yet stored (it gets an id when it is)."""

    shell: str | None
    started_at: float
    ended_at: float | None
    name: str | None = None
    shell_version: str | None = None
    host: str | None = None
    user: str | None = None
    tty: str | None = None
    pid: int | None = None
    cwd: str | None = None
    start_env: dict[str, str] | None = None
    steps: list[ImportedStep] = field(default_factory=list)
    left_out: int = 0  # commands typed with a leading space or matching `ignore`
    env_left_out: list[str] = field(default_factory=list)  # names a foreign env may not set


@dataclass(frozen=True)
class ImportResult:
    session: str
    name: str | None
    steps: int
    left_out: int
    env_left_out: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return {
            "session": self.session,
            "name": self.name,
            "steps": self.steps,
            "left_out": self.left_out,
            "env_left_out": self.env_left_out,
        }


# --- reading ---------------------------------------------------------------------------


def default_file(kind: str) -> str:
    """Where `kind`'s history usually is; `-` (stdin) for json."""
    if kind == "json":
        return "-"
    if os.environ.get("HISTFILE"):
        return os.environ["HISTFILE"]
    if kind == "zsh":
        return str(Path(os.environ.get("ZDOTDIR") or Path.home()) / ".zsh_history")
    return str(Path.home() / ".bash_history")


# The most an import reads: a history far larger is not one (and would be held
# in memory whole, several times over, while it is parsed).
MAX_IMPORT = 64 * 1024 * 1024
# The longest command kept: what one record of the hooks can hold.
MAX_COMMAND = records.MAX_RECORD - 4096


def read_source(path: str) -> tuple[bytes, float]:
    """The bytes of `path` (`-`: stdin) and when it was last written: a regular
    file (or stdin) of MAX_IMPORT bytes at most."""
    if path == "-":
        return _read_capped(sys.stdin.buffer, "stdin"), time.time()
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            _check_source(path, st)
            return _read_capped(fh, path), st.st_mtime
    except OSError as e:
        raise RwError(f"cannot read {path}: {e.strerror or e}") from None


def _check_source(path: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        raise RwError(f"{path}: not a regular file")
    if st.st_size > MAX_IMPORT:
        raise RwError(f"{path}: {_mib(st.st_size)}; rw imports {_mib(MAX_IMPORT)} at most")


def _read_capped(fh: BinaryIO, source: str) -> bytes:
    data = fh.read(MAX_IMPORT + 1)
    if len(data) > MAX_IMPORT:
        raise RwError(f"{source}: more than {_mib(MAX_IMPORT)}; rw imports that much at most")
    return bytes(data)


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.0f} MiB"


# Where rw export writes bytes that are not UTF-8 as `\\udc80`-`\\udcff`
# (surrogateescape): commands, directories and environment values, which the
# store keeps as bytes.
_BYTES_AT = re.compile(
    r"document\.(session\.cwd|start_env\..*|steps\[\d+\]\.(command|cwd_before|cwd_after|env\..*))",
    re.S,
)


def _holds_bytes(text: str) -> bool:
    """Whether each surrogate in `text` stands for a byte (`\\udc80`-`\\udcff`)."""
    try:
        text.encode("utf-8", "surrogateescape")
        return True
    except UnicodeEncodeError:
        return False


def _check_document_text(value: object, source: str, where: str = "document") -> None:
    """Every string of a JSON document can be stored (no lone surrogate, which
    `\\ud800` makes, but the bytes rw export writes as `\\udcff` where the store
    keeps bytes), and no command is longer than the hooks record."""
    todo = [(value, where)]
    while todo:
        v, at = todo.pop()
        if isinstance(v, str):
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                if not (_BYTES_AT.fullmatch(at) and _holds_bytes(v)):
                    raise RwError(
                        f"{source}: {at} holds a lone surrogate (\\ud800-\\udfff), not text"
                    ) from None
            if at.endswith(".command") and len(v) > MAX_COMMAND:
                raise RwError(f"{source}: {at} is longer than rw records ({_mib(MAX_COMMAND)})")
        elif isinstance(v, dict):
            for k, item in v.items():
                todo.append((k, f"{at} (a key)"))
                todo.append((item, f"{at}.{k}"))
        elif isinstance(v, list):
            todo.extend((item, f"{at}[{i}]") for i, item in enumerate(v))


def parse(
    kind: str, data: bytes, mtime: float, source: str, ignore: Sequence[re.Pattern[str]] = ()
) -> ImportedSession:
    """The session held by `data`, a `kind` file (named `source` in errors)."""
    if kind == "json":
        return parse_document(data, source)
    if kind not in ("bash", "zsh"):
        raise RwError(f"cannot import {kind!r}; use one of {', '.join(KINDS)}")
    if b"\0" in data:
        raise RwError(f"{source}: not a {kind} history file (it holds NUL bytes)")
    if kind == "bash":
        entries = bash_entries(data.decode("utf-8", "replace"), mtime)
    else:
        entries = zsh_entries(_zsh_text(data), mtime)
    session = ImportedSession(
        shell=kind,
        started_at=mtime,
        ended_at=mtime,
        name=f"import-{kind}-history",
        host=socket.gethostname(),
        user=_user(),
    )
    for started, ended, command in entries:
        if not (sane_time(started) and sane_time(ended)):
            raise RwError(f"{source}: a time ({ended:.0f}) is not from 1970 to tomorrow")
        if (
            command[:1].isspace()
            or len(command) > MAX_COMMAND
            or any(p.search(command) for p in ignore)
        ):
            session.left_out += 1
            continue
        session.steps.append(ImportedStep(command, started, ended))
    if not session.steps:
        raise RwError(f"{source}: no commands to import")
    session.started_at = min(s.started_at for s in session.steps)
    session.ended_at = max(s.ended_at or s.started_at for s in session.steps)
    return session


def bash_entries(text: str, mtime: float) -> list[tuple[float, float, str]]:
    """(start, end, command) of each entry of a bash history file, read as bash's
    `history -r` reads it. A `#<epoch>` line dates the lines after it; lines before
    the first one take its date, and a file without any takes its modification
    time. In a file that begins with one (bash wrote it with HISTTIMEFORMAT set),
    an entry is everything up to the next: a multi-line command saved with
    `shopt -s lithist` is one entry, its lines joined by newlines. Empty lines
    are skipped, as bash skips them."""
    lines = text.split("\n")
    first = next((m for m in map(_BASH_TIMESTAMP.fullmatch, lines) if m), None)
    multiline = bool(lines) and _BASH_TIMESTAMP.fullmatch(lines[0]) is not None
    when = float(first.group(1)) if first else mtime
    out: list[tuple[float, float, str]] = []
    dated = False  # the last line read was a timestamp: the next line starts an entry
    for line in lines:
        m = _BASH_TIMESTAMP.fullmatch(line)
        if m:
            when, dated = float(m.group(1)), True
        elif line:
            if multiline and not dated and out:
                start, end, command = out[-1]
                out[-1] = (start, end, command + "\n" + line)
            else:
                out.append((when, when, line))
            dated = False
    return [entry for entry in out if entry[2].strip()]


def _zsh_text(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    # zsh "metafies" some bytes in its history file: 0x83, then the byte xor 32.
    unmeta = _ZSH_META.sub(lambda m: bytes([m.group(1)[0] ^ 0x20]), data)
    return unmeta.decode("utf-8", "replace")


def zsh_entries(text: str, mtime: float) -> list[tuple[float, float, str]]:
    """(start, end, command) of each entry of a zsh history file, extended
    (`: <start>:<elapsed>;command`) or plain. A line ending in a backslash goes
    on in the next line: that is how zsh writes a newline inside a command."""
    lines = text.split("\n")
    entries: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        i += 1
        while line.endswith("\\") and i < len(lines):
            line = line[:-1] + "\n" + lines[i]
            i += 1
        entries.append(line)
    first = next((m for m in map(_ZSH_EXTENDED.fullmatch, entries) if m), None)
    when = float(first.group(1)) if first else mtime
    out = []
    for entry in entries:
        m = _ZSH_EXTENDED.fullmatch(entry)
        elapsed = 0.0
        if m:
            when, elapsed, entry = float(m.group(1)), float(m.group(2)), m.group(3)
        if entry.strip():
            out.append((when, when + elapsed, entry))
    return out


def _user() -> str | None:
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return None


# --- rw's own JSON -----------------------------------------------------------------------

# What a stored value may be: SQLite's integers are 64-bit, and times are shown
# as dates, which Python can only make between the years 1 and 9999.
PID_MAX = 2**31 - 1  # pid_t
EXIT_MAX = 255  # what a shell reports in $?
INT_MAX = 2**63 - 1
FUTURE_SLACK = 86400.0  # another host's clock may be ahead, not by more than a day


def latest_time() -> float:
    """The latest time an imported step may have: tomorrow."""
    return time.time() + FUTURE_SLACK


def sane_time(when: float | None) -> bool:
    return when is None or (math.isfinite(when) and 0 <= when <= latest_time())


class _Fields:
    """Typed, range-checked access to one object of a JSON document, with one-line
    errors: nothing in a document is stored unless it is what rw itself records."""

    def __init__(self, obj: object, where: str, source: str):
        if not isinstance(obj, dict):
            raise RwError(f"{source}: {where} must be an object")
        self.obj, self.where, self.source = obj, where, source

    def _bad(self, key: str, what: str) -> RwError:
        return RwError(f"{self.source}: {self.where}.{key} must be {what}")

    def text(self, key: str, required: bool = False) -> str | None:
        value = self.obj.get(key)
        if value is None and not required:
            return None
        if isinstance(value, str) and "\0" not in value:
            return value
        raise self._bad(key, "a string without NUL" + ("" if required else " or null"))

    def integer(self, key: str, low: int = 0, high: int = INT_MAX) -> int | None:
        value = self.obj.get(key)
        if value is None or (
            isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
        ):
            return value
        raise self._bad(key, f"an integer from {low} to {high}, or null")

    def time(self, key: str, required: bool = False) -> float | None:
        """Epoch seconds, finite, from 1970 to tomorrow."""
        value = self.obj.get(key)
        if value is None and not required:
            return None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                when = float(value)
            except OverflowError:  # an integer too large for a float
                when = math.inf
            if sane_time(when):
                return when
        what = "a number (epoch seconds) from 1970 to tomorrow"
        raise self._bad(key, what if required else what + ", or null")

    def env(self, key: str) -> dict[str, str] | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, dict) and all(
            isinstance(v, str) and "\0" not in k + v for k, v in value.items()
        ):
            return value
        raise self._bad(key, "an object of strings without NUL, or null")

    def codes(self, key: str) -> str | None:
        value = self.obj.get(key)
        if value is None:
            return None
        if isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= EXIT_MAX for v in value
        ):
            return " ".join(map(str, value))
        raise self._bad(key, f"a list of integers from 0 to {EXIT_MAX}, or null")


def parse_document(data: bytes, source: str) -> ImportedSession:
    """The session in a document written by `rw export --format json`. Its id,
    origin and parent are not taken: what is stored gets an id of this rw's making
    and origin `import` (see save)."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise RwError(f"{source}: not a JSON document: {e}") from None
    if not isinstance(doc, dict) or doc.get("format") != DOCUMENT_FORMAT:
        raise RwError(f"{source}: not a session exported by rw export --format json")
    _check_document_text(doc, source)
    version = doc.get("version")
    if not isinstance(version, int) or version > DOCUMENT_VERSION:
        raise RwError(f"{source}: format version {version!r} is newer than this rw: upgrade rw")
    s = _Fields(doc.get("session"), "session", source)
    if not s.text("id", required=True):
        raise RwError(f"{source}: session.id must not be empty")
    steps = doc.get("steps")
    if not isinstance(steps, list):
        raise RwError(f"{source}: steps must be a list")
    session = ImportedSession(
        name=s.text("name"),
        shell=s.text("shell"),
        shell_version=s.text("shell_version"),
        host=s.text("host"),
        user=s.text("user"),
        tty=s.text("tty"),
        pid=s.integer("pid", 1, PID_MAX),
        cwd=s.text("cwd"),
        started_at=s.time("started_at", required=True) or 0.0,
        ended_at=s.time("ended_at"),
        start_env=_Fields(doc, "document", source).env("start_env"),
    )
    previous = 0
    for i, raw in enumerate(steps):
        f = _Fields(raw, f"steps[{i}]", source)
        number = f.integer("step", 1)
        if number is not None and number <= previous:
            raise RwError(f"{source}: steps[{i}].step must follow {previous}")
        previous = number or previous + 1
        session.steps.append(
            ImportedStep(
                command=f.text("command", required=True) or "",
                started_at=f.time("started_at", required=True) or 0.0,
                ended_at=f.time("ended_at"),
                cwd_before=f.text("cwd_before"),
                cwd_after=f.text("cwd_after"),
                exit_code=f.integer("exit_code", 0, EXIT_MAX),
                pipestatus=f.codes("pipestatus"),
                env=f.env("env"),
                output=_output(raw, f"{source}: steps[{i}]"),
                partial=raw.get("partial") is True,
            )
        )
    _leave_out_untrusted_env(session)
    return session


def _leave_out_untrusted_env(session: ImportedSession) -> None:
    """A document's environments are another's: the variables a shell acts on
    as it starts, names no shell can hold, and those that make programs run
    code of the file's choosing are dropped (startenv), and named."""
    dropped: set[str] = set()
    if session.start_env is not None:
        session.start_env, names = startenv.foreign_env(session.start_env)
        dropped.update(names)
    for step in session.steps:
        if step.env is not None:
            step.env, names = startenv.foreign_env(step.env)
            dropped.update(names)
    session.env_left_out = sorted(dropped)


def _output(raw: dict, where: str) -> bytes | None:
    if isinstance(raw.get("output"), str):
        return raw["output"].encode()
    if isinstance(raw.get("output_base64"), str):
        try:
            return base64.b64decode(raw["output_base64"], validate=True)
        except ValueError:
            raise RwError(f"{where}.output_base64 is not base64") from None
    return None


# --- storing -----------------------------------------------------------------------------


def save(
    store: Store,
    session: ImportedSession,
    redactor: Redactor,
    *,
    name: str | None = None,
    progress: Progress = no_progress,
    sid: str | None = None,
) -> ImportResult:
    """Store `session`, its secrets redacted, under a new id (or `sid`, one of
    rw's making that is free) and origin `import`.

    Its steps go in BATCH at a time, each batch its own short transaction, so a
    big import never holds the store for long (the daemon and other writers go
    on between batches). The session row goes in last, so the session appears
    whole or not at all; what an import that fails midway wrote is removed."""
    sid = sid or new_session_id()
    name = name or session.name
    redactions = 0
    try:
        for first in range(0, len(session.steps), BATCH):
            progress("import, steps stored", first, len(session.steps))
            batch = session.steps[first : first + BATCH]
            commands, envs = [], []
            for step in batch:  # redacting takes most of the time: not in the transaction
                command, n = redactor.text(step.command)
                env, m = redactor.env(step.env) if step.env is not None else (None, 0)
                commands.append(command)
                envs.append(None if env is None else env_blob(env))
                redactions += n + m
            with store.transaction():
                rows = []
                for number, (step, command, blob) in enumerate(
                    zip(batch, commands, envs), first + 1
                ):
                    rows.append(
                        (sid, number, number, command, step.cwd_before, step.cwd_after,
                         step.started_at, step.ended_at, step.exit_code, step.pipestatus,
                         None if blob is None else store.add_env(*blob), step.partial)
                    )  # fmt: skip
                store.bulk_insert_steps(rows)
                for number, (step, command) in enumerate(zip(batch, commands), first + 1):
                    if step.output is not None:
                        out, _ = make_output(step.output, command, redactor)
                        store.set_output(sid, number, out)
        start_env, n = (None, 0) if session.start_env is None else redactor.env(session.start_env)
        with store.transaction():
            store.insert_session(
                SessionRow(
                    id=sid,
                    name=name,
                    shell=session.shell,
                    shell_version=session.shell_version,
                    host=session.host,
                    user=session.user,
                    tty=session.tty,
                    pid=session.pid,
                    cwd=session.cwd,
                    started_at=session.started_at,
                    ended_at=session.ended_at,
                    parent_id=None,
                    branch_point=None,
                    origin="import",
                    env_id=None if start_env is None else store.add_env(*env_blob(start_env)),
                    steps=len(session.steps),
                )
            )
            store.add_counter("redactions", redactions + n)
    except BaseException:
        with contextlib.suppress(RwError, sqlite3.Error):
            with store.transaction():
                store.remove_steps(sid)
        raise
    return ImportResult(sid, name, len(session.steps), session.left_out, session.env_left_out)

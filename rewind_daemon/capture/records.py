"""Spool framing: what the shell hooks write and the daemon reads.

A record is NUL-separated fields between a magic start field and an end
field. Shell strings cannot contain NUL, so no field ever needs escaping,
and the end field's bytes are only ever a whole field, which a record's
type tells from its own end (see parse):

    \\x1eRW1 \\0 TYPE \\0 field \\0 ... field \\0 \\x1eEND \\0

Types (fields after TYPE):
    S  session start: sid parent shell shell_version pid tty started_at cwd host user
       [branch_point env_format env...]: the step of the parent this session
       branches from ("" when it does not), and the environment at the start
    B  step begin:    sid seq started_at cwd command
    P  step begin whose command may be only the first simple command of its
       line (bash with history off: `$BASH_COMMAND`): as B
    H  step begin, bash: as B, but the command is `history 1` output
       ("%5d%c %s\n": history number, a '*' or ' ', a space, the line)
    E  step end:      sid seq ended_at exit_code pipestatus cwd env_format env...
       env_format "declare": one field, bash `export -p` output
       env_format "list":    a count, then that many NAME=VALUE fields
       env_format "list0":   NAME=VALUE fields up to the end marker (zsh)
       env_format "zsh":     one field, zsh `export` output (NAME=VALUE lines,
                             values quoted as zsh quotes them)
    N  name session:  sid name
    X  session end:   sid ended_at
    A  the shell got the daemon's checkpoint for a step before running it: sid seq
    L  records could not be written (the disk was full): sid count since until why,
       written once they can be again; count command lines were lost
    U  a line not recorded has run (a leading space, HISTIGNORE), at its end:
       sid ended_at env_format env...: the environment it left behind

Every field is checked for its type and range (FIELD_KINDS) before a record
is yielded: one that fails is dropped alone, and parsing goes on after it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ..paths import is_session_id

MAGIC = b"\x1eRW1\x00"
END = b"\x00\x1eEND\x00"
MAX_RECORD = 8 * 1024 * 1024

FIELD_COUNTS = {"A": 2, "B": 5, "H": 5, "L": 5, "N": 2, "P": 5, "X": 2}
# Where the environment payload starts in the records that carry one
# (R: the executor's report after a step: exit_code pipestatus cwd env...).
ENV_AT = {"S": 11, "E": 6, "R": 3, "U": 2}
# The fields that keep bytes that are not UTF-8 exact (as surrogates), besides
# an environment payload: commands and directories, which go back into a shell
# (`rw back` cds to the directory, replay runs the command).
EXACT_AT = {"S": (7,), "B": (3, 4), "P": (3, 4), "H": (3, 4), "E": (5,)}

INT64_MAX = 2**63 - 1  # SQLite's INTEGER
INT_MIN, INT_MAX = -(2**31), 2**31 - 1  # a shell's $? (zsh keeps `return 1000`, -1)
# Seconds since 1970 (a machine without a real-time clock records there until
# its clock is set) and before 2200: anything else is no reading of a clock.
MAX_TIME = 7258118400.0
_UNSIGNED = re.compile(r"[0-9]{1,19}\Z")
_SIGNED = re.compile(r"-?[0-9]{1,10}\Z")
_TIME = re.compile(r"[0-9]{1,11}(?:[.,][0-9]{0,20})?\Z")


@dataclass(frozen=True)
class Record:
    type: str
    fields: list[str]


@dataclass(frozen=True)
class Dropped:
    """Bytes that could not be parsed as a record (kept for the log)."""

    reason: str
    size: int


def encode(rtype: str, *fields: str) -> bytes:
    for f in fields:
        if "\x00" in f:
            raise ValueError("field contains NUL")
    body = b"\x00".join(f.encode("utf-8", "surrogateescape") for f in (rtype, *fields))
    return MAGIC + body + END


def _env_ok(fields: list[str], at: int) -> bool:
    if len(fields) <= at:
        return False
    fmt, rest = fields[at], len(fields) - at - 1
    if fmt in ("declare", "zsh"):
        return rest == 1
    if fmt == "list":
        return (
            rest >= 1 and bool(_UNSIGNED.match(fields[at + 1])) and rest == 1 + int(fields[at + 1])
        )
    if fmt == "list0":  # (NAME=VALUE fields: a torn record's start marker is none)
        return all("=" in f for f in fields[at + 1 :])
    return fmt == "none" and rest == 0


# --- what each field may hold: a checker returns what is wrong, or None ----------
# (No field can hold a NUL: it ends the field, as it ends a shell string.)


def _session_id(v: str) -> str | None:
    return None if is_session_id(v) else f"session id {v[:24]!r} is not one rw makes"


def _parent_id(v: str) -> str | None:
    return None if v == "" else _session_id(v)


def _counter(v: str) -> str | None:
    """A sequence number or a step number: 1 and up, within SQLite's INTEGER."""
    ok = _UNSIGNED.match(v) and 1 <= int(v) <= INT64_MAX
    return None if ok else f"{v[:24]!r} is not a number from 1 to 2^63-1"


def _optional_counter(v: str) -> str | None:
    return None if v == "" else _counter(v)


def _pid(v: str) -> str | None:
    ok = v == "" or (_UNSIGNED.match(v) and 1 <= int(v) <= INT_MAX)
    return None if ok else f"pid {v[:24]!r} is not a process id"


def _exit_code(v: str) -> str | None:
    ok = v == "" or (_SIGNED.match(v) and INT_MIN <= int(v) <= INT_MAX)
    return None if ok else f"exit code {v[:24]!r} is not one a shell gives"


def _time(v: str) -> str | None:
    ok = _TIME.match(v) and float(v.replace(",", ".")) < MAX_TIME
    return None if ok else f"time {v[:24]!r} is not seconds from 1970 to 2200"


def _history(v: str) -> str | None:
    return None if _HISTORY_LINE.match(v) else "not a line of bash history output"


def _text(v: str) -> str | None:
    return None


_Check = Callable[[str], "str | None"]
# The fields each type begins with, in order (an environment payload may follow).
FIELD_KINDS: dict[str, tuple[_Check, ...]] = {
    # sid parent shell version pid tty started cwd host user [branch_point]
    "S": (_session_id, _parent_id, _text, _text, _pid, _text, _time, _text, _text, _text,
          _optional_counter),
    "B": (_session_id, _counter, _time, _text, _text),
    "P": (_session_id, _counter, _time, _text, _text),
    "H": (_session_id, _counter, _time, _text, _history),
    # sid seq ended exit_code pipestatus (as the shell joined it: kept as text) cwd
    "E": (_session_id, _counter, _time, _exit_code, _text, _text),
    "N": (_session_id, _text),
    "X": (_session_id, _time),
    "A": (_session_id, _counter),
    "L": (_session_id, _counter, _time, _time, _text),  # sid count since until why
    "U": (_session_id, _time),  # sid ended, then the environment
    "R": (),  # the executor's own report, read by the executor alone
}  # fmt: skip


def _validate(rtype: str, fields: list[str]) -> str | None:
    if rtype not in FIELD_KINDS:
        return f"unknown record type {rtype[:16]!r}"
    if rtype in FIELD_COUNTS:
        if len(fields) != FIELD_COUNTS[rtype]:
            return f"{rtype} record with {len(fields)} fields"
    elif rtype == "S" and len(fields) == 10:
        pass  # written by an earlier version: no branch point, no environment
    elif not _env_ok(fields, ENV_AT[rtype]):
        return f"{rtype} record with a bad environment"
    for check, value in zip(FIELD_KINDS[rtype], fields):
        problem = check(value)
        if problem:
            return f"{rtype} record: {problem}"
    return None


def parse(buf: bytes, final: bool = False) -> Iterator[tuple[Record | Dropped, int]]:
    """Yield (record or dropped chunk, offset just past it) for complete records in `buf`.

    Stops at an incomplete trailing record unless `final` (the writer is gone),
    in which case the remainder is reported as dropped.

    A record begins where `buf` does or where the record before it ended. A
    field may hold the framing's bytes (a directory named `x\\x1eRW1`, a
    command that is `\\x1eEND`, a host named `\\x1eRW1` after it), so an end
    marker is the record's own only where its type's fields are all there
    (own_end): one that comes sooner is a field. A start marker inside a record
    is where reading starts again only when the record is not valid (a record
    torn by a writer that died, or by a full disk, and the good one after it).
    """
    pos = 0
    n = len(buf)
    while pos < n:
        if not buf.startswith(MAGIC, pos):
            nxt = buf.find(MAGIC, pos + 1)
            if nxt < 0:
                if not final and n - pos < len(MAGIC) and MAGIC.startswith(buf[pos:]):
                    return  # a record is being written
                yield Dropped("garbage between records", n - pos), n
                return
            yield Dropped("garbage between records", nxt - pos), nxt
            pos = nxt
            continue
        start = pos + len(MAGIC)
        limit = start + MAX_RECORD
        end = buf.find(END, start, limit)
        if end < 0:
            if n < limit and not final:
                return  # being written
            restart = buf.find(MAGIC, start, min(n, limit))
            if restart >= 0:
                # A new record began and this one never ended: its writer died mid-record.
                yield Dropped("truncated record", restart - pos), restart
                pos = restart
            elif n >= limit:
                # Its first MAX_RECORD bytes; the rest is garbage up to the next record.
                yield Dropped("oversized record", limit - pos), limit
                pos = limit
            else:
                yield Dropped("truncated record at end of spool", n - pos), n
                return
            continue
        record, problem = _record(buf[start:end])
        if problem:
            # Its end marker is the one after the fields of its type: one that
            # came sooner is a field's. (A record valid at the first one ends
            # there: its fields are all there, and no more.)
            own = own_end(buf, start, min(n, limit))
            if own is None and n < limit and not final and not _whole_record_in(buf, end, n):
                return  # its end is still being written
            if own is not None and own > end:
                end = own
                record, problem = _record(buf[start:end])
        if problem or record is None:
            restart = buf.find(MAGIC, start, end)
            if restart >= 0:
                yield Dropped("truncated record", restart - pos), restart
                pos = restart
                continue
            pos = end + len(END)
            yield Dropped(problem or "", pos - (start - len(MAGIC))), pos
            continue
        pos = end + len(END)
        yield record, pos


def _whole_record_in(buf: bytes, pos: int, stop: int) -> bool:
    """Whether a whole, valid record begins in buf[pos:stop]. Then the record
    before it that still wants fields is not being written: its writer (one
    shell, one record at a time) has moved on, and it never gets them (a torn
    record, or garbage whose type asks for a million more fields). No record
    a shell writes holds a valid one in its fields: that takes a start
    marker, a type and a session id in a row in fields of the user's text,
    and no record has more than two of those (a directory, a command)."""
    while (pos := buf.find(MAGIC, pos, stop)) >= 0:
        start = pos + len(MAGIC)
        end = buf.find(END, start, stop)
        if end < 0:
            return False
        if _record(buf[start:end])[1] is None:
            return True
        own = own_end(buf, start, stop)
        if own is not None and own > end and _record(buf[start:own])[1] is None:
            return True
        pos = start
    return False


def own_end(buf: bytes, start: int, stop: int) -> int | None:
    """Where the end marker of the record whose body (type, fields) begins at
    buf[start] is: right after the fields its type has, whatever they hold.
    -1: what follows them is no end marker (a record torn, or of no type: it
    is dropped); None: buf[:stop] ends first. A type _validate does not know
    ends at the first end marker, for it to say so."""

    def skip(pos: int, k: int) -> int | None:  # past k fields from pos
        for _ in range(k):
            nul = buf.find(b"\x00", pos, stop)
            if nul < 0:
                return None
            pos = nul + 1
        return pos

    def at_end(pos: int | None) -> int | None:  # pos: past the last field
        if pos is None:
            return None
        if buf.startswith(END, pos - 1):
            return pos - 1
        return None if END.startswith(buf[pos - 1 : stop]) else -1

    pos = skip(start, 1)
    if pos is None:
        return None
    rtype = buf[start : pos - 1]
    name = rtype.decode("utf-8", "replace")
    if name in FIELD_COUNTS:
        return at_end(skip(pos, FIELD_COUNTS[name]))
    if name not in ENV_AT:
        end = buf.find(END, start, stop)
        return None if end < 0 else end
    if name == "S":  # written by an earlier version: no branch point, no environment
        old = skip(pos, 10)
        if old is not None and buf.startswith(END, old - 1):
            return old - 1
    pos = skip(pos, ENV_AT[name])
    fmt_at = pos
    pos = skip(pos, 1) if pos is not None else None
    if pos is None or fmt_at is None:
        return None
    fmt = buf[fmt_at : pos - 1]
    if fmt in (b"declare", b"zsh"):
        return at_end(skip(pos, 1))
    if fmt == b"none":
        return at_end(pos)
    if fmt == b"list":
        after = skip(pos, 1)
        if after is None:
            return None
        count = buf[pos : after - 1]
        if not _UNSIGNED.match(count.decode("ascii", "replace")) or int(count) > MAX_RECORD:
            return -1
        return at_end(skip(after, int(count)))
    if fmt == b"list0":  # NAME=VALUE fields, up to the end marker, which has no "="
        while True:
            nul = buf.find(b"\x00", pos, stop)
            if nul < 0:
                return None
            if b"=" not in buf[pos:nul]:
                return at_end(pos)
            pos = nul + 1
    end = buf.find(END, start, stop)  # (a format _validate does not know)
    return None if end < 0 else end


def _record(body: bytes) -> tuple[Record | None, str | None]:
    """The record whose body (type and fields) this is, or what is wrong with it."""
    parts = _fields(body)
    rtype, fields = parts[0], parts[1:]
    try:
        problem = _validate(rtype, fields)
    except Exception as e:  # noqa: BLE001 - whatever is wrong with a record drops it alone
        problem = f"{rtype[:16]!r} record: {type(e).__name__}: {e}"
    return (None, problem) if problem else (Record(rtype, fields), None)


def _fields(body: bytes) -> list[str]:
    """A record's NUL-separated fields. Bytes that are not UTF-8 are kept
    exact (as surrogates) where they go back into a shell: an environment
    payload, a command, a directory (EXACT_AT); in every other field (a host,
    a session's name) they become U+FFFD."""
    try:
        return body.decode("utf-8").split("\x00")
    except UnicodeDecodeError:
        pass
    parts = body.decode("utf-8", "surrogateescape").split("\x00")
    env_at = ENV_AT.get(parts[0], len(parts)) + 1  # + 1: the type comes first
    exact = EXACT_AT.get(parts[0], ())
    for i in range(min(env_at, len(parts))):
        if i - 1 not in exact and not parts[i].isascii():
            parts[i] = parts[i].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return parts


# --- environment payloads -------------------------------------------------

_DECLARE = re.compile(r"^declare -[A-Za-z]*x[A-Za-z]* ([A-Za-z_][A-Za-z0-9_]*)", re.M)
_DQ_ESCAPE = re.compile(r'\\([\\"$`])')
_ANSI = re.compile(
    r"\\(x[0-9A-Fa-f]{1,2}|u[0-9A-Fa-f]{1,4}|U[0-9A-Fa-f]{1,8}|[0-7]{1,3}|c.|.)", re.S
)
_ANSI_SIMPLE = {
    "a": "\a", "b": "\b", "e": "\x1b", "E": "\x1b", "f": "\f", "n": "\n",
    "r": "\r", "t": "\t", "v": "\v", "\\": "\\", "'": "'", '"': '"', "?": "?",
}  # fmt: skip


def _ansi_unquote(s: str) -> str:
    """The value of a bash $'...' body. \\xHH and \\ooo are bytes: what is not
    UTF-8 among them is kept as surrogates (surrogateescape), so the bytes come
    back exact."""
    out = bytearray()
    pos = 0
    for m in _ANSI.finditer(s):
        out += s[pos : m.start()].encode("utf-8", "surrogateescape")
        pos = m.end()
        e = m.group(1)
        if e[0] == "x":
            out.append(int(e[1:], 16))
        elif e[0] in "uU":
            code = int(e[1:], 16)
            ok = code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF
            out += (chr(code) if ok else "\ufffd").encode("utf-8")
        elif e[0] in "01234567":
            out.append(int(e, 8) & 0xFF)
        elif e[0] == "c":
            out.append(ord(e[1]) & 0x1F)
        else:
            out += _ANSI_SIMPLE.get(e, "\\" + e).encode("utf-8", "surrogateescape")
    out += s[pos:].encode("utf-8", "surrogateescape")
    return out.decode("utf-8", "surrogateescape")


_DQ_VALUE = re.compile(r'"((?:[^"\\]|\\.)*)"', re.S)
_ANSI_VALUE = re.compile(r"\$'((?:[^'\\]|\\.)*)'", re.S)


def parse_declare(text: str) -> dict[str, str]:
    """Parse bash `export -p` output into a dict (exported-but-unset names are skipped)."""
    env: dict[str, str] = {}
    i, n = 0, len(text)
    for m in _DECLARE.finditer(text):
        if m.start() < i:
            continue  # matched inside a previous multi-line value
        name = m.group(1)
        i = m.end()
        if i >= n or text[i] != "=":
            continue
        i += 1
        if (v := _DQ_VALUE.match(text, i)) is not None:
            env[name] = _DQ_ESCAPE.sub(r"\1", v.group(1))
            i = v.end()
        elif (v := _ANSI_VALUE.match(text, i)) is not None:
            env[name] = _ansi_unquote(v.group(1))
            i = v.end()
        else:  # unquoted (not produced by bash 4.4+, kept for safety)
            j = text.find("\n", i)
            j = n if j < 0 else j
            env[name] = text[i:j]
            i = j
    return env


_HISTORY_LINE = re.compile(r"\s*\d+[* ] (.*?)\n?\Z", re.S)


def history_command(text: str) -> str:
    """The command line in one entry of bash's `history 1` output."""
    m = _HISTORY_LINE.match(text)
    if m is None:
        raise ValueError("not a line of bash history output")
    return m.group(1)


def parse_env(fmt: str, payload: list[str]) -> dict[str, str]:
    """The environment in a record's payload (the fields after its format)."""
    if fmt == "declare":
        return parse_declare(payload[0])
    if fmt == "list":
        return parse_list(payload[1:])
    if fmt == "list0":
        return parse_list(payload)
    if fmt == "zsh":
        return parse_zsh_export(payload[0])
    return {}


_ZSH_NAME = re.compile(r"(?:export |typeset -x )?([A-Za-z_][A-Za-z0-9_]*)=")
_ZSH_SIMPLE = {
    "n": b"\n", "t": b"\t", "r": b"\r", "e": b"\x1b", "E": b"\x1b", "a": b"\a",
    "b": b"\b", "f": b"\f", "v": b"\v", "\\": b"\\", "'": b"'", '"': b'"',
}  # fmt: skip
_ZSH_WIDTH = {"u": 4, "U": 8, "x": 2}
_HEX = frozenset("0123456789abcdefABCDEF")


def parse_zsh_export(text: str) -> dict[str, str]:
    """Parse zsh's `export` listing (NAME=VALUE lines) into a dict.

    zsh prints a value bare, in single quotes ('it'\\''s'), or as $'...' with
    \\n, \\t, \\\\, \\', \\uXXXX, \\UXXXXXXXX, \\C-X (control) and \\M-X (the byte
    with its high bit set) for what it cannot print. Escaped bytes are
    decoded as UTF-8; bytes that are not UTF-8 are kept as surrogates
    (surrogateescape), so they come back exact. (zsh writes a C1 control
    character and the raw byte alike, \\M-\\C-X: those come back as the byte.
    It lists an exported array, which is not in the environment, as
    NAME=( ... ): skipped.)
    """
    env: dict[str, str] = {}
    i, n = 0, len(text)
    while i < n:
        end = text.find("\n", i)
        m = _ZSH_NAME.match(text, i)
        if m is None or (0 <= end < m.end()):
            i = n if end < 0 else end + 1  # not NAME=...: skip the line
            continue
        if text.startswith("(", m.end()):  # an exported array: not in the environment
            i = n if end < 0 else end + 1
            continue
        value, i = _zsh_word(text, m.end())
        env[m.group(1)] = value
        i += 1  # the newline
    return env


def _zsh_word(text: str, i: int) -> tuple[str, int]:
    """The value starting at text[i], up to an unquoted newline; (value, its end)."""
    out: list[str] = []
    n = len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            break
        if c == "'":
            j = text.find("'", i + 1)
            j = n if j < 0 else j
            out.append(text[i + 1 : j])
            i = j + 1
        elif c == "$" and text.startswith("$'", i):
            raw, i = _zsh_dollar(text, i + 2)
            out.append(raw.decode("utf-8", "surrogateescape"))
        elif c == "\\" and i + 1 < n:
            out.append(text[i + 1])
            i += 2
        else:
            out.append(c)
            i += 1
    return "".join(out), i


def _zsh_dollar(text: str, i: int) -> tuple[bytes, int]:
    """A $'...' body from text[i]; (its bytes, the index after the closing quote)."""
    out = bytearray()
    n = len(text)
    while i < n:
        c = text[i]
        if c == "'":
            return bytes(out), i + 1
        if c != "\\":
            out += c.encode("utf-8", "surrogateescape")
            i += 1
            continue
        b, i = _zsh_escape(text, i)
        out += b
    return bytes(out), n


def _zsh_escape(text: str, i: int) -> tuple[bytes, int]:
    """One escape at text[i] (a backslash) inside $'...'; (its bytes, the index after it)."""
    e = text[i + 1 : i + 2]
    if text.startswith("M-", i + 1):
        # \M- then what the byte is without its high bit: \C-X, \n, \t, or the
        # character itself, a backslash included (0xDC is written \M-\).
        j = i + 3
        if text.startswith("\\C-", j) or text[j : j + 2] in ("\\n", "\\t"):
            b, j = _zsh_escape(text, j)
        else:
            b, j = text[j : j + 1].encode("utf-8", "surrogateescape"), j + 1
        return (bytes([b[0] | 0x80]) + b[1:] if b else b"\x80"), j
    if text.startswith("C-", i + 1):
        x = text[i + 3 : i + 4]
        return (b"\x7f" if x == "?" else bytes([ord(x or "@") & 0x1F])), i + 4
    if e in _ZSH_WIDTH:
        start = j = i + 2
        while j < min(len(text), start + _ZSH_WIDTH[e]) and text[j] in _HEX:
            j += 1
        if j > start:
            code = int(text[start:j], 16)
            if e == "x":
                return bytes([code]), j
            try:
                return chr(code).encode("utf-8"), j
            except (ValueError, UnicodeEncodeError):  # beyond U+10FFFF, or a surrogate
                return "\ufffd".encode(), j
    if e in _ZSH_SIMPLE:
        return _ZSH_SIMPLE[e], i + 2
    if e.isdigit() and e < "8":
        j = i + 1
        while j < min(len(text), i + 4) and "0" <= text[j] <= "7":
            j += 1
        return bytes([int(text[i + 1 : j], 8) & 0xFF]), j
    return ("\\" + e).encode("utf-8", "surrogateescape"), i + 2


def parse_list(items: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep and name:
            env[name] = value
    return env

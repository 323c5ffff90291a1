"""The output spool's format: each step's output as the terminal got it, in a
private file per session (`SID.output` in the spool directory), written by the
recorder (recorder/spool.py) and read by the daemon. It sits here, below the
recorder, so that the daemon reads it without importing a part above capture.

A file is a sequence of records, each written whole with one `write` to a file
opened `O_APPEND`, framed so that any bytes (NUL, invalid UTF-8, escapes) are
safe:

    MAGIC (4) | kind (1) | body length (u32) | body | CRC-32 of the body (u32)

    O  session, seq, offset in the step's output, wall time, bytes (a step's
       first one, written at its C mark, is empty: it gives its start time)
    E  session, seq, total bytes the step printed, how it ended, wall time
    Z  session, columns, rows, wall time (the terminal's size, at the start
       and at each resize)

A torn last record (the recorder killed mid-write) is left for later; a damaged
one is skipped up to the next MAGIC.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

OUTPUT_SUFFIX = ".output"
MAGIC = b"\x1eRWO"
HEAD = 4 << 20
TAIL = 4 << 20
CAP = HEAD + TAIL

_FRAME = struct.Struct("<4scI")
_CRC = struct.Struct("<I")
OUT = struct.Struct("<QQd")  # seq, offset, time
END = struct.Struct("<QQBd")  # seq, total, ended (1: its D came; 0: it did not), time
SIZE = struct.Struct("<HHd")  # columns, rows, time
MAX_BODY = 1 << 24  # a length beyond this is damage, not a record


def encode_record(kind: bytes, sid: str, fixed: bytes, data: bytes = b"") -> bytes:
    sid_b = sid.encode()
    body = bytes((len(sid_b),)) + sid_b + fixed + data
    return _FRAME.pack(MAGIC, kind, len(body)) + body + _CRC.pack(zlib.crc32(body))


@dataclass
class Record:
    kind: str  # "O", "E" or "Z"
    session: str
    seq: int = 0
    offset: int = 0  # O: where `data` starts in the step's output; E: the total
    time: float = 0.0
    data: bytes = b""
    ended: bool = False  # E: its D mark came
    size: tuple[int, int] = (0, 0)  # Z: columns, rows


def iter_records(
    buf: bytes, start: int = 0, final: bool = False, damaged: list[int] | None = None
) -> Iterator[tuple[Record, int]]:
    """The whole records of `buf` from `start`, each with the offset after it.
    Damage is skipped up to the next MAGIC (each run of damaged bytes appends its
    length to `damaged`, when given). A record running past the end stops the
    iteration (the recorder may be writing it: resume from the last offset),
    unless `final` says the file is complete: then it is damage, skipped too."""
    pos = start
    bad = -1  # where the run of damage being skipped began
    view = memoryview(buf)  # (a record's body is read in place: its data alone is copied)

    def skipped(upto: int) -> None:
        nonlocal bad
        if bad >= 0 and damaged is not None and upto > bad:
            damaged.append(upto - bad)
        bad = -1

    while True:
        found = buf.find(MAGIC, pos)
        if found < 0 or len(buf) - found < _FRAME.size:
            if final and bad < 0 and pos < len(buf) and buf[pos:].strip(b"\0"):
                bad = pos  # garbage after the last record, in a complete file
            if final:
                skipped(len(buf))
            return
        if found > pos and bad < 0 and buf[pos:found].strip(b"\0"):
            bad = pos  # (zeros are a punched hole, not damage)
        pos = found
        _, kind, length = _FRAME.unpack_from(buf, pos)
        body_at = pos + _FRAME.size
        end = body_at + length + _CRC.size
        if length > MAX_BODY:
            bad = pos if bad < 0 else bad
            pos += 1
            continue
        if end > len(buf):
            if not final:
                skipped(pos)
                return
            bad = pos if bad < 0 else bad
            pos += 1
            continue
        body = view[body_at : body_at + length]
        record = None
        if _CRC.unpack_from(buf, body_at + length)[0] == zlib.crc32(body):
            record = _decode(kind, body)
        if record is None:
            bad = pos if bad < 0 else bad
            pos += 1
            continue
        skipped(pos)
        yield record, end
        pos = end


def _decode(kind: bytes, body: memoryview) -> Record | None:
    if not body or len(body) < 1 + body[0]:
        return None
    n = body[0]
    sid, rest = str(body[1 : 1 + n], "ascii", "replace"), body[1 + n :]
    try:
        if kind == b"O":
            seq, offset, when = OUT.unpack_from(rest)
            return Record("O", sid, seq, offset, when, bytes(rest[OUT.size :]))
        if kind == b"E" and len(rest) == END.size:
            seq, total, ended, when = END.unpack(rest)
            return Record("E", sid, seq, total, when, ended=bool(ended))
        if kind == b"Z" and len(rest) == SIZE.size:
            cols, rows, when = SIZE.unpack(rest)
            return Record("Z", sid, time=when, size=(cols, rows))
    except struct.error:
        return None
    return None


@dataclass
class StepOutput:
    session: str
    seq: int
    data: bytes  # capped: the first and last lines, `omitted` bytes between them
    total: int  # bytes the step printed
    omitted: int
    finished: bool  # its end was recorded (E)
    ended: bool  # ... with its D mark (not cut off by the shell's end)
    started: float  # wall time of its C mark


def read_steps(path: Path, head: int = HEAD, tail: int = TAIL) -> list[StepOutput]:
    """Each step's output in the spool at `path` (written completely: its recorder
    has ended), in the order they started, with the cap applied (first `head` and
    last `tail` bytes, snapped to lines)."""
    buf = path.read_bytes()
    chunks: dict[tuple[str, int], list[tuple[int, bytes, float]]] = {}
    ends: dict[tuple[str, int], Record] = {}
    for r, _ in iter_records(buf, final=True):
        if r.kind == "O":
            chunks.setdefault((r.session, r.seq), []).append((r.offset, r.data, r.time))
        elif r.kind == "E":
            ends[(r.session, r.seq)] = r
            chunks.setdefault((r.session, r.seq), [])
    out = []
    for key, parts in chunks.items():
        end = ends.get(key)
        total = end.offset if end else max((o + len(d) for o, d, _ in parts), default=0)
        data, omitted = capped(parts, total, head, tail)
        out.append(
            StepOutput(
                key[0], key[1], data, total, omitted,
                finished=end is not None, ended=bool(end and end.ended),
                started=min((t for _, _, t in parts), default=0.0),
            )
        )  # fmt: skip
    return out


def capped(
    parts: list[tuple[int, bytes, float]], total: int, head: int = HEAD, tail: int = TAIL
) -> tuple[bytes, int]:
    """(the output kept, bytes left out) from chunks at their offsets: all of it up
    to head+tail bytes; beyond, the whole lines of the first `head` bytes and of
    the last `tail` (a line longer than that is cut). Chunks lost to damage are
    left out and counted, never filled in."""
    first, last, omitted = capped_parts(parts, total, head, tail)
    return first + last, omitted


def capped_parts(
    parts: list[tuple[int, bytes, float]], total: int, head: int = HEAD, tail: int = TAIL
) -> tuple[bytes, bytes, int]:
    """As `capped`, the kept output in two: before and after where the cap left
    bytes out (all of it in the first when it left out none)."""
    if total <= head + tail:
        kept = _within(parts, 0, total)
        return kept, b"", total - len(kept)
    first = _within(parts, 0, head)
    last = _within(parts, total - tail, total)
    cut = first.rfind(b"\n") + 1 or len(first)
    begin = last.find(b"\n") + 1
    if begin >= len(last):
        begin = 0
    first, last = first[:cut], last[begin:]
    return first, last, total - len(first) - len(last)


def _within(parts: list[tuple[int, bytes, float]], lo: int, hi: int) -> bytes:
    """The bytes of the chunks that fall in [lo, hi), in order."""
    out = []
    for off, data, _ in sorted(parts, key=lambda p: p[0]):
        a, b = max(lo, off), min(hi, off + len(data))
        if a < b:
            out.append(data[a - off : b - off])
    return b"".join(out)

"""The output spool: each step's output as the terminal got it, appended to a
private file per session (`SID.output` in the spool directory) for the daemon to
ingest later, as the hooks' `SID.spool` holds the commands.

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
one is skipped up to the next MAGIC. A step keeps all its output up to CAP
bytes; beyond, its first HEAD and last TAIL bytes, snapped to lines, and the
count of what was left out: the recorder writes the first CAP bytes as they
come and keeps only the last TAIL in memory after that, so a step printing
gigabytes costs neither the disk nor the recorder's memory more than CAP+TAIL.
"""

from __future__ import annotations

import errno
import os
import stat
import struct
import time
import zlib
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

from ..paths import ensure_private_dir, session_file
from .marks import Piece

OUTPUT_SUFFIX = ".output"
MAGIC = b"\x1eRWO"
HEAD = 4 << 20
TAIL = 4 << 20
CAP = HEAD + TAIL

_FRAME = struct.Struct("<4scI")
_CRC = struct.Struct("<I")
_OUT = struct.Struct("<QQd")  # seq, offset, time
_END = struct.Struct("<QQBd")  # seq, total, ended (1: its D came; 0: it did not), time
_SIZE = struct.Struct("<HHd")  # columns, rows, time
MAX_BODY = 1 << 24  # a length beyond this is damage, not a record


def _record(kind: bytes, sid: str, fixed: bytes, data: bytes = b"") -> bytes:
    sid_b = sid.encode()
    body = bytes((len(sid_b),)) + sid_b + fixed + data
    return _FRAME.pack(MAGIC, kind, len(body)) + body + _CRC.pack(zlib.crc32(body))


@dataclass
class _Step:
    total: int = 0
    tail: deque = field(default_factory=deque)  # chunks past CAP: (offset, bytes)
    tail_size: int = 0


class OutputSpool:
    """Writes the pieces a `Splitter` yields to the sessions' output spools. Any
    OSError (a full disk) goes to the caller, who stops recording."""

    def __init__(
        self,
        directory: Path,
        size: tuple[int, int] | None = None,
        *,
        head: int = HEAD,
        tail: int = TAIL,
        clock: Callable[[], float] = time.time,
    ):
        self.directory = directory
        self.size = size
        self.head, self.tail = head, tail
        self.clock = clock
        self._files: dict[str, int] = {}
        self._steps: dict[tuple[str, int], _Step] = {}
        self._last_sid: str | None = None

    def handle(self, pieces: list[Piece]) -> None:
        for p in pieces:
            if p.event == "output":
                if p.session is not None:
                    self.output(p.session, p.seq, p.payload)  # type: ignore[arg-type]
            elif p.event == "C":
                self.start(p.session, p.seq)  # type: ignore[arg-type]
            elif p.event in ("D", "lost"):
                self.end(p.session, p.seq, p.event == "D")  # type: ignore[arg-type]

    def start(self, sid: str, seq: int) -> None:
        # An empty first chunk: the step exists, with its start time, even silent.
        fd = self._fd(sid)  # a new session's file starts with the size, then this
        self._write(fd, _record(b"O", sid, _OUT.pack(seq, 0, self.clock())))
        self._steps[(sid, seq)] = _Step()

    def output(self, sid: str, seq: int, data: bytes) -> None:
        step = self._steps.get((sid, seq))
        if step is None:
            return
        offset = step.total
        step.total += len(data)
        limit = self.head + self.tail
        if offset < limit:
            written = data[: limit - offset]
            self._append(sid, _record(b"O", sid, _OUT.pack(seq, offset, self.clock()), written))
            data, offset = data[len(written) :], offset + len(written)
            if not data:
                return
        # Past the cap only the last `tail` bytes are kept, in memory until the end.
        step.tail.append((offset, data))
        step.tail_size += len(data)
        while step.tail_size - len(step.tail[0][1]) >= self.tail:
            step.tail_size -= len(step.tail.popleft()[1])

    def end(self, sid: str, seq: int, ended: bool) -> None:
        step = self._steps.pop((sid, seq), None)
        if step is None:
            return
        now = self.clock()
        while step.tail:  # chunk by chunk: the tail is not copied whole
            off, data = step.tail.popleft()
            self._append(sid, _record(b"O", sid, _OUT.pack(seq, off, now), data))
        self._append(sid, _record(b"E", sid, _END.pack(seq, step.total, int(ended), now)))

    def resize(self, size: tuple[int, int]) -> None:
        """The terminal's new size, noted in the spool of the session last seen."""
        self.size = size
        if self._last_sid is not None:
            self._append(self._last_sid, self._size_record(self._last_sid))

    def close(self) -> None:
        """The recorder ends: steps still running end without their D."""
        try:
            for sid, seq in list(self._steps):
                self.end(sid, seq, False)
        finally:
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()

    def _size_record(self, sid: str) -> bytes:
        cols, rows = self.size or (0, 0)
        return _record(b"Z", sid, _SIZE.pack(cols, rows, self.clock()))

    def _fd(self, sid: str) -> int:
        fd = self._files.get(sid)
        if fd is None:
            path = session_file(self.directory, sid, OUTPUT_SUFFIX)
            if path is None:
                raise ValueError(f"not a session id: {sid!r}")
            ensure_private_dir(self.directory)
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
            fd = os.open(path, flags, 0o600)
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
                os.close(fd)
                raise OSError(errno.EPERM, "not a regular file of yours", str(path))
            if st.st_mode & 0o077:
                os.fchmod(fd, 0o600)
            self._files[sid] = fd
            self._write(fd, self._size_record(sid))
        self._last_sid = sid
        return fd

    def _append(self, sid: str, record: bytes) -> None:
        self._write(self._fd(sid), record)

    @staticmethod
    def _write(fd: int, record: bytes) -> None:
        n = os.write(fd, record)
        if n != len(record):  # a regular file writes short only when it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# The daemon's side.


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


def iter_records(buf: bytes, start: int = 0, final: bool = False) -> Iterator[tuple[Record, int]]:
    """The whole records of `buf` from `start`, each with the offset after it.
    Damage is skipped up to the next MAGIC. A record running past the end stops
    the iteration (the recorder may be writing it: resume from the last offset),
    unless `final` says the file is complete: then it is damage, skipped too."""
    pos = start
    while True:
        pos = buf.find(MAGIC, pos)
        if pos < 0 or len(buf) - pos < _FRAME.size:
            return
        _, kind, length = _FRAME.unpack_from(buf, pos)
        body_at = pos + _FRAME.size
        end = body_at + length + _CRC.size
        if length > MAX_BODY:
            pos += 1
            continue
        if end > len(buf):
            if not final:
                return
            pos += 1
            continue
        body = buf[body_at : body_at + length]
        record = None
        if _CRC.unpack_from(buf, body_at + length)[0] == zlib.crc32(body):
            record = _decode(kind, body)
        if record is None:
            pos += 1
            continue
        yield record, end
        pos = end


def _decode(kind: bytes, body: bytes) -> Record | None:
    if not body or len(body) < 1 + body[0]:
        return None
    n = body[0]
    sid, rest = body[1 : 1 + n].decode("ascii", "replace"), body[1 + n :]
    try:
        if kind == b"O":
            seq, offset, when = _OUT.unpack_from(rest)
            return Record("O", sid, seq, offset, when, rest[_OUT.size :])
        if kind == b"E" and len(rest) == _END.size:
            seq, total, ended, when = _END.unpack(rest)
            return Record("E", sid, seq, total, when, ended=bool(ended))
        if kind == b"Z" and len(rest) == _SIZE.size:
            cols, rows, when = _SIZE.unpack(rest)
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
    if total <= head + tail:
        kept = _within(parts, 0, total)
        return kept, total - len(kept)
    first = _within(parts, 0, head)
    last = _within(parts, total - tail, total)
    cut = first.rfind(b"\n") + 1 or len(first)
    begin = last.find(b"\n") + 1
    if begin >= len(last):
        begin = 0
    kept = first[:cut] + last[begin:]
    return kept, total - len(kept)


def _within(parts: list[tuple[int, bytes, float]], lo: int, hi: int) -> bytes:
    """The bytes of the chunks that fall in [lo, hi), in order."""
    out = []
    for off, data, _ in sorted(parts, key=lambda p: p[0]):
        a, b = max(lo, off), min(hi, off + len(data))
        if a < b:
            out.append(data[a - off : b - off])
    return b"".join(out)

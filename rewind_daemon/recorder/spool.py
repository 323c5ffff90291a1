"""The output spool: each step's output as the terminal got it, appended to a
private file per session (`SID.output` in the spool directory) for the daemon to
ingest later, as the hooks' `SID.spool` holds the commands.

The records (O: a chunk of a step's output, E: its end, Z: the terminal's size)
and their framing are in capture/output_spool.py, which the daemon reads with.
A step keeps all its output up to CAP
bytes; beyond, its first HEAD and last TAIL bytes, snapped to lines, and the
count of what was left out: the recorder writes the first CAP bytes as they
come and keeps only the last TAIL in memory after that, so a step printing
gigabytes costs neither the disk nor the recorder's memory more than CAP+TAIL.

The recorder's records are written a batch at a time (`hold`): up to HELD
bytes wait in memory, and the proxy writes them (`flush`) as soon as the
shell's output pauses, so a burst of output costs a write per HELD, not one
per read of the terminal. A step's start and end are written at once. (A
recorder killed with SIGKILL in the middle of a burst loses what waited,
which its terminal had shown.)
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..capture.output_spool import (  # noqa: F401 - the format, shared with the daemon
    CAP,
    END,
    HEAD,
    MAGIC,
    OUT,
    OUTPUT_SUFFIX,
    SIZE,
    TAIL,
    Record,
    StepOutput,
    capped,
    encode_record,
    iter_records,
    read_steps,
)
from ..paths import ensure_private_dir, session_file
from .marks import Piece

HELD = 1 << 16  # bytes of records held before they are written (flush: all of them)


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
        hold: int = 0,
    ):
        """`hold`: bytes of records that may wait in memory before they are
        written (the recorder's: HELD; 0, each is written at once)."""
        self.directory = directory
        self.hold = hold
        self.size = size
        self.head, self.tail = head, tail
        self.clock = clock
        self._files: dict[str, int] = {}
        self._steps: dict[tuple[str, int], _Step] = {}
        self._last_sid: str | None = None
        self._held: dict[int, list[bytes]] = {}  # records not written yet, by file
        self.held = 0  # their bytes

    def handle(self, pieces: list[Piece]) -> None:
        """The pieces' records; held, but for a step's start or end: written at
        once with what is held (the daemon stores a step once its end is in,
        and a full disk is said before the step's output is shown)."""
        marked = False
        for p in pieces:
            if p.event == "output":
                if p.session is not None:
                    self.output(p.session, p.seq, p.payload)  # type: ignore[arg-type]
            elif p.event == "C":
                self.start(p.session, p.seq)  # type: ignore[arg-type]
                marked = True
            elif p.event in ("D", "lost"):
                self.end(p.session, p.seq, p.event == "D")  # type: ignore[arg-type]
                marked = True
        if marked:
            self.flush()

    def start(self, sid: str, seq: int) -> None:
        # An empty first chunk: the step exists, with its start time, even silent.
        self._fd(sid)  # (first: a new session's file starts with the size, then this)
        self._append(sid, encode_record(b"O", sid, OUT.pack(seq, 0, self.clock())))
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
            self._append(
                sid, encode_record(b"O", sid, OUT.pack(seq, offset, self.clock()), written)
            )
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
            self._append(sid, encode_record(b"O", sid, OUT.pack(seq, off, now), data))
        self._append(sid, encode_record(b"E", sid, END.pack(seq, step.total, int(ended), now)))

    def resize(self, size: tuple[int, int]) -> None:
        """The terminal's new size, noted in the spool of the session last seen."""
        self.size = size
        if self._last_sid is not None:
            self._append(self._last_sid, self._size_record(self._last_sid))

    def flush(self) -> None:
        """Write the records held (in their order)."""
        held, self._held, self.held = self._held, {}, 0
        for fd, records in held.items():
            self._write(fd, records[0] if len(records) == 1 else b"".join(records))

    def close(self) -> None:
        """The recorder ends: steps still running end without their D."""
        try:
            for sid, seq in list(self._steps):
                self.end(sid, seq, False)
            self.flush()
        finally:
            self._held, self.held = {}, 0
            for fd in self._files.values():
                os.close(fd)
            self._files.clear()

    def _size_record(self, sid: str) -> bytes:
        cols, rows = self.size or (0, 0)
        return encode_record(b"Z", sid, SIZE.pack(cols, rows, self.clock()))

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
            self._keep(fd, self._size_record(sid))
        self._last_sid = sid
        return fd

    def _append(self, sid: str, record: bytes) -> None:
        self._keep(self._fd(sid), record)

    def _keep(self, fd: int, record: bytes) -> None:
        """`record`, to be written to `fd` (held while less than `hold` is)."""
        self._held.setdefault(fd, []).append(record)
        self.held += len(record)
        if self.held >= self.hold:
            self.flush()

    @staticmethod
    def _write(fd: int, record: bytes) -> None:
        n = os.write(fd, record)
        if n != len(record):  # a regular file writes short only when it is full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

"""The wire between the local rw and the one it started over SSH: frames on the
remote's stdin and stdout, `KIND LENGTH\\n` then LENGTH bytes.

Before the first frame, a remote's shell may print anything (a login banner, a
line of ~/.bashrc): the remote side starts its frames after a line holding a
nonce the local side chose, and the local side skips everything before it.
Runs on the remote too, under Python 3.9: standard library only.
"""

from __future__ import annotations

import json
import re
from typing import BinaryIO

MAX_FRAME = 64 * 1024 * 1024
_HEADER = re.compile(rb"([a-z]{1,16}) (\d{1,9})\n")

# Remote to local
HELLO = "hello"  # {python, cached, home}: the bootstrap is running
OUT = "out"  # bytes the command printed
NOTE = "note"  # {message}: what the breaker tells the user
REPORT = "report"  # the guard report, as GuardReport.to_json
SESSION = "session"  # the run as recorded there, to be stored here
EARLIER = "earlier"  # a run whose report did not come back (the connection went), as SESSION
DOCUMENT = "document"  # a session there as `rw export --format json` writes it (rw pull)
END = "end"  # {}: all that was asked is sent (rw pull)
ERROR = "error"  # {message, exit_code}: the run could not start
TAKEN = "taken"  # {bytes}: input written to the command's terminal (more may be sent)
# Local to remote
BUNDLE = "bundle"  # the zipapp, when the remote has not got it
REQUEST = "request"  # {request, config}
HALT = "halt"  # {why}: halt the run and roll back (Ctrl-C here)
RESIZE = "resize"  # {rows, columns}: the terminal here changed size
INPUT = "input"  # bytes of the local rw's stdin, for the command
EOF = "eof"  # {}: the local rw's stdin ended
ACK = "ack"  # {session}: the run's report and record came here


class WireError(Exception):
    """The other side sent something that is not a frame."""


class TooBig(WireError):
    """A frame's header says more bytes than its kind may hold (Parser's limits)."""

    def __init__(self, kind: str, size: int, limit: int):
        super().__init__(f"a {kind} of {size} bytes, over the {limit} it may be")
        self.kind, self.size, self.limit = kind, size, limit


def frame(kind: str, payload: bytes) -> bytes:
    return b"%s %d\n" % (kind.encode(), len(payload)) + payload


def json_frame(kind: str, doc: object) -> bytes:
    return frame(kind, json.dumps(doc).encode())


def start_line(nonce: str) -> bytes:
    return b"\nRW-REMOTE %s\n" % nonce.encode()


class Parser:
    """Frames out of a byte stream that arrives in pieces."""

    def __init__(self, limits: dict[str, int] | None = None) -> None:
        self.buf = bytearray()
        self.limits = limits or {}  # kind: the most its frames may hold, checked at the header

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        """The frames complete so far. What is not a frame raises WireError once
        the frames before it are returned (the next call raises)."""
        self.buf += data
        out: list[tuple[str, bytes]] = []
        while True:
            nl = self.buf.find(b"\n", 0, 32)
            if nl < 0:
                if len(self.buf) >= 32 and not out:
                    raise WireError(f"not a frame: {bytes(self.buf[:32])!r}")
                return out
            m = _HEADER.fullmatch(bytes(self.buf[: nl + 1]))
            kind, size = (m.group(1).decode(), int(m.group(2))) if m else ("", 0)
            limit = min(self.limits.get(kind, MAX_FRAME), MAX_FRAME)
            if m is None or size > limit:
                if out:
                    return out
                if m is not None and kind in self.limits:
                    raise TooBig(kind, size, limit)
                raise WireError(f"not a frame: {bytes(self.buf[: nl + 1])!r}")
            if len(self.buf) < nl + 1 + size:
                return out
            out.append((kind, bytes(self.buf[nl + 1 : nl + 1 + size])))
            del self.buf[: nl + 1 + size]


def read_frame(stream: BinaryIO) -> tuple[str, bytes] | None:
    """The next frame of a blocking stream; None at its end."""
    header = stream.readline(32)
    if not header:
        return None
    m = _HEADER.fullmatch(header)
    if m is None or int(m.group(2)) > MAX_FRAME:
        raise WireError(f"not a frame: {header[:32]!r}")
    size = int(m.group(2))
    payload = stream.read(size) if size else b""
    if len(payload) != size:
        return None
    return m.group(1).decode(), payload

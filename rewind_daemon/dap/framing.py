"""The protocol's framing: `Content-Length: N` headers, a blank line, then N
bytes of JSON. Reading survives bad input: a bad header or body is reported
and skipped, and reading goes on at the next message."""

from __future__ import annotations

import io
import json
import threading
from typing import BinaryIO

HEADER_END = b"\r\n\r\n"
LENGTH = b"content-length:"
MAX_BODY = 64 << 20  # no editor sends a request this large
MAX_HEADER = 8192


class FramingError(Exception):
    """A message that could not be read (it was skipped)."""


class Reader:
    """Messages from a byte stream, one at a time."""

    def __init__(self, stream: io.BufferedIOBase):
        self.stream = stream
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.stream.read1(65536)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def read(self) -> dict | None:
        """The next message; None at the end of the stream. Raises FramingError
        for a message that was skipped."""
        while True:
            end = self.buf.find(HEADER_END)
            if end >= 0:
                break
            if len(self.buf) > MAX_HEADER:
                self._resync(1)
                raise FramingError("a header without its end (skipped)")
            if not self._fill():
                if self.buf.strip():
                    self.buf = b""
                    raise FramingError("the stream ended inside a message's header")
                return None
        header, rest = self.buf[:end], self.buf[end + len(HEADER_END) :]
        length = _content_length(header)
        if isinstance(length, str):
            self.buf = rest
            self._resync(0)
            raise FramingError(length)
        while len(rest) < length:
            self.buf = rest
            if not self._fill():
                self.buf = b""
                raise FramingError("the stream ended inside a message's body")
            rest = self.buf
        body, self.buf = rest[:length], rest[length:]
        try:
            message = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise FramingError(f"a message that is not JSON ({e})") from None
        if not isinstance(message, dict):
            raise FramingError("a message that is not a JSON object")
        return message

    def _resync(self, start: int) -> None:
        """Drop bytes up to the next header that could start a message."""
        at = self.buf.lower().find(LENGTH, start)
        self.buf = self.buf[at:] if at >= 0 else b""


def _content_length(header: bytes) -> int | str:
    """The body's length, or why the header is wrong."""
    length = None
    for line in header.split(b"\r\n"):
        name, sep, value = line.partition(b":")
        if not sep:
            return f"a header line without a colon: {line[:60]!r} (message skipped)"
        if name.strip().lower() == b"content-length":
            text = value.strip()
            if not text.isdigit():
                return f"a Content-Length that is not a number: {text[:30]!r} (message skipped)"
            length = int(text)
    if length is None:
        return "a header without Content-Length (message skipped)"
    if length > MAX_BODY:
        return f"a Content-Length of {length} bytes, over {MAX_BODY} (message skipped)"
    return length


class Writer:
    """Messages to a byte stream, numbered, whole (one lock for all threads)."""

    def __init__(self, stream: BinaryIO):
        self.stream = stream
        self.seq = 0
        self.lock = threading.Lock()
        self.closed = False

    def send(self, message: dict) -> None:
        with self.lock:
            if self.closed:
                return
            self.seq += 1
            body = json.dumps({"seq": self.seq, **message}, ensure_ascii=False).encode(
                "utf-8", "replace"
            )
            try:
                self.stream.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
                self.stream.flush()
            except (BrokenPipeError, ConnectionError, ValueError, OSError):
                self.closed = True  # the client is gone; the session ends on its own


def encode(message: dict) -> bytes:
    """One framed message (for tests and clients)."""
    body = json.dumps(message).encode()
    return b"Content-Length: %d\r\n\r\n" % len(body) + body

"""The mark protocol and the splitter that finds the marks in a shell's output.

Under `rw record` the shell's environment holds `RW_RECORD=TOKEN:PID:TTY` (a
random token made for this run, the recorder's pid and the terminal it serves).
The hooks mark each step with OSC 133 sequences, as terminals' shell
integrations do, carrying rw's own parameter:

    ESC ] 133 ; A ; rw=TOKEN:SID:SEQ BEL          prompt starts
    ESC ] 133 ; B ; rw=TOKEN:SID:SEQ BEL          prompt ends, the user types
    ESC ] 133 ; C ; rw=TOKEN:SID:SEQ BEL          step SEQ of session SID runs
    ESC ] 133 ; D ; EXIT ; rw=TOKEN:SID:SEQ BEL   it ended with status EXIT

(ST, `ESC \\`, ends a mark as well as BEL; SEQ may be empty in A and B). The
output of a step is what the shell printed between its C and its D. A mark
with this run's token is removed from what reaches the terminal; every other
OSC 133 sequence (the user's own terminal integration) and a mark with another
token are output like any other bytes, so a file shown or another terminal's
marks cannot start or end a step (the token is in the shell's environment: a
program that reads it could, as it could write to the spool itself).

`Splitter` is a pure, incremental parser: fed the chunks read from the
terminal, it returns the bytes to show and the pieces of the stream. The hot
path is one `bytes.find` per chunk; a chunk without a mark goes through as the
same object.
"""

from __future__ import annotations

import hmac
from typing import NamedTuple

from ..paths import is_session_id

ENV = "RW_RECORD"
PREFIX = b"\x1b]133;"
# An OSC longer than this is no mark of ours: its bytes go on as output.
MAX_MARK = 512
KINDS = {b"A": "A", b"B": "B", b"C": "C", b"D": "D"}


class Piece(NamedTuple):
    """One event of the stream, in order. `event` is "A", "B", "C" or "D" for a
    mark (payload: its other parameters, e.g. b"0" for D's exit status);
    "output" for bytes the shell printed (session and seq: the step they belong
    to, None outside any step); "lost" for a step closed without its D (its
    shell ended, or the next prompt of its session came first)."""

    event: str
    session: str | None
    seq: int | None
    payload: bytes


def env_value(token: str, pid: int, tty: str) -> str:
    return f"{token}:{pid}:{tty}"


def parse_env(value: str) -> tuple[str, int, str] | None:
    """(token, recorder pid, tty) from a RW_RECORD value, None when malformed."""
    token, _, rest = value.partition(":")
    pid, _, tty = rest.partition(":")
    if not token or not pid.isdigit() or not tty:
        return None
    return token, int(pid), tty


class Splitter:
    """Splits a terminal stream by this run's marks. `feed` returns (bytes for
    the terminal, pieces); a mark cut by a read is held back until its end
    arrives, or until `flush` (the recorder flushes after a short quiet time,
    so a lone ESC never waits for more output)."""

    def __init__(self, token: str):
        self._token = token.encode()
        self.pending = b""  # a possible mark's start, held back from the last chunk
        self._open: list[tuple[str, int]] = []  # running steps, innermost last

    @property
    def step(self) -> tuple[str, int] | None:
        """The step output belongs to now: the innermost one running."""
        return self._open[-1] if self._open else None

    def feed(self, data: bytes) -> tuple[bytes, list[Piece]]:
        if self.pending:
            data = self.pending + data
            self.pending = b""
        start = data.find(PREFIX)
        if start < 0:
            cut = _partial_prefix(data, 0)
            if cut < len(data):
                self.pending = data[cut:]
                data = data[:cut]
            if not data:
                return b"", []
            return data, [self._output(data)]
        shown: list[bytes] = []
        pieces: list[Piece] = []
        pos = 0  # data[pos:] has not been given out yet
        while start >= 0:
            end, after = _mark_end(data, start)
            if end is None:
                if len(data) - start < MAX_MARK:
                    self._give(data[pos:start], shown, pieces)
                    self.pending = data[start:]
                    return b"".join(shown), pieces
            elif end >= 0:
                mark = self._parse(data[start + len(PREFIX) : end])
                if mark is not None:
                    self._give(data[pos:start], shown, pieces)
                    self._mark(mark, pieces)
                    pos = after
                    start = data.find(PREFIX, pos)
                    continue
            start = data.find(PREFIX, start + 1)
        cut = _partial_prefix(data, pos)
        self.pending = data[cut:]
        self._give(data[pos:cut], shown, pieces)
        return b"".join(shown), pieces

    def flush(self) -> tuple[bytes, list[Piece]]:
        """What is held back, as output: its end did not come."""
        data, self.pending = self.pending, b""
        return data, [self._output(data)] if data else []

    def close(self) -> list[Piece]:
        """The stream ended: the steps still running are lost."""
        pieces = [Piece("lost", s, q, b"") for s, q in reversed(self._open)]
        self._open.clear()
        return pieces

    def _output(self, data: bytes) -> Piece:
        step = self.step
        if step is None:
            return Piece("output", None, None, data)
        return Piece("output", step[0], step[1], data)

    def _give(self, data: bytes, shown: list[bytes], pieces: list[Piece]) -> None:
        if data:
            shown.append(data)
            pieces.append(self._output(data))

    def _parse(self, body: bytes) -> tuple[str, str, int | None, bytes] | None:
        """(kind, session, seq, other parameters) of a mark of this run, or None
        when `body` is not one (it is then output)."""
        params = body.split(b";")
        ours = [p for p in params[1:] if p.startswith(b"rw=")]
        if len(ours) != 1:
            return None
        token, _, rest = ours[0][3:].partition(b":")
        if not hmac.compare_digest(token, self._token):
            return None
        kind = KINDS.get(params[0])
        sid_b, _, seq_b = rest.partition(b":")
        sid = sid_b.decode("ascii", "replace")
        seq = int(seq_b) if seq_b.isdigit() and len(seq_b) < 19 else None
        if kind is None or not is_session_id(sid) or (seq is None and kind in "CD"):
            return "", "", None, b""  # ours (the token is right) but malformed: dropped
        other = b";".join(p for p in params[1:] if not p.startswith(b"rw="))
        return kind, sid, seq, other

    def _mark(self, mark: tuple[str, str, int | None, bytes], pieces: list[Piece]) -> None:
        kind, sid, seq, other = mark
        if not kind:
            return
        if kind == "C":
            if self.step == (sid, seq):
                return  # said twice: one step
            self._close_session(sid, pieces)
            assert seq is not None
            self._open.append((sid, seq))
        elif kind == "D":
            if (sid, seq) in self._open:
                assert seq is not None
                while self._open[-1] != (sid, seq):
                    pieces.append(_lost(self._open.pop()))
                self._open.pop()
        else:
            # A prompt of a session ends its running step, if any: its D never came.
            self._close_session(sid, pieces)
        pieces.append(Piece(kind, sid, seq, other))

    def _close_session(self, sid: str, pieces: list[Piece]) -> None:
        """Close the steps of `sid` still running (and those nested in them)."""
        for i, (open_sid, _) in enumerate(self._open):
            if open_sid == sid:
                while len(self._open) > i:
                    pieces.append(_lost(self._open.pop()))
                return


def _lost(step: tuple[str, int]) -> Piece:
    return Piece("lost", step[0], step[1], b"")


def _mark_end(data: bytes, start: int) -> tuple[int | None, int]:
    """Where the OSC at `start` ends: (index of its terminator, index after it);
    (None, 0) when its end is not in `data` yet; (-1, 0) when it is not a mark
    (another escape sequence begins inside it)."""
    body = start + len(PREFIX)
    limit = min(len(data), start + MAX_MARK)
    bel = data.find(b"\x07", body, limit)
    esc = data.find(b"\x1b", body, limit)
    if esc >= 0 and (bel < 0 or esc < bel):
        if esc + 1 == len(data):
            return None, 0
        return (esc, esc + 2) if data[esc + 1] == 0x5C else (-1, 0)  # ST is ESC backslash
    if bel >= 0:
        return bel, bel + 1
    return (None, 0) if limit == len(data) else (-1, 0)


def _partial_prefix(data: bytes, pos: int) -> int:
    """Where a start of a mark cut off at the end of `data` begins (len(data) when
    there is none): the only bytes a chunk without a whole mark holds back."""
    i = data.rfind(b"\x1b", max(pos, len(data) - len(PREFIX) + 1))
    return i if i >= 0 and PREFIX.startswith(data[i:]) else len(data)

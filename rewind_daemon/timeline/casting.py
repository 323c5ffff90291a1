"""A recorded session as an asciicast v2 file, for asciinema to play.

One JSON line of header (the terminal's size when the first step began, its
start time, TERM and SHELL, a title), then one JSON array per event:
`[seconds, "o", text]` for what the steps printed, at the times it was printed;
`[seconds, "r", "COLSxROWS"]` when the terminal was resized; `[seconds, "m",
command]` where each step began. Times start at 0 at the first step chosen.

Only what the steps printed is in the cast (the recorder keeps no prompt nor
what was typed), so `asciinema cat` prints the steps' output as the terminal
got it. Bytes that are not UTF-8 become U+FFFD (asciicast text is Unicode); a
character split between two reads is put back together first.
"""

from __future__ import annotations

import codecs
import json
from collections.abc import Iterator

from ..errors import RwError
from ..store import OutputRow, SessionRow, StepRow, Store

VERSION = 2
DEFAULT_SIZE = (80, 24)  # when the session has no recorded size (a replay)


def _line(value: object) -> str:
    # ASCII only: every byte of the text escaped as JSON says, one event a line.
    return json.dumps(value, ensure_ascii=True)


def _label(text: str) -> str:
    """`text` as valid Unicode (a command stored with undecodable bytes)."""
    return text.encode("utf-8", "replace").decode("utf-8")


def _chunks(out: OutputRow, untimed: float) -> Iterator[tuple[float, bytes]]:
    """(wall time, bytes) of the parts of a step's output as printed. The stored
    times are at offsets in the output as printed: over the cap, the bytes kept
    are its first and last halves (each ends at a line's end, about the middle),
    and the times of what was left out fall at the place between them; where a
    masked secret made the bytes another length, the offsets are scaled.
    Output stored without times comes all at once, at `untimed`."""
    raw = out.raw
    times = list(out.timing) or [(0, untimed)]
    printed = len(raw) if out.size < 0 else out.size
    kept = printed - out.omitted
    head = _middle_line_end(raw) if out.omitted else 0

    def place(offset: int) -> int:
        if out.omitted:
            if offset >= head + out.omitted:
                offset -= out.omitted
            elif offset > head:
                offset = head
        elif kept != len(raw):
            offset = round(offset * len(raw) / max(kept, 1))
        return min(max(offset, 0), len(raw))

    cuts = sorted(((place(o), when) for o, when in times), key=lambda c: c[0])
    for k, (at, when) in enumerate(cuts):
        end = cuts[k + 1][0] if k + 1 < len(cuts) else len(raw)
        if k == 0:
            at = 0
        if end > at:
            yield when, raw[at:end]


def _middle_line_end(raw: bytes) -> int:
    """Where the first half of `raw` ends: after the newline nearest its middle."""
    mid = len(raw) // 2
    before, after = raw.rfind(b"\n", 0, mid + 1), raw.find(b"\n", mid)
    if before < 0 and after < 0:
        return mid
    if before < 0 or (after >= 0 and after - mid < mid - before):
        return after + 1
    return before + 1


def _size_at(sizes: list[tuple[float, int, int]], when: float) -> tuple[int, int]:
    current = sizes[0][1:] if sizes else DEFAULT_SIZE
    for at, cols, rows in sizes:
        if at > when:
            break
        current = (cols, rows)
    return current


def to_cast(store: Store, session: SessionRow, steps: list[StepRow], first: int, last: int) -> str:
    """The steps `steps` (numbered `first` to `last`) of `session` as an
    asciicast v2 file."""
    outputs = store.step_outputs(session.id, first, last)
    if not any(s.number in outputs for s in steps):
        what = f"steps {first} to {last} of session {session.id}" if steps else session.id
        raise RwError(
            f"no output was recorded for {what}; record a shell's output with "
            "`rw record` (or [record] output = true in the config)"
        )
    events: list[tuple[float, int, str, str]] = []  # (time, order, kind, data)
    order = 0
    for st in steps:
        out = outputs.get(st.number)
        begin = out.timing[0][1] if out is not None and out.timing else st.started_at
        events.append((begin, order, "m", _label(st.command)))
        order += 1
        if out is None:
            continue
        decoder = codecs.getincrementaldecoder("utf-8")("replace")
        # (without the times of its parts, as a replay's: all of it at its end)
        chunks = list(_chunks(out, st.ended_at or begin))
        for k, (when, data) in enumerate(chunks):
            printed = decoder.decode(data, final=k == len(chunks) - 1)
            if printed:
                events.append((max(when, begin), order, "o", printed))
                order += 1
    events.sort(key=lambda e: (e[0], e[1]))
    t0 = events[0][0]
    end = max(events[-1][0], max((s.ended_at or s.started_at) for s in steps))
    sizes = store.terminal_sizes(session.id)
    width, height = _size_at(sizes, t0)
    for at, cols, rows in sizes:
        if t0 < at <= end:
            events.append((at, order, "r", f"{cols}x{rows}"))
            order += 1
    events.sort(key=lambda e: (e[0], e[1]))
    env = store.env(session.env_id) if session.env_id else {}
    header: dict = {"version": VERSION, "width": width, "height": height, "timestamp": int(t0)}
    header["env"] = {k: _label(env[k]) for k in ("TERM", "SHELL") if k in env}
    title = session.name or f"rw session {session.id}"
    if first > 1 or last < session.steps:
        title += f", steps {first} to {last}"
    header["title"] = _label(title)
    lines = [_line(header)]
    last_time = 0.0
    for when, _, kind, payload in events:
        last_time = max(last_time, round(when - t0, 6))
        lines.append(_line([last_time, kind, payload]))
    return "\n".join(lines) + "\n"

"""Storing what steps printed: one model and one code path for the output of a
recorded shell (ingested from its `.output` spool), a replay and a guard run.

`make_output` caps the bytes (all up to the cap; beyond, the first and last half
of it, snapped to lines, with the count left out), makes the text
(termtext.py) and masks secrets with the rules commands get, in the bytes and
in their text, where one pass over the text and the lines the text does not
show as written finds any (see `_masked`). Nothing reaches the store before
that.

`OutputReader` follows the output spools as `SpoolReader` follows the command
spools: exactly once (the offset committed in the transaction that stores the
rows), and what it stored is erased from the spool at once. A step's output is
stored when its end is in the spool and its step is in the store; until then
its records stay in the spool, and the committed offset stays before its first
record (after a crash they are read again; a step already stored is not stored
twice). Output of a step that will never be stored (a line typed with a
leading space, an ignored command: the store has a later step of its session,
or the session ended) is dropped. When the session has ended and its spool has
been quiet for a while, a step whose end never came (the recorder killed) is
stored as it is, marked incomplete.

The steps a read makes ready are made (`ready`: make_output and the row's
blobs) before the transaction that stores them: where they are many, some in
the worker process (output_worker.py) while the daemon makes the others. A
backlog is read BACKLOG_READ at a time, so that one read makes several ready.
The daemon's own work between reads is done while the worker makes steps,
not while it waits: as the worker begins a read's steps, the daemon runs the
read before's transaction and takes in the read after (parses it and finds
its steps), then makes steps of this one with the worker.
"""

from __future__ import annotations

import logging
import os
import time
from bisect import bisect_left, bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from ..paths import session_file
from ..redact import MASK, Redactor
from ..store import MAX_OUTPUT, OutputBlobs, OutputRow, Store, output_blobs, plain_text
from .known_secrets import MIN_LENGTH, KnownSecrets
from .logonce import LogOnce
from .output_spool import MAX_BODY, OUTPUT_SUFFIX, Record, capped_parts, iter_records
from .termtext import (
    has_fast_spans,
    hidden_spans,
    is_plain,
    line_ends,
    may_use_alternate_screen,
    same_lines,
    text_line_ends,
    text_of,
)
from .worker_spawn import START_BYTES

if TYPE_CHECKING:
    from .output_worker import OutputWorker

log = logging.getLogger("rw.ingest")

CHUNK = MAX_BODY + 64 * 1024  # the most read at once: a whole record of the largest
READ = 1 << 20  # what is read (and stored in one transaction) at a time
# ... where more waits (a backlog): several steps made ready at once, on both
# cores (output_worker.py), and fewer transactions.
BACKLOG_READ = 4 << 20
# A spool of an ended session, untouched this long, has all its recorder wrote.
QUIET_SECONDS = 2.0
DAMAGED = "dropped_output"  # the store's counter of damaged output records


def make_output(
    raw: bytes,
    command: str,
    redactor: Redactor,
    *,
    cap: int = MAX_OUTPUT,
    size: int | None = None,
    omitted: int = 0,
    complete: bool = True,
    timing: tuple[tuple[int, float], ...] = (),
    rest: bytes = b"",
    plain_text_too: bool = True,
) -> tuple[OutputRow, int]:
    """The stored form of a step's output `raw` (`size`: what it printed, when
    more than `raw` holds; `omitted`: bytes already left out, between `raw` and
    `rest`), and how many secrets were masked. The text says where bytes were
    left out. Without `plain_text_too`, a plain row's text is left empty: its
    row holds none (output_blobs), and `ready` makes no more than the row."""
    size = len(raw) + len(rest) + omitted if size is None else size
    if len(raw) + len(rest) > cap:
        whole = [(0, raw, 0.0), (len(raw) + omitted, rest, 0.0)]
        raw, rest, omitted = capped_parts(whole, size, cap // 2, cap - cap // 2)
    pieces, texts, n = [], [], 0
    plain = True  # (the text is the bytes' own)
    parts = (raw, rest) if omitted and rest else (raw + rest,)
    for part in parts:
        # (two parts are never plain together: the text says what was left out)
        part, k, text, own = _masked(part, command, redactor, plain_text_too or len(parts) > 1)
        pieces.append(part)
        texts.append(text)
        n += k
        plain = plain and own
    if len(texts) == 2:
        gap = "" if not texts[0] or texts[0].endswith("\n") else "\n"
        texts.insert(1, f"{gap}[... {omitted} bytes left out ...]\n")
        plain = False
    row = OutputRow(b"".join(pieces), "".join(texts), size, omitted, complete, timing, plain)
    return row, n


def _masked(
    raw: bytes, command: str, redactor: Redactor, plain_text_too: bool = True
) -> tuple[bytes, int, str, bool]:
    """(the bytes with their secrets masked, how many, their text, whether the
    text is the bytes' own: plain_text, stored once; "" without `plain_text_too`)."""
    if is_plain(raw):  # (the text holds what the bytes hold, no more: one pass)
        masked, n = redactor.text(raw.decode("utf-8", "surrogateescape"))
        if n:
            raw = masked.encode("utf-8", "surrogateescape")
        return raw, n, plain_text(raw) if plain_text_too else "", True
    if not has_fast_spans():  # (finding the lines below takes the C scanner)
        return (*_both(raw, command, redactor), False)
    # Most output holds no secret: one pass finds that, over what a reader sees
    # (the text: a secret that escape sequences split in the bytes is whole
    # there) and over the lines of the bytes the text does not show as written
    # (overwritten, joined, on the alternate screen, in escape strings, with
    # the lines around them: termtext.hidden_spans). What a rule finds in the
    # bytes, it finds in one of the two.
    text = text_of(raw, command)
    spans = hidden_spans(raw)
    hidden = [raw[a:z].decode("utf-8", "replace") for a, z in spans]
    in_text: list[str] = []
    in_hidden: list[str] = []
    masked_text, n = redactor.text(text, in_text)
    if hidden:
        n += redactor.text("\n".join(hidden), in_hidden)[1]
    if not n:
        return raw, 0, text, False
    # Secrets: where they are (their lines, and the lines around them), the
    # bytes and their text searched as they are when no first pass is made,
    # and what the first pass found must be in neither.
    found = in_text + in_hidden
    lines = _Lines(raw, text)
    regions = _regions(raw, text, lines, spans, hidden, in_text, in_hidden)
    if regions is None:  # (too many, or the text's lines are not the bytes')
        regions = [(0, len(raw))]
    pieces: list[bytes] = []
    n = at = 0
    whole = regions == [(0, len(raw))]
    for a, z in regions:
        part, k, part_text = _both(raw[a:z], command, redactor, masked_text if whole else None)
        left = _left(found, part, part_text)
        if left:
            for secret in left:
                part_text = part_text.replace(secret, MASK)
            part_text, _ = redactor.text(part_text)
            part = part_text.encode()
        pieces += (raw[at:a], part)
        n += k + len(left)
        at = z
    if whole:
        return pieces[1], n, part_text, False
    pieces.append(raw[at:])
    out = b"".join(pieces)
    # (the text of the lines around the secrets made again, the others' kept)
    spliced = _spliced(raw, text, lines, regions, pieces[1:-1:2], command)
    return out, n, text_of(out, command) if spliced is None else spliced, False


class _Lines:
    """The LFs of a step's bytes and of their text (offsets, in order), and
    whether line N of the text is what line N of the bytes shows
    (termtext.same_lines): each counted when first asked for."""

    def __init__(self, raw: bytes, text: str):
        self._of = (raw, text)

    @cached_property
    def raw(self) -> Sequence[int]:
        return memoryview(line_ends(self._of[0])).cast("q")

    @cached_property
    def text(self) -> Sequence[int]:
        return memoryview(text_line_ends(self._of[1])).cast("q")

    @cached_property
    def aligned(self) -> bool:
        return same_lines(*self._of, (len(self.raw), len(self.text)))


def _spliced(
    raw: bytes, text: str, lines: _Lines, regions: list[tuple[int, int]], parts: list[bytes],
    command: str,
) -> str | None:  # fmt: skip
    """The text of `raw` with each region (whole lines) put in its part: the
    lines of `text` outside the regions, and the text of each part, where that
    is the text of the whole (else None). It is where the text's lines are the
    bytes' (no escape string open at an LF, no alternate screen: each line's
    text is that of its bytes alone) and no part changes that: a part's text,
    made with the LF after it, has as many lines as its bytes and it holds no
    switch to the alternate screen."""
    if not lines.aligned:
        return None
    out: list[str] = []
    at = 0  # in the text
    for (a, z), part in zip(regions, parts):
        if (a and raw[a - 1] != 10) or (z < len(raw) and raw[z] != 10):
            return None  # (not whole lines)
        first = bisect_left(lines.raw, a)
        start = lines.text[first - 1] + 1 if first else 0
        if z < len(raw):  # (with its LF: the line ends as in the whole)
            made = text_of(part + b"\n", command)
            if made.count("\n") != part.count(b"\n") + 1 or not made.endswith("\n"):
                return None
            made, end = made[:-1], lines.text[bisect_left(lines.raw, z)]
        else:
            made, end = text_of(part, command), len(text)
            if made.count("\n") != part.count(b"\n"):
                return None
        if may_use_alternate_screen(part):
            return None
        out += (text[at:start], made)
        at = end
    out.append(text[at:])
    return "".join(out)


REGION_LINES = 2  # the lines around a secret's that its region takes
MAX_PLACES = 256  # places of the secrets found, found one by one (more: all of it searched)


def _regions(
    raw: bytes,
    text: str,
    lines_of: _Lines,
    spans: list[tuple[int, int]],
    hidden: list[str],
    in_text: list[str],
    in_hidden: list[str],
) -> list[tuple[int, int]] | None:
    """The parts of `raw` (whole lines) that hold the secrets the first pass
    found, with REGION_LINES lines around each: what is searched again. None
    when they are more than a few, or when the text's lines are not the bytes'
    (the alternate screen, an escape string over several lines)."""
    secrets = {s for s in in_text + in_hidden}
    if len(secrets) > FOUND_CHECKED or any(not s or MASK in s or "\n" in s for s in secrets):
        return None  # (a secret over lines, a key block's: its rule may reach beyond)
    if in_text and not lines_of.aligned:
        return None
    ends = lines_of.raw
    places: list[tuple[int, str]] = []
    for secret in set(in_text):
        at = text.find(secret)
        while at >= 0 and len(places) <= MAX_PLACES:
            places.append((at, secret))
            at = text.find(secret, at + 1)
    lines: list[tuple[int, int]] = []
    for at, secret in sorted(places):
        line = bisect_left(lines_of.text, at)  # (the LFs before it)
        lines.append((line - REGION_LINES, line + secret.count("\n") + REGION_LINES))
    if in_hidden:
        joined = "\n".join(hidden)  # (as the first pass read it)
        starts, at = [], 0
        for h in hidden:
            starts.append(at)
            at += len(h) + 1
    for secret in set(in_hidden):
        at = joined.find(secret)
        while at >= 0 and len(lines) <= MAX_PLACES:
            k = bisect_right(starts, at) - 1
            if at + len(secret) > starts[k] + len(hidden[k]):
                return None  # (over two spans: with what joined them)
            a, z = spans[k]
            lines.append((bisect_left(ends, a), bisect_left(ends, z)))
            at = joined.find(secret, at + 1)
    if not lines or len(lines) > MAX_PLACES:
        return None
    lines.sort()
    regions: list[tuple[int, int]] = []
    for first, last in lines:
        a = 0 if first <= 0 else ends[first - 1] + 1 if first - 1 < len(ends) else len(raw)
        z = ends[last] if last < len(ends) else len(raw)
        if regions and a <= regions[-1][1] + 1:
            regions[-1] = (regions[-1][0], max(z, regions[-1][1]))
        else:
            regions.append((a, z))
    return regions


def _both(
    raw: bytes, command: str, redactor: Redactor, searched: str | None = None
) -> tuple[bytes, int, str]:
    """(the bytes masked, how many, their text masked): the bytes searched,
    then their text (a secret the bytes hid from the rules is masked there, and
    the masked text stands for the bytes). `searched`: the masked text of the
    bytes as they were; where the masked bytes' text is that, it was searched
    already (a secret on every line, masked alike in both)."""
    masked, n = redactor.text(raw.decode("utf-8", "surrogateescape"))
    if n:
        raw = masked.encode("utf-8", "surrogateescape")
    text = text_of(raw, command)
    if text == searched:
        return raw, n, text
    text, m = redactor.text(text)
    if m:
        raw = text.encode()
    return raw, n + m, text


FOUND_CHECKED = 64  # secrets the first pass found, looked for after masking (more: a few)


def _left(found: list[str], raw: bytes, text: str) -> list[str]:
    """The secrets of `found` still in `raw` or `text`, longest first (those
    long enough to be told from other words: `0` in `tokens: 0` is not looked
    for in `10.0s`)."""
    secrets = sorted(
        {s for s in found if len(s) >= MIN_LENGTH and MASK not in s}, key=len, reverse=True
    )
    return [
        s for s in secrets[:FOUND_CHECKED]
        if s in text or s.encode("utf-8", "surrogateescape") in raw
    ]  # fmt: skip


@dataclass(frozen=True)
class OutputJob:
    """One step's output to make ready to store: make_output's arguments, and
    the values of its session's secrets (KnownSecrets.values), so that an
    ingest worker (output_worker.py) masks what the daemon would."""

    sid: str
    command: str
    first: bytes
    rest: bytes
    cap: int
    size: int
    omitted: int
    complete: bool
    timing: tuple[tuple[int, float], ...]
    known: tuple[str, ...] = ()

    @property
    def weight(self) -> int:
        return len(self.first) + len(self.rest)


def ready(job: OutputJob, redactor: Redactor) -> tuple[OutputBlobs, int]:
    """The blobs of `job`'s row, and how many secrets were masked (`redactor`:
    the config's, with the session's known secrets)."""
    out, n = make_output(
        job.first, job.command, redactor, cap=job.cap, size=job.size, omitted=job.omitted,
        complete=job.complete, timing=job.timing, rest=job.rest, plain_text_too=False,
    )  # fmt: skip
    return output_blobs(out), n


def _give_back_memory() -> None:
    """Return to the system the memory a backlog's reads took (glibc keeps
    freed blocks of a few MB for reuse: the daemon's size would stay at its
    peak)."""
    from .ingest import _libc  # (the daemon's alone: not in the worker's start)

    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


@dataclass
class _Pending:
    first: int  # offset in the spool of its first record
    parts: list[tuple[int, bytes, float]] = field(default_factory=list)
    total: int | None = None  # from its end record
    ended: bool = False


@dataclass
class _File:
    committed: int  # the offset stored with the rows
    parsed: int  # read up to here (records after `committed` held in `steps`)
    steps: dict[tuple[str, int], _Pending] = field(default_factory=dict)
    punched: int = 0


@dataclass
class _Batch:
    """The steps one read made storable (each one's session and number, and
    its job until it is made), its terminal sizes and damage, and the offset
    its transaction commits."""

    name: str
    sid: str
    state: _File
    steps: list[tuple[str, int]]
    jobs: list[OutputJob]
    sizes: list[Record]
    damaged: list[int]
    committed: int
    made: list[tuple[OutputBlobs, int] | Exception] = field(default_factory=list)


_Taken = tuple[_Batch, bool]  # a read taken in (its batch), and whether more follows


@dataclass
class OutputStats:
    steps: int = 0
    dropped: int = 0  # damaged records
    redactions: int = 0


class OutputReader:
    """Reads the sessions' `.output` spools into the store (see the module's
    docstring). The cap is `[record] max_step_output`."""

    def __init__(
        self, spool_dir: Path, store: Store, redactor: Redactor, cap: int = MAX_OUTPUT,
        known: KnownSecrets | None = None, worker: OutputWorker | None = None,
    ):  # fmt: skip
        self.spool_dir = spool_dir
        self.worker = worker  # (makes some of many steps ready at once: output_worker.py)
        self.known = known or KnownSecrets()
        self.store = store
        self.redactor = redactor
        self.cap = cap
        self.stats = OutputStats()
        self._files: dict[str, _File] = {}
        self._log = LogOnce(log)

    def spool_files(self) -> list[Path]:
        try:
            return sorted(p for p in self.spool_dir.iterdir() if p.name.endswith(OUTPUT_SUFFIX))
        except FileNotFoundError:
            return []

    def ingest_all(self) -> int:
        return sum(self.ingest_file(p) for p in self.spool_files())

    def prepare(self) -> None:
        """At the daemon's start: the worker runs when the spools hold a backlog
        worth it (the daemon started after a reboot, or after being stopped a
        while), started now if `rw daemon run` has not (worker_spawn.py), so
        that it takes steps from the first read on; else none does."""
        if self.worker is None:
            return
        backlog = 0
        for path in self.spool_files():
            try:
                size = path.stat().st_size
            except FileNotFoundError:
                continue
            state = self._files.get(path.name)
            done = state.parsed if state is not None else self.store.spool_offset(path.name)
            backlog += max(0, size - done)
        if backlog < START_BYTES:
            self.worker.close()  # (one started for what the disk held: little is left to read)
        else:
            self.worker.prepare(backlog)

    def ingest_file(self, path: Path) -> int:
        """Ingest what is complete in `path`; the number of steps stored."""
        name = path.name
        sid = name[: -len(OUTPUT_SUFFIX)]
        state = self._files.get(name)
        if state is None:
            committed = self.store.spool_offset(name)
            state = self._files[name] = _File(committed, committed)
        stored = 0
        backlog = False  # (read BACKLOG_READ at a time)
        try:
            with open(path, "rb") as fh:
                st = os.fstat(fh.fileno())
                if st.st_uid != os.getuid():
                    self._log.warning(name, "%s: not yours; left alone", name)
                    return 0
                if st.st_size < state.committed:
                    log.warning("%s: shorter than its ingested offset; starting over", name)
                    state = self._files[name] = _File(0, 0)
                final = self._final(sid, st.st_mtime)
                if state.parsed >= st.st_size and not state.steps:
                    return 0
                want = READ if st.st_size - state.parsed <= READ else BACKLOG_READ
                backlog = want == BACKLOG_READ
                if self.worker is not None:
                    self.worker.prepare(st.st_size - state.parsed)

                def read() -> _Taken:
                    """The next read taken in; whether more follows."""
                    nonlocal want, backlog
                    fh.seek(state.parsed)
                    buf = fh.read(want)
                    more = state.parsed + len(buf) < st.st_size
                    before = state.parsed
                    # Nothing whole in the most that is read at once: damage, skipped.
                    stuck = more and want >= CHUNK
                    batch = self._take(name, sid, state, buf, final and not more, stuck)
                    # A record larger than what was read: read more at once.
                    if state.parsed > before:
                        want = READ if st.st_size - state.parsed <= READ else BACKLOG_READ
                        backlog = backlog or want == BACKLOG_READ
                    else:
                        want = min(want * 4, CHUNK)
                    return batch, more

                held: _Batch | None = None  # made ready, not stored yet
                taken: _Taken | None = read()
                while taken is not None:
                    batch, more = taken
                    # (The next read is taken in while the worker begins this one's.)
                    n, taken = self._make(batch, held, read if more else None)
                    stored += n
                    held = batch
                stored += self._store_batch(held)
        except FileNotFoundError:
            self._files.pop(name, None)
            return stored
        except BaseException:
            self._files.pop(name, None)  # read again from what the store says
            raise
        if backlog:
            _give_back_memory()
        return stored

    def _final(self, sid: str, mtime: float) -> bool:
        session = self.store.get_session(sid)
        return (
            session is not None
            and session.ended_at is not None
            and time.time() - mtime >= QUIET_SECONDS
        )

    def _take(
        self, name: str, sid: str, state: _File, buf: bytes, final: bool, stuck: bool = False
    ) -> _Batch:
        """Take in the records of `buf` (read at `state.parsed`; `final`: the spool
        is complete): the steps that can be stored now, to be made ready and
        stored in one transaction (_make, _store_batch)."""
        damaged: list[int] = []
        sizes: list[Record] = []
        pos = 0
        for r, end in iter_records(buf, final=final or stuck, damaged=damaged):
            at = state.parsed + pos
            pos = end
            if r.session != sid:
                damaged.append(end - at)  # another session's records are not this file's
            elif r.kind == "O":
                step = state.steps.setdefault((r.session, r.seq), _Pending(at))
                if r.data:
                    step.parts.append((r.offset, r.data, r.time))
            elif r.kind == "E":
                step = state.steps.setdefault((r.session, r.seq), _Pending(at))
                step.total, step.ended = r.offset, r.ended
            elif r.kind == "Z":
                sizes.append(r)
        if final or stuck:
            pos = len(buf)
        state.parsed += pos
        # The steps that can be stored now, made ready before the transaction
        # (on both cores when they are many): the daemon alone writes recorded
        # sessions' steps and outputs, so what is read here still holds in it.
        jobs: list[OutputJob] = []
        numbers: list[tuple[str, int]] = []
        for key, step in list(state.steps.items()):
            if step.total is None and not final:
                continue
            number, never = self.store.step_of_seq(*key)
            if number is None:
                if never or final:
                    del state.steps[key]  # a step not recorded: nor is its output
                continue
            if not final and self.store.step_is_open(*key):
                continue  # its end brings the environment whose secrets it may print
            del state.steps[key]
            if self.store.has_output(key[0], number):
                continue  # stored before a crash, read again
            jobs.append(self._job(key[0], number, step))
            numbers.append((key[0], number))
        # What the transaction commits: before the first record of a step not
        # stored by it (whatever later reads take in meanwhile).
        firsts = [s.first for s in state.steps.values()]
        committed = min(firsts) if firsts else state.parsed
        return _Batch(name, sid, state, numbers, jobs, sizes, damaged, committed)

    def _store_batch(self, batch: _Batch | None) -> int:
        """Store what `batch` made ready, in one transaction; how many steps."""
        if batch is None:
            return 0
        from .ingest import store_trouble  # (the daemon's alone: not in the worker's start)

        name, state, damaged = batch.name, batch.state, batch.damaged
        stored = 0
        with self.store.transaction():
            for (session, number), result in zip(batch.steps, batch.made):
                if isinstance(result, Exception):
                    damaged.append(0)  # this step's output alone is lost, counted
                    log.warning("%s: dropped the output of step %d: %s", name, number, result)
                    continue
                try:
                    with self.store.savepoint():
                        stored += self._store(session, number, *result)
                except Exception as e:  # noqa: BLE001 - sorted out here
                    if store_trouble(e):
                        raise  # rolled back: read again, nothing lost
                    damaged.append(0)
                    log.warning("%s: dropped the output of step %d: %s", name, number, e)
            for z in batch.sizes:  # (the session may not be stored yet: kept all the same)
                self.store.add_terminal_size(batch.sid, z.time, *z.size)
            if damaged:
                self.stats.dropped += len(damaged)
                self.store.add_counter(DAMAGED, len(damaged))
                self._log.warning(
                    name, "%s: dropped %d damaged output record(s)", name, len(damaged)
                )
            if batch.committed != state.committed:
                self.store.set_spool_offset(name, batch.committed)
        state.committed = batch.committed
        self._release(name, state)
        return stored

    def _job(self, sid: str, number: int, step: _Pending) -> OutputJob:
        total = step.total
        if total is None:
            total = max((o + len(d) for o, d, _ in step.parts), default=0)
        half = self.cap // 2
        first, rest, omitted = capped_parts(step.parts, total, half, self.cap - half)
        row = self.store.step(sid, number)
        return OutputJob(
            sid, row.command if row else "", first, rest, self.cap, total, omitted, step.ended,
            tuple(sorted((o, t) for o, _, t in step.parts)), self.known.values(sid),
        )  # fmt: skip

    def _make(
        self, batch: _Batch, held: _Batch | None, then: Callable[[], _Taken] | None = None
    ) -> tuple[int, _Taken | None]:
        """Make `batch`'s steps ready (each job's blobs and masked count, or what
        went wrong: many at once shared with the worker, else here), and store
        `held` (the read before's) and take in the next read (`then`): while
        the worker begins this read's steps, where it makes some. How many
        steps of `held` were stored, and what `then` gave."""
        jobs, batch.jobs = batch.jobs, []  # (its bytes not kept while it waits)
        stored = 0
        taken: _Taken | None = None

        def store_held() -> None:
            nonlocal stored, taken
            stored = self._store_batch(held)
            if then is not None:
                taken = then()

        if self.worker is not None and self.worker.usable(jobs):
            batch.made = self.worker.run(jobs, self._ready_here, store_held)
        else:
            store_held()
            batch.made = [self._ready_here(job) for job in jobs]
        return stored, taken

    def _ready_here(self, job: OutputJob) -> tuple[OutputBlobs, int] | Exception:
        try:
            return ready(job, self.known.redactor(job.sid, self.redactor))
        except Exception as e:  # noqa: BLE001 - this step's output alone is lost
            return e

    def _store(self, sid: str, number: int, blobs: OutputBlobs, n: int) -> int:
        self.store.set_output(sid, number, blobs)
        if n:
            self.stats.redactions += n
            self.store.add_counter("redactions", n)
        self.stats.steps += 1
        return 1

    def _release(self, name: str, state: _File) -> None:
        """Erase the stored records from the spool at once (see SpoolReader)."""
        from .ingest import punch  # (the daemon's alone: not in the worker's start)

        if state.committed > state.punched and punch(
            self.spool_dir / name, state.punched, state.committed
        ):
            state.punched = state.committed

    def remove_if_done(self, sid: str) -> bool:
        """Delete an ended session's output spool once all of it is stored."""
        path = session_file(self.spool_dir, sid, OUTPUT_SUFFIX)
        if path is None:
            return False
        try:
            st = path.stat()
        except FileNotFoundError:
            return False
        if not self._final(sid, st.st_mtime):
            return False
        self.ingest_file(path)
        state = self._files.get(path.name)
        if state is None or state.steps or state.committed < st.st_size:
            return False
        path.unlink(missing_ok=True)
        self._files.pop(path.name, None)
        with self.store.transaction():
            self.store.forget_spool(path.name)
        return True

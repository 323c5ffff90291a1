"""Searching what was recorded, across sessions: commands, and the text of
their output, newest first.

A plain PATTERN is found where a word starts: `E: Unable`, `nginx.conf` and
`unabl` find "E: Unable to locate", but `nable` does not (`--regex` reads
everything). The index (schema 6, see store.py) holds the words of what is
stored; it names the steps that have every word of the pattern, and each is
then checked against the text itself, so what is found is exactly what the
rule says, indexed or not yet.
"""

from __future__ import annotations

import heapq
import re
import sqlite3
import time
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta

from ..capture.termtext import text_of
from ..errors import RwError
from ..paths import current_session_id
from ..store import (
    MAX_SEARCH_ID,
    SEARCH_IDS_PER_MS,
    SearchFilter,
    StepRow,
    Store,
    search_id_floor,
    text_form,
)
from .history import Step, resolve_session
from .rw_commands import rw_verb

DEFAULT_LIMIT = 50
CASES = ("smart", "ignore", "sensitive")
LINE_WIDTH = 300  # characters of a long matching line kept around its match

_WORD = re.compile(r"[^\W_]+")  # what the index's tokenizer (unicode61) calls a word
_AGE = re.compile(r"(\d+)\s*(s|sec|m|min|h|d|w)(?:\s+ago)?", re.IGNORECASE)
_AGE_SECONDS = {"s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "d": 86400, "w": 604800}
_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True)
class Match:
    where: str  # "command" or "output"
    line: str  # the matching line (a long one cut around the match: `cut`)
    line_number: int  # of that line in the command or the output, from 1
    spans: tuple[tuple[int, int], ...]  # where the pattern matched in `line`
    cut: bool = False

    def to_json(self) -> dict:
        return {
            "in": self.where,
            "line": self.line,
            "line_number": self.line_number,
            "spans": [list(s) for s in self.spans],
            "line_cut": self.cut,
        }


@dataclass(frozen=True)
class Hit:
    step: Step
    session_name: str | None
    match: Match

    def to_json(self) -> dict:
        return {**self.step.to_json(), "session_name": self.session_name,
                "match": self.match.to_json()}  # fmt: skip


@dataclass(frozen=True)
class Results:
    hits: list[Hit]
    more: bool  # there are more hits than the limit let through


def parse_when(text: str, now: float | None = None) -> float:
    """A time as --since/--until take it: a date or date and time (local, or
    ISO 8601 with its offset), an age (`30m`, `2h`, `3d`, `1w`, `45s`, `2h
    ago`), `today` or `yesterday` (their midnight)."""
    now = time.time() if now is None else now
    value = text.strip()
    age = _AGE.fullmatch(value)
    if age:
        return now - int(age.group(1)) * _AGE_SECONDS[age.group(2).lower()]
    if value.lower() in ("today", "yesterday"):
        midnight = datetime.fromtimestamp(now).replace(hour=0, minute=0, second=0, microsecond=0)
        if value.lower() == "yesterday":
            midnight -= timedelta(days=1)
        return midnight.timestamp()
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(value, fmt).timestamp()
        except ValueError:
            pass
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        pass
    raise RwError(
        f"cannot read {text[:60]!r} as a time: give a date (2026-12-01), a date and time "
        "(2026-12-01 14:30) or an age (45s, 30m, 2h, 3d, 1w)"
    )


@dataclass(frozen=True)
class Pattern:
    """What is looked for: the check made on each line, and the words the index
    is asked for (None: the index cannot narrow it; every candidate is read)."""

    regex: re.Pattern[str]
    words: tuple[tuple[str, bool], ...] | None  # (word, whether as a prefix)

    @classmethod
    def of(cls, pattern: str, *, regex: bool = False, case: str = "smart") -> Pattern:
        if not pattern:
            raise RwError("the pattern is empty")
        if case not in CASES:
            raise RwError(f"case must be one of {', '.join(CASES)}, not {case!r}")
        visible = re.sub(r"\\.", "", pattern) if regex else pattern  # (\S is no capital)
        ignore = case == "ignore" or (case == "smart" and visible == visible.lower())
        flags = re.MULTILINE | (re.IGNORECASE if ignore else 0)
        if regex:
            try:
                return cls(re.compile(pattern, flags), None)
            except re.error as e:
                raise RwError(f"bad regex {pattern[:60]!r}: {e}") from None
            except (OverflowError, RecursionError):
                raise RwError(f"bad regex {pattern[:60]!r}: too large") from None
        start = r"(?<![^\W_])" if _WORD.match(pattern) else ""
        return cls(re.compile(start + re.escape(pattern), flags), _index_words(pattern))


def _index_words(pattern: str) -> tuple[tuple[str, bool], ...] | None:
    """The words a match must contain: every word of the pattern whole, the
    last one as a prefix when the pattern ends inside it."""
    terms = []
    for m in _WORD.finditer(pattern):
        word = m.group()
        if not all(unicodedata.category(c)[0] in "LN" for c in word):
            continue  # (a character the tokenizer may split at: leave it to the check)
        prefix = m.end() == len(pattern)
        if len(word) < (3 if prefix else 2):
            continue  # (too common to narrow anything, costly as a prefix)
        terms.append((word, prefix))
    return tuple(terms) or None


def find_in(regex: re.Pattern[str], text: str, where: str) -> Match | None:
    """The first line of `text` where `regex` matches."""
    m = regex.search(text)
    if m is None:
        return None
    start = text.rfind("\n", 0, m.start()) + 1
    end = text.find("\n", m.start())
    line = text[start : len(text) if end < 0 else end]
    spans = [(x.start(), x.end()) for x in regex.finditer(line) if x.end() > x.start()]
    if not spans:  # (a match that needed what came before the line: a lookbehind)
        spans = [(m.start() - start, min(m.end() - start, len(line)))]
    cut = False
    if len(line) > LINE_WIDTH:
        left = max(0, spans[0][0] - LINE_WIDTH // 3)
        line, cut = line[left : left + LINE_WIDTH], True
        spans = [(a - left, min(b - left, LINE_WIDTH)) for a, b in spans
                 if a >= left and a < left + LINE_WIDTH]  # fmt: skip
    return Match(where, line, text.count("\n", 0, start) + 1, tuple(spans), cut)


def search(
    store: Store | None,
    pattern: Pattern,
    *,
    output: bool = False,
    session: str | None = None,
    cwd: str | None = None,
    since: float | None = None,
    until: float | None = None,
    failed: bool = False,
    limit: int = DEFAULT_LIMIT,
) -> Results:
    """Steps whose command (and with `output`, whose output's text) matches
    `pattern`, newest first, at most `limit`; each with its first matching line
    (the command's first, when both match)."""
    if store is None:
        return Results([], False)
    if store.schema_version() < 6:
        raise RwError("the store has no search index yet: rw daemon start upgrades it")
    sid = resolve_session(store, session) if session is not None else None
    first, last = 1, MAX_SEARCH_ID
    if since is not None:
        first = max(first, search_id_floor(since) + 1)
    if until is not None:
        last = min(last, search_id_floor(until) + SEARCH_IDS_PER_MS - 1)
    if sid is not None:
        ids = store.session_search_ids(sid)
        first, last = (max(first, ids[0]), min(last, ids[1])) if ids else (1, 0)
    filt = SearchFilter(sid, cwd, failed, since, until, first, last)
    names: dict[str, str | None] = {}
    itself = _this_search(store)

    def hit(row: StepRow, match: Match) -> tuple[tuple[float, int], Hit]:
        if row.session not in names:
            found = store.get_session(row.session)
            names[row.session] = found.name if found else None
        # (newest first; of steps that started together, the later one first)
        return (-row.started_at, -row.number), Hit(Step(row), names[row.session], match)

    def indexed() -> Iterator[tuple[tuple[float, int], Hit]]:
        if pattern.words is None:
            for _, row, text, raw in store.search_scan(filt, output):
                m = _check(pattern, row, text, raw, output)
                if m is not None:
                    yield hit(row, m)
            return
        streams: list[Iterable] = [
            ((-i, 0, row, None) for i, row, _ in store.search_index("command", pattern.words, filt))
        ]
        if output:
            streams.append(
                (-i, 1, row, text)
                for i, row, text in store.search_index("output", pattern.words, filt)
            )
        for _, kind, row, text in heapq.merge(*streams, key=lambda t: (t[0], t[1])):
            m = (
                find_in(pattern.regex, text_form(row.command), "command")
                if kind == 0
                else find_in(pattern.regex, text, "output")
            )
            if m is not None:
                yield hit(row, m)

    pending = []
    for row, text, raw in store.search_unindexed(filt, output):
        m = _check(pattern, row, text, raw, output)
        if m is not None:
            pending.append(hit(row, m))
    pending.sort(key=lambda t: t[0])
    hits: list[Hit] = []
    seen: set[tuple[str, int]] = set()
    try:
        for _, h in heapq.merge(pending, indexed(), key=lambda t: t[0]):
            key = (h.step.row.session, h.step.row.number)
            if key in seen or key == itself:
                continue
            seen.add(key)
            if len(hits) == limit:
                return Results(hits, True)
            hits.append(h)
    except sqlite3.OperationalError as e:
        if "fts5" not in str(e):
            raise
        raise RwError(f"the search index cannot read {pattern.words!r}: {e}") from None
    return Results(hits, False)


def _this_search(store: Store) -> tuple[str, int] | None:
    """The step of the hooked shell that is running this search, if any (it is
    stored before it runs: it would find itself first)."""
    sid = current_session_id()
    last = store.steps(sid, limit=1) if sid else []
    if last and last[0].exit_code is None and rw_verb(last[0].command) == "search":
        return last[0].session, last[0].number
    return None


def _check(
    pattern: Pattern, row: StepRow, text: str | None, raw: bytes | None, output: bool
) -> Match | None:
    # (A command's text form: its bytes that are not UTF-8 as \xHH, as rw shows it.)
    command = text_form(row.command)
    m = find_in(pattern.regex, command, "command")
    if m is None and output and (text is not None or raw is not None):
        m = find_in(pattern.regex, text if text is not None else text_of(raw or b"", command),
                    "output")  # fmt: skip
    return m

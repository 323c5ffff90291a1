"""What trips the circuit breaker: output classified line by line as it arrives.

Lines are split on newline only: a carriage-return progress line is one line
until its newline. Colour codes are removed before matching. The common case,
a chunk with nothing suspicious in it, costs one search of one combined regex
over the whole chunk; only a hit is looked at line by line.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import RwError

try:  # the regex parser, to find the literal text every match of a rule contains
    from re import _constants as _sre  # type: ignore[attr-defined]
    from re import _parser as _sre_parse  # type: ignore[attr-defined]
except ImportError:  # Python < 3.11
    import sre_constants as _sre  # type: ignore[no-redef]
    import sre_parse as _sre_parse  # type: ignore[no-redef]

ERROR, WARNING, SKIP, PROMPT, UNEXPECTED = "ERROR", "WARNING", "SKIP", "PROMPT", "UNEXPECTED"
TIMEOUT, INTERRUPTED = "TIMEOUT", "INTERRUPTED"
# Checked in this order: a line that is both an error and a warning is an error.
LINE_KINDS = (ERROR, PROMPT, WARNING, SKIP)

# ECMA-48 control sequences (colours, cursor movement) and OSC strings (titles).
_ANSI = re.compile(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\][^\x07\x1b]*(?:\x07|\x1b\\)|[@-Z\\-_])")
_PARTIAL_KEEP = 64 * 1024  # of a line with no newline yet, the end kept
_PROMPT_TAIL = 512  # of that, the end searched for a prompt


@dataclass(frozen=True)
class Trip:
    """Why a guarded run stopped: the kind, and the line (numbered from 1) if one did it."""

    kind: str
    line_no: int | None = None
    line: str | None = None
    detail: str = ""  # the rule that matched, or what happened (no output for 30 s, ...)

    def to_json(self) -> dict:
        return {
            "type": self.kind,
            "line_no": self.line_no,
            "line": self.line,
            "detail": self.detail,
        }

    @classmethod
    def from_json(cls, doc: dict) -> Trip:
        return cls(doc["type"], doc.get("line_no"), doc.get("line"), doc.get("detail") or "")


@dataclass(frozen=True)
class RuleSet:
    """Regexes per kind, plus the lines that are fine (allow) and, when strict,
    the lines that are expected."""

    error: Sequence[str] = ()
    warning: Sequence[str] = ()
    skip: Sequence[str] = ()
    prompt: Sequence[str] = ()
    allow: Sequence[str] = ()
    expect: Sequence[str] = ()
    strict: bool = False
    ignore_case: bool = True

    def by_kind(self) -> dict[str, Sequence[str]]:
        return {ERROR: self.error, PROMPT: self.prompt, WARNING: self.warning, SKIP: self.skip}


def compile_patterns(patterns: Sequence[str], what: str, flags: int = 0) -> re.Pattern[str] | None:
    """One regex matching any of `patterns` (None when there are none)."""
    for p in patterns:
        try:
            re.compile(p, flags)
        except re.error as e:
            raise RwError(f"invalid regex in {what}: {p!r}: {e}") from None
    if not patterns:
        return None
    try:
        return re.compile("|".join(_scoped(p) for p in patterns), flags | re.MULTILINE)
    except re.error as e:
        raise RwError(f"invalid regex in {what}: {e}") from None


_GLOBAL_FLAGS = re.compile(r"\(\?([aiLmsux]+)\)")


def _scoped(pattern: str) -> str:
    """`pattern` as a group to join with others: leading global flags, `(?i)x`,
    which may only start a whole regex, become the group's own, `(?i:x)`."""
    m = _GLOBAL_FLAGS.match(pattern)
    if m:
        return f"(?{m.group(1)}:{pattern[m.end() :]})"
    return f"(?:{pattern})"


def required_literals(pattern: str) -> list[str] | None:
    """Casefolded strings one of which is in every match of `pattern`; None when
    that cannot be told (then every line is searched with the regex)."""
    try:
        parsed = _sre_parse.parse(pattern)
    except Exception:  # an internal parser: any doubt means no shortcut
        return None
    best = _required(list(parsed))
    return [s.casefold() for s in best] if best else None


def _required(items: list) -> list[str] | None:
    best: list[str] | None = None

    def consider(found: list[str] | None) -> None:
        nonlocal best
        if found and (best is None or min(map(len, found)) > min(map(len, best))):
            best = found

    run = ""
    for op, av in items:
        if op is _sre.LITERAL and av != 10:
            run += chr(av)
            continue
        consider([run] if run else None)
        run = ""
        if op is _sre.SUBPATTERN:
            consider(_required(list(av[-1])))
        elif op is _sre.BRANCH:
            alternatives = [_required(list(b)) for b in av[1]]
            if all(alternatives):
                consider([s for alt in alternatives for s in alt])  # type: ignore[union-attr]
        elif op in (_sre.MAX_REPEAT, _sre.MIN_REPEAT) and av[0] >= 1:
            consider(_required(list(av[2])))
    consider([run] if run else None)
    return best


class Classifier:
    """Feed it output as it comes; it says the first line that trips a rule."""

    def __init__(self, rules: RuleSet):
        if rules.strict and not rules.expect:
            raise RwError("--strict needs the expected lines: --expect REGEX or [guard] expect")
        flags = re.IGNORECASE if rules.ignore_case else 0
        self.kinds: list[tuple[str, re.Pattern[str]]] = []
        for kind, patterns in rules.by_kind().items():
            rx = compile_patterns(patterns, kind.lower(), flags)
            if rx is not None:
                self.kinds.append((kind, rx))
        self.any_issue = compile_patterns(
            [p for ps in rules.by_kind().values() for p in ps], "rules", flags
        )
        self.allow = compile_patterns(rules.allow, "allow", flags)
        self.expect = compile_patterns(rules.expect, "expect", flags) if rules.strict else None
        self.prompt = compile_patterns(rules.prompt, "prompt", flags)
        # Lines holding none of these cannot trip a rule: most chunks are one
        # casefold and a few substring searches.
        self.literals: list[str] | None = []
        for p in (p for ps in rules.by_kind().values() for p in ps):
            found = required_literals(p)
            if found is None:
                self.literals = None
                break
            self.literals += [s for s in found if s not in self.literals]
        self.lines = 0  # complete lines seen
        self._partial = b""

    # -- feeding ----------------------------------------------------------------

    def feed(self, data: bytes) -> Trip | None:
        buf = self._partial + data if self._partial else data
        cut = buf.rfind(b"\n")
        if cut < 0:
            self._partial = buf[-_PARTIAL_KEEP:]
            return self._check_partial()
        self._partial = buf[cut + 1 :][-_PARTIAL_KEEP:]
        trip = self._lines(buf[: cut + 1].decode("utf-8", "replace"))
        return trip or (self._check_partial() if self._partial else None)

    def finish(self) -> Trip | None:
        """The output ended: a last line without a newline is a line too."""
        if not self._partial:
            return None
        tail, self._partial = self._partial, b""
        return self._lines(tail.decode("utf-8", "replace") + "\n")

    def _lines(self, text: str) -> Trip | None:
        """Classify complete lines (`text` ends with a newline)."""
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        base = self.lines
        self.lines += text.count("\n")
        if self.expect is not None:
            return self._strict_lines(text, base)
        if self.any_issue is None:
            return None
        if self.literals is not None:
            folded = text.casefold()
            if len(folded) == len(text):
                return self._candidate_lines(text, folded, base)
        pos = 0
        while True:
            m = self.any_issue.search(text, pos)
            if m is None:
                return None
            start = text.rfind("\n", 0, m.start()) + 1
            end = text.find("\n", m.start())
            trip = self.line_trip(text[start:end], base + text.count("\n", 0, start) + 1)
            if trip:
                return trip
            pos = end + 1

    def _candidate_lines(self, text: str, folded: str, base: int) -> Trip | None:
        starts = set()
        for lit in self.literals or ():
            i = folded.find(lit)
            while i >= 0:
                starts.add(text.rfind("\n", 0, i) + 1)
                i = folded.find(lit, text.find("\n", i) + 1)
        for start in sorted(starts):
            line = text[start : text.find("\n", start)]
            trip = self.line_trip(line, base + text.count("\n", 0, start) + 1)
            if trip:
                return trip
        return None

    def _strict_lines(self, text: str, base: int) -> Trip | None:
        for i, line in enumerate(text.split("\n")[:-1], base + 1):
            trip = self.line_trip(line, i)
            if trip:
                return trip
        return None

    def line_trip(self, line: str, line_no: int) -> Trip | None:
        """The trip this one line causes, if any."""
        line = line.rstrip("\r")
        if self.allow is not None and self.allow.search(line):
            return None
        for kind, rx in self.kinds:
            m = rx.search(line)
            if m:
                return Trip(kind, line_no, line, f"matched {m.group(0).strip()!r}")
        if self.expect is not None and line.strip() and not self.expect.search(line):
            return Trip(UNEXPECTED, line_no, line, "matches none of the expected patterns")
        return None

    def _check_partial(self) -> Trip | None:
        """A line still being written that asks for input: the command waits for an answer."""
        if self.prompt is None:
            return None
        # A prompt is short and at the end: binary output without newlines stays cheap.
        text = self._partial[-_PROMPT_TAIL:].decode("utf-8", "replace")
        if "\x1b" in text:
            text = _ANSI.sub("", text)
        text = text.rsplit("\r", 1)[-1] if "\r" in text.rstrip("\r") else text
        m = self.prompt.search(text)
        if m is None or (self.allow is not None and self.allow.search(text)):
            return None
        return Trip(PROMPT, self.lines + 1, text.rstrip("\r"), f"matched {m.group(0).strip()!r}")

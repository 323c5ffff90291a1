"""The text of a step's output: what a reader of the terminal saw, as plain text.

Escape sequences go (CSI, OSC, DCS and the other strings, charset and other
two-byte escapes); a carriage return goes back to the start of the line and what
follows overwrites it, a backspace one column back, `ESC [ K` clears to the end
of the line (so a progress bar is its last state); what a full-screen program
drew on the alternate screen is left out, with a note `[full-screen: PROGRAM]`;
bytes that are not UTF-8 become U+FFFD. `text_parts` also gives what the text
does not show, for redaction. Pure and fast: one pass in C over the bytes where
the C module (rewind_daemon/_termtext.c) was built; otherwise regexes over the
output, and per-line work only for lines that hold a CR or a backspace, with the
same results (`_parts`, escape by escape, is the reference of both).
"""

from __future__ import annotations

import re
from array import array
from types import ModuleType

_c: ModuleType | None
try:  # (C: built by pip where a compiler and Python's headers are; the same results)
    from .. import _termtext as _c
except ImportError:
    _c = None

# ESC followed by: CSI (params, intermediates, final), a string (OSC, DCS, SOS,
# PM, APC) up to BEL or ST, a charset designation (ESC ( B), or any other
# two-byte escape. A string cut off by another escape ends there (also by the
# SUB that stands for an erase's); one never ended runs to the end of the
# output (its program was cut off).
_ESCAPE = re.compile(
    r"\x1b(?:"  # (one literal first: the regex engine then skips to each ESC fast)
    r"\[([0-?]*)[ -/]*([@-~])?"
    r"|[\]PX^_][^\x07\x1a\x1b]*(?:\x07|\x1b\\|(?=[\x1a\x1b])|$)"
    r"|[ -/]*[0-~]?)"
)
# Entering and leaving the alternate screen (xterm's 1049, 1047 and 47: one of
# the `?` modes of a CSI ending in h or l). What may be one, bytes aside.
_ALT_ON = {"1049", "1047", "47"}
_MAY_ALT = re.compile(rb"\x1b\[\?[0-?]*(?:1049|1047|47)[0-?]*[ -/]*[hl]")
# What may put something in text_parts' hidden: a CR not ending a line, a
# backspace (or a SUB), an escape other than a CSI ending in neither K nor h.
_MAY_HIDE = re.compile(rb"\x1b(?!\[[0-?]*[ -/]*[@-JL-gi-~])")
_ERASE_LINE = re.compile(r"\x1b\[0?K")
# Control characters that draw nothing (tab, newline, CR and BS are handled).
_CONTROLS = re.compile(r"[\x00-\x07\x0b\x0c\x0e-\x19\x1c-\x1f\x7f]")
_ERASE = "\x1a"  # stands for `ESC [ K` between the two passes (SUB: never kept)


# What makes the text differ from the bytes other than in line ends: escapes,
# backspaces, a CR not before LF, other controls.
_NOT_PLAIN = re.compile(rb"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]|\r(?!\n)")


_NOT_PLAIN_BYTES = bytes(c for c in range(256) if c != 13 and _NOT_PLAIN.match(bytes((c,))))


def is_plain(raw: bytes) -> bool:
    """Whether the text of `raw` is its characters in the same order (CR LF made
    LF, invalid UTF-8 replaced): nothing joined that the bytes hold apart."""
    if _plain_c is not None:  # (one pass, no copy, stopped at the first such byte)
        return _plain_c(raw)
    return _is_plain_py(raw)


def _is_plain_py(raw: bytes) -> bool:
    """is_plain without the C module (and its reference in the tests)."""
    # (Two passes in C over the bytes: faster than the regex's one.)
    if len(raw.translate(None, _NOT_PLAIN_BYTES)) != len(raw):
        return False
    return b"\r" not in raw or raw.count(b"\r") == raw.count(b"\r\n")


def _program(command: str) -> str:
    """The first word of the step's command: what ran full-screen."""
    words = command.split()
    for w in words:
        if "=" not in w.split("/")[0]:  # skip `VAR=value` assignments
            return w.rsplit("/", 1)[-1] or w
    return words[0] if words else "?"


# The same, over bytes (see _plain_text).
_ESCAPE_BYTES = re.compile(_ESCAPE.pattern.encode())
_ERASE_LINE_BYTES = re.compile(_ERASE_LINE.pattern.encode())
_CONTROL_BYTES = bytes(c for c in range(128) if _CONTROLS.match(chr(c)))


_C_MOST = 1 << 30  # (the C module counts a line's places in 32 bits: beyond, Python)


def in_c() -> bool:
    """Whether the C module makes the text (built where a compiler was)."""
    return _c is not None


def text_of(raw: bytes, command: str = "") -> str:
    """The text of `raw`, the bytes a step printed to the terminal."""
    if _c is not None and len(raw) < _C_MOST:
        return _c.text(raw, _program(command))
    return _text_py(raw, command)


def text_parts(raw: bytes, command: str = "") -> tuple[str, str]:
    """(the text of `raw`, exactly `text_of`'s; what the text does not show).

    The second, "hidden", holds each piece on a line of its own: every piece of
    a line that a CR, a backspace or an erase overwrote or removed (as it was
    written, escapes removed), what was drawn on the alternate screen (split
    the same way), and the payloads of string escapes (OSC, among them OSC 8
    links and OSC 52 clipboards; DCS, SOS, PM, APC). Every character printed
    outside an escape's own syntax is in one of the two, and a run of them
    unbroken in `raw` (escapes aside) unbroken in one: what a secret rule
    finds in the bytes, it finds in the two. "" for most output."""
    if _c is not None and len(raw) < _C_MOST:
        return _c.text_parts(raw, _program(command))
    return _text_parts_py(raw, command)


def _text_parts_py(raw: bytes, command: str) -> tuple[str, str]:
    """`text_parts` in Python: regexes in C where the alternate screen is not
    used, as `_text_py`; `_parts` where it may be."""
    if not (
        b"\b" in raw
        or b"\x1a" in raw
        or raw.count(b"\r") != raw.count(b"\r\n")
        or _MAY_HIDE.search(raw)
    ):
        return _text_py(raw, command), ""
    if _MAY_ALT.search(raw.replace(b"\x1a", b"") if b"\x1a" in raw else raw):
        return _parts(raw, _program(command), True)
    s = _ERASE_LINE.sub(_ERASE, raw.decode("utf-8", "replace").replace(_ERASE, ""))
    # (Every ESC begins an escape: each ESC ] and the like begins a string.)
    strings = [p for payload in _PAYLOADS.findall(s) for p in _pieces(payload)]
    text, overwritten = _lines_parts(_CONTROLS.sub("", _ESCAPE.sub("", s)))
    return text, "".join(p + "\n" for p in overwritten + strings)


_PAYLOADS = re.compile(r"\x1b[\]PX^_]([^\x07\x1a\x1b]*)")


def _text_py(raw: bytes, command: str) -> str:
    """`text_of` in Python: regexes in C for the common cases, `_parts` for
    output that may use the alternate screen."""
    if not _MAY_ALT.search(raw.replace(b"\x1a", b"") if b"\x1a" in raw else raw):
        try:
            return _plain_text(raw)
        except UnicodeDecodeError:
            pass  # (U+FFFD for what is not UTF-8: decoded first, below)
        s = raw.decode("utf-8", "replace").replace(_ERASE, "")
        if "\x1b" not in s:
            return _lines(_CONTROLS.sub("", s))
        # Erases marked, then every escape removed.
        return _lines(_CONTROLS.sub("", _ESCAPE.sub("", _ERASE_LINE.sub(_ERASE, s))))
    return _parts(raw, _program(command), False)[0]


def _parts(raw: bytes, program: str, hidden: bool) -> tuple[str, str]:
    """`text_parts`, escape by escape (the reference of the C module's):
    erases marked, the alternate screen left out (the note in its place),
    strings' payloads and the alternate screen's text kept aside."""
    s = raw.decode("utf-8", "replace").replace(_ERASE, "")
    out: list[str] = []
    aside: list[str] = []  # the payloads, and the alternate screen's pieces when it is left
    drawn: list[str] = []  # on the alternate screen, while it is on
    pos = 0
    alt = False
    for m in _ESCAPE.finditer(s):
        (drawn if alt else out).append(s[pos : m.start()])
        pos = m.end()
        escape, final = m.group(0), m.group(2)
        if escape[1:2] in _STRINGS:
            end = -1 if escape[-1] == "\x07" else -2 if escape.endswith("\x1b\\") else None
            aside += _pieces(escape[2:end])
        elif final is None:
            continue
        elif final in "hl" and m.group(1)[:1] == "?" and _ALT_ON & set(m.group(1)[1:].split(";")):
            if final == "h" and not alt:
                alt = True
                # The note on a line of its own.
                if not _at_line_start(out):
                    out.append("\n")
                out.append(f"[full-screen: {program}]\n")
            elif final == "l" and alt:
                alt = False
                aside += _pieces("".join(drawn))
                drawn = []
        elif escape in ("\x1b[K", "\x1b[0K"):
            (drawn if alt else out).append("\n" if alt else _ERASE)
    (drawn if alt else out).append(s[pos:])
    if alt:
        aside += _pieces("".join(drawn))
    text = _CONTROLS.sub("", "".join(out))
    if not hidden:
        return _lines(text), ""
    text, overwritten = _lines_parts(text)
    return text, "".join(p + "\n" for p in overwritten + aside)


_STRINGS = ("]", "P", "X", "^", "_")


def _at_line_start(out: list[str]) -> bool:
    """Whether the text so far (controls aside) is empty or ends a line."""
    for part in reversed(out):
        part = _CONTROLS.sub("", part)
        if part:
            return part.endswith("\n")
    return True


def _pieces(s: str) -> list[str]:
    """The runs of `s` between its line ends, CRs and backspaces, controls
    removed (what hidden holds of a string or of the alternate screen)."""
    return [p for p in _BREAKS.split(_CONTROLS.sub("", s)) if p]


_BREAKS = re.compile(r"[\r\n\b]")


def _plain_text(raw: bytes) -> str:
    """`text_of` of UTF-8 output without the alternate screen, done on bytes
    (faster than on characters): what the escapes and controls removed are
    whole characters of UTF-8 (bytes below 0x80), so removing them from the
    bytes and decoding after is removing them from the characters."""
    raw.decode("utf-8")  # (raises where the characters must come first)
    b = raw.replace(b"\x1a", b"")
    if b"\x1b" in b:
        b = _ESCAPE_BYTES.sub(b"", _ERASE_LINE_BYTES.sub(b"\x1a", b))
    b = b.translate(None, _CONTROL_BYTES)
    if b"\r" in b:
        b = b.replace(b"\r\n", b"\n")
    s = b.decode("utf-8")
    if b"\r" not in b and b"\b" not in b and b"\x1a" not in b:
        return s
    return _lines(s)


def _lines(s: str) -> str:
    if "\r" in s:
        s = s.replace("\r\n", "\n")  # CR LF, as a terminal's line discipline writes it
    if "\r" not in s and "\b" not in s and _ERASE not in s:
        return s
    # Only the lines that hold a CR, a backspace or an erase need work.
    out = []
    pos = 0
    while (m := _SPECIAL.search(s, pos)) is not None:
        start = s.rfind("\n", pos, m.start()) + 1
        end = s.find("\n", m.end())
        end = len(s) if end < 0 else end
        out.append(s[pos:start])
        out.append(_overwrite(s[start:end]))
        pos = end
    out.append(s[pos:])
    return "".join(out)


_SPECIAL = re.compile(r"[\r\b\x1a]")
_PIECES = re.compile(r"[\r\b\x1a]|[^\r\b\x1a]+")


def _overwrite(line: str) -> str:
    """One line as a terminal leaves it after its CRs, backspaces and erases."""
    if "\b" not in line and _ERASE not in line:
        # CRs alone (progress bars): each part written over the start of the
        # line so far, by slices, not a character at a time.
        parts = line.split("\r")
        out = parts[0]
        for part in parts[1:]:
            out = part + out[len(part) :]
        return out
    cells: list[str] = []
    col = 0
    for piece in _PIECES.findall(line):
        if piece == "\r":
            col = 0
        elif piece == "\b":
            col = max(0, col - 1)
        elif piece == _ERASE:
            del cells[col:]
        else:
            end = col + len(piece)
            if col >= len(cells):
                cells.extend(" " * (col - len(cells)))
                cells.extend(piece)
            else:
                cells[col:end] = piece
            col = end
    return "".join(cells)


def _lines_parts(s: str) -> tuple[str, list[str]]:
    """`_lines`, and the pieces of its lines that were overwritten or erased."""
    s = s.replace("\r\n", "\n")
    out: list[str] = []
    hidden: list[str] = []
    pos = 0
    while (m := _SPECIAL.search(s, pos)) is not None:
        start = s.rfind("\n", pos, m.start()) + 1
        end = s.find("\n", m.end())
        end = len(s) if end < 0 else end
        out.append(s[pos:start])
        line, lost = _overwrite_parts(s[start:end])
        out.append(line)
        hidden += lost
        pos = end
    out.append(s[pos:])
    return "".join(out), hidden


def _overwrite_parts(line: str) -> tuple[str, list[str]]:
    """`_overwrite`, and each piece written between the line's CRs, backspaces
    and erases of which a character was overwritten or erased, whole."""
    if "\b" not in line and _ERASE not in line:
        # CRs alone: each piece written from the start, over all before it.
        written = [p for p in line.split("\r") if p]
        return _overwrite(line), written[:-1]
    cells: list[str] = []
    owner: list[int] = []  # the piece that wrote each cell
    pieces: list[str] = []
    lost: list[bool] = []
    col = 0
    for piece in _PIECES.findall(line):
        if piece == "\r":
            col = 0
        elif piece == "\b":
            col = max(0, col - 1)
        elif piece == _ERASE:
            for i in owner[col:]:
                lost[i] = True
            del cells[col:], owner[col:]
        else:
            end = col + len(piece)
            for i in owner[col:end]:
                lost[i] = True
            cells[col:end] = piece
            owner[col:end] = [len(pieces)] * len(piece)
            pieces.append(piece)
            lost.append(False)
            col = end
    return "".join(cells), [p for p, gone in zip(pieces, lost) if gone]


# --- the lines of the bytes the text does not show as written (outputs._masked) ---

CONTEXT_LINES = 2  # the lines before and after each line hidden_spans takes, with it

try:  # (built by setup.py where a C compiler is; the same in Python below)
    from ._hidden import line_ends as _line_ends_c
    from ._hidden import may_switch_screen as _may_switch_c
    from ._hidden import plain as _plain_c
    from ._hidden import spans as _spans_c
    from ._hidden import text_line_ends as _text_line_ends_c
except ImportError:  # pragma: no cover - a machine without a C compiler
    _spans_c = _line_ends_c = _plain_c = _text_line_ends_c = _may_switch_c = None


def hidden_spans(raw: bytes, context: int = CONTEXT_LINES) -> list[tuple[int, int]]:
    """The runs of lines of `raw` (start and end offsets, each run ending
    before its LF) that its text does not show as they were written, each
    line with `context` lines before and after it. A line is taken when it
    holds a CR not before LF, a backspace, a part of a string escape (OSC,
    DCS, SOS, PM, APC), a part written on the alternate screen or a switch to
    or from it, an escape other than CSI ending in a letter or digit before a
    word byte, a control that a rule takes for a space (VT, FF, FS to US), or
    a join: a word byte (ASCII letters, digits, _, and every byte of a
    character that is not ASCII) or one of . - / + | ; & ( (on which rules'
    lookarounds stand), escape sequences or controls, and another such byte:
    the text joins them. What a redaction rule finds in the
    bytes, it finds in the text or in these lines, as written."""
    if _spans_c is not None:
        return _spans_c(raw, context)
    return _spans_py(raw, context)


def has_fast_spans() -> bool:
    return _spans_c is not None


def line_ends(raw: bytes) -> bytes:
    """The offset of each LF of `raw`, as native 64-bit integers."""
    if _line_ends_c is not None:
        return _line_ends_c(raw)
    ends = array("q")
    at = raw.find(b"\n")
    while at >= 0:
        ends.append(at)
        at = raw.find(b"\n", at + 1)
    return ends.tobytes()


def text_line_ends(text: str) -> bytes:
    """The offset of each LF of `text`, as native 64-bit integers."""
    if _text_line_ends_c is not None:
        return _text_line_ends_c(text)
    ends = array("q")
    at = text.find("\n")
    while at >= 0:
        ends.append(at)
        at = text.find("\n", at + 1)
    return ends.tobytes()


def same_lines(raw: bytes, text: str, lines: tuple[int, int] | None = None) -> bool:
    """Whether line N of `text` (of `raw`) is what line N of `raw` shows:
    no line added or taken out (the alternate screen's, an escape string's).
    `lines`: the LFs of `raw` and of `text`, where counted already. Then each
    line's text is the text of its bytes alone (no escape string is open at
    an LF, the alternate screen never on: nothing else runs over lines)."""
    if lines is None:
        lines = (raw.count(b"\n"), text.count("\n"))
    return lines[0] == lines[1] and not may_use_alternate_screen(raw)


def may_use_alternate_screen(raw: bytes) -> bool:
    """Whether `raw` may switch to or from the alternate screen (what the text
    reads as a switch: a SUB in the escape is dropped first)."""
    if _may_switch_c is not None:  # (one pass, no copy)
        return _may_switch_c(raw)
    return _may_use_alternate_screen_py(raw)


def _may_use_alternate_screen_py(raw: bytes) -> bool:
    """may_use_alternate_screen without the C module (and its reference)."""
    if b"\x1a" in raw:
        raw = raw.replace(b"\x1a", b"")
    return b"\x1b[?" in raw and _MAY_ALT.search(raw) is not None


def _is_word(c: int) -> bool:
    return 48 <= c <= 57 or 65 <= c <= 90 or 97 <= c <= 122 or c == 95 or c >= 0x80


_LOOKAROUND = frozenset(b".-/+|;&(")  # (what rules' lookarounds stand on, with words)
_SPACE_CONTROL = frozenset([0x0B, 0x0C, 0x1C, 0x1D, 0x1E, 0x1F])  # (\s to a rule)


def _is_joinable(c: int) -> bool:
    return _is_word(c) or c in _LOOKAROUND


_CONTROL = frozenset([*range(0x08), 0x0B, 0x0C, *range(0x0E, 0x20), 0x7F])
_STRING_START = frozenset(b"]PX^_")
_ALT_MODES = (b"1049", b"1047", b"47")


def _escape_end(b: bytes, i: int) -> tuple[int, int]:
    """(the end of the escape sequence at b[i], not a string; 1 or 0 when it
    switches the alternate screen on or off, 2 when it ends in a letter or
    digit before a word's (the text drops it: `ESC ( B` before `AKIA…`),
    else -1)."""
    n, j, alt = len(b), i + 1, -1
    if j < n and b[j] == 0x5B:  # [
        j += 1
        p = j
        while j < n and 0x30 <= b[j] <= 0x3F:
            j += 1
        pe = j
        while j < n and 0x20 <= b[j] <= 0x2F:
            j += 1
        if j < n and 0x40 <= b[j] <= 0x7E:
            final = b[j]
            j += 1
            if final in b"hl" and pe > p and b[p] == 0x3F:
                if any(m in _ALT_MODES for m in b[p + 1 : pe].split(b";")):
                    alt = int(final == 0x68)
        return j, alt
    while j < n and 0x20 <= b[j] <= 0x2F:
        j += 1
    if j < n and 0x30 <= b[j] <= 0x7E:
        if _is_word(b[j]) and j + 1 < n and _is_word(b[j + 1]):
            alt = 2  # (a letter or digit the text drops, before a word's)
        j += 1
    return j, alt


def _spans_py(b: bytes, context: int) -> list[tuple[int, int]]:
    """hidden_spans, a byte at a time (the C module does the same, faster)."""
    n = len(b)
    starts, taken = [0], [False]
    alt = in_string = last_word = False
    i = 0
    while i < n:
        c = b[i]
        if alt or in_string:
            taken[-1] = True
        if in_string:
            if c == 0x07:
                in_string = False
                i += 1
            elif c == 0x1B:
                in_string = False
                i += 2 if i + 1 < n and b[i + 1] == 0x5C else 0
            else:
                if c == 0x0A:
                    starts.append(i + 1)
                    taken.append(False)
                i += 1
            last_word = False
            continue
        if c == 0x0A:
            starts.append(i + 1)
            taken.append(False)
        elif c == 0x0D:
            if i + 1 < n and b[i + 1] != 0x0A:
                taken[-1] = True
        elif c == 0x08:
            taken[-1] = True
        elif c == 0x1B or c in _CONTROL:
            before = last_word
            while i < n and (b[i] == 0x1B or b[i] in _CONTROL):
                if b[i] == 0x1B and i + 1 < n and b[i + 1] in _STRING_START:
                    taken[-1] = in_string = True
                    i += 2
                    break
                if b[i] == 0x1B:
                    i, switch = _escape_end(b, i)
                    if switch >= 0:
                        taken[-1] = True
                    if switch in (0, 1):
                        alt = bool(switch)
                else:
                    if b[i] in _SPACE_CONTROL:
                        taken[-1] = True
                    i += 1
            if not in_string and before and i < n and _is_joinable(b[i]):
                taken[-1] = True
            last_word = False
            continue
        else:
            last_word = _is_joinable(c)
            i += 1
            continue
        last_word = False
        i += 1
    out: list[tuple[int, int]] = []
    end = 0
    lines = len(starts)
    for k, t in enumerate(taken):
        if not t:
            continue
        first, last = max(k - context, end), min(k + context + 1, lines)
        if first >= last:
            continue
        z = starts[last] - 1 if last < lines else n
        if out and first == end and end > 0:
            out[-1] = (out[-1][0], z)
        else:
            out.append((starts[first], z))
        end = last
    return out

"""The text of a step's output: what a reader of the terminal saw, as plain text.

Escape sequences go (CSI, OSC, DCS and the other strings, charset and other
two-byte escapes); a carriage return goes back to the start of the line and what
follows overwrites it, a backspace one column back, `ESC [ K` clears to the end
of the line (so a progress bar is its last state); what a full-screen program
drew on the alternate screen is left out, with a note `[full-screen: PROGRAM]`;
bytes that are not UTF-8 become U+FFFD. Pure and fast: one regex pass over the
output, and per-line work only for lines that hold a CR or a backspace.
"""

from __future__ import annotations

import re

# ESC followed by: CSI (params, intermediates, final), a string (OSC, DCS, SOS,
# PM, APC) up to BEL or ST, a charset designation (ESC ( B), or any other
# two-byte escape. A string cut off by another escape ends there; one never
# ended runs to the end of the output (its program was cut off).
_ESCAPE = re.compile(
    r"\x1b(?:"  # (one literal first: the regex engine then skips to each ESC fast)
    r"\[([0-?]*)[ -/]*([@-~])?"
    r"|[\]PX^_][^\x07\x1b]*(?:\x07|\x1b\\|(?=\x1b)|$)"
    r"|[ -/]*[0-~]?)"
)
# Entering and leaving the alternate screen (xterm's 1049, 1047 and 47).
_ALT_ON = {"?1049", "?1047", "?47"}
_ALT_SCREEN = re.compile(r"\x1b\[\?[0-9;]*(?:1049|1047|47)[0-9;]*[hl]")
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
_ALT_SCREEN_BYTES = re.compile(_ALT_SCREEN.pattern.encode())
_ERASE_LINE_BYTES = re.compile(_ERASE_LINE.pattern.encode())
_CONTROL_BYTES = bytes(c for c in range(128) if _CONTROLS.match(chr(c)))


def text_of(raw: bytes, command: str = "") -> str:
    """The text of `raw`, the bytes a step printed to the terminal."""
    if not _ALT_SCREEN_BYTES.search(raw):
        try:
            return _plain_text(raw)
        except UnicodeDecodeError:
            pass  # (U+FFFD for what is not UTF-8: decoded first, below)
    s = raw.decode("utf-8", "replace").replace(_ERASE, "")
    if "\x1b" not in s:
        return _lines(_CONTROLS.sub("", s))
    if not _ALT_SCREEN.search(s):
        # The common case, in C: erases marked, then every escape removed.
        return _lines(_CONTROLS.sub("", _ESCAPE.sub("", _ERASE_LINE.sub(_ERASE, s))))
    out: list[str] = []
    pos = 0
    alt = False
    noted = False
    for m in _ESCAPE.finditer(s):
        if not alt:
            out.append(s[pos : m.start()])
        pos = m.end()
        final = m.group(2)
        if final is None:
            continue
        params = m.group(1)
        if final in "hl" and params and params.startswith("?"):
            modes = {f"?{p}" for p in params[1:].split(";")}
            if modes & _ALT_ON:
                if final == "h" and not alt:
                    alt = True
                    if not noted:
                        note = f"[full-screen: {_program(command)}]"
                        # The note on a line of its own.
                        joined = "".join(out)
                        if joined and not joined.endswith(("\n", "\r")):
                            out.append("\n")
                        out.append(note + "\n")
                        noted = True
                elif final == "l" and alt:
                    alt = False
                    noted = False
        elif final == "K" and params in ("", "0") and not alt:
            out.append(_ERASE)
    if not alt:
        out.append(s[pos:])
    return _lines(_CONTROLS.sub("", "".join(out)))


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


# A string escape's payload (OSC, DCS, SOS, PM, APC), as _ESCAPE takes it.
_STRING = re.compile(r"\x1b[\]PX^_]([^\x07\x1b]*)")
_PIECES_SPLIT = re.compile(r"[\r\b\n]")


def text_parts(raw: bytes, command: str = "") -> tuple[str, str]:
    """(the text of `raw`; what of `raw` the text does not show, a piece a
    line: what CRs, backspaces and erases overwrote, what was drawn on the
    alternate screen, the payloads of string escapes)."""
    text = text_of(raw, command)
    if is_plain(raw):
        return text, ""
    s = raw.decode("utf-8", "replace")
    pieces = [m.group(1) for m in _STRING.finditer(s) if m.group(1)]
    # (The alternate screen's switches end a piece: what is drawn there and
    # what is printed after are not one run.)
    stripped = _CONTROLS.sub("", _ESCAPE.sub("", _ALT_SCREEN.sub("\n", s.replace("\r\n", "\n"))))
    alt = _ALT_SCREEN.search(s) is not None
    for line in stripped.split("\n"):
        if alt or "\r" in line or "\b" in line:
            pieces += (p for p in _PIECES_SPLIT.split(line) if p)
    return text, "\n".join(pieces)

"""Recorded text made safe to show: control characters as visible escapes.

Session names, commands, directories and environment values come from shells
and imported files. Printed as they are, an ESC or BEL in them drives the
reader's terminal (`rw name $'demo\\e]0;title\\a'` set its title) and a bidi
override reorders what a reviewer reads. Every human renderer (the CLI, the
Markdown and script exports) passes them through `escaped`; JSON keeps them
exact, as `\\uXXXX` escapes. Backslashes are left as they are: the escapes are
for reading, not for parsing back (that is what --json is for).
"""

from __future__ import annotations

import json
import re

# C0 and DEL, C1, the bidi embeddings/overrides/isolates and marks, and the
# Unicode line and paragraph separators (which some viewers treat as newlines).
# Also the bytes that were not UTF-8, kept as surrogates (U+DC80-U+DCFF): shown
# as \xHH, the byte they stand for.
CONTROL = re.compile(
    "[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\udc80-\udcff]"
)
CONTROL_BUT_LINES = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\udc80-\udcff]"
)
_NAMED = {"\x1b": "\\e", "\n": "\\n", "\r": "\\r", "\t": "\\t"}
# In JSON text, json.dumps escapes C0 itself; these it would leave raw.
# (A lone surrogate could not even be written: JSON's \uXXXX keeps it exact.)
_JSON_RAW = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")


def _escape(m: re.Match[str]) -> str:
    c = m.group()
    if c in _NAMED:
        return _NAMED[c]
    if 0xDC80 <= ord(c) <= 0xDCFF:
        return f"\\x{ord(c) - 0xDC00:02x}"
    return f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}"


def escaped(text: str, *, lines: bool = False) -> str:
    """`text` with every control character shown as an escape (`\\e`, `\\x07`,
    `\\u202e`). With `lines`, newlines and tabs are kept, for renderers that show
    a multi-line command or output as lines."""
    return (CONTROL_BUT_LINES if lines else CONTROL).sub(_escape, text)


def has_control(text: str, *, lines: bool = False) -> bool:
    return (CONTROL_BUT_LINES if lines else CONTROL).search(text) is not None


def json_text(data: object) -> str:
    """`data` as indented JSON, exact, with no raw control character in the text."""
    text = json.dumps(data, indent=2, ensure_ascii=False)
    return _JSON_RAW.sub(lambda m: f"\\u{ord(m.group()):04x}", text)

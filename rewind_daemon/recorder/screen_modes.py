"""The terminal modes a recorded session turned on and has not turned off:
the recorder puts them back however it ends (a SIGTERM or SIGHUP while a
full-screen program runs would otherwise leave the alternate screen, a hidden
cursor, the application keypad or mouse reporting on)."""

from __future__ import annotations

import re

# DEC private modes: set (h) turns on what the reset (l) turns off; cursor
# visibility (25) the other way round.
_PRIVATE = {1, 47, 1000, 1002, 1003, 1004, 1005, 1006, 1015, 1047, 1049, 2004}
_SEQUENCE = re.compile(rb"\x1b\[\?([0-9;]{1,40})([hl])|\x1b([=>])")
_TAIL = 48  # a sequence cut between two reads is seen whole with the next


class ScreenModes:
    def __init__(self) -> None:
        self.on: dict[int, None] = {}  # in the order turned on
        self.cursor_hidden = False
        self.keypad = False
        self._tail = b""

    def feed(self, data: bytes) -> None:
        """Take in what the terminal was sent (cheap when it holds no escape)."""
        if b"\x1b" not in data:
            self._tail = b""
            return
        # (A sequence seen again in the tail changes nothing: states, not counts.)
        for m in _SEQUENCE.finditer(self._tail + data):
            if m.group(3):
                self.keypad = m.group(3) == b"="
                continue
            turned_on = m.group(2) == b"h"
            for p in m.group(1).split(b";"):
                if not p.isdigit():
                    continue
                mode = int(p)
                if mode == 25:
                    self.cursor_hidden = not turned_on
                elif mode in _PRIVATE:
                    if turned_on:
                        self.on[mode] = None
                    else:
                        self.on.pop(mode, None)
        self._tail = data[-_TAIL:]

    def resets(self) -> bytes:
        """What turns off every mode still on (newest first), and shows the cursor."""
        out = b"".join(b"\x1b[?%dl" % mode for mode in reversed(self.on))
        if self.keypad:
            out += b"\x1b>"
        if self.cursor_hidden:
            out += b"\x1b[?25h"
        return out

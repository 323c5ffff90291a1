"""rw record gives the terminal back with the screen modes its session turned
on turned off again, however it ends (a SIGTERM or SIGHUP while a full-screen
program runs left the alternate screen, a hidden cursor and the application
keypad on)."""

from __future__ import annotations

import pytest

from rewind_daemon.recorder.screen_modes import ScreenModes

from ..conftest import BIN
from ..shell import PROMPT

ON = r"printf '\e[?1049h\e[?25l\e=\e[?1000h'"
RESETS = ["\x1b[?1049l", "\x1b[?25h", "\x1b>", "\x1b[?1000l"]
ENDS = {
    "SIGTERM to rw record": ("p=${RW_RECORD#*:}; kill -TERM ${p%%:*}", 143),
    "SIGHUP to rw record": ("p=${RW_RECORD#*:}; kill -HUP ${p%%:*}", 129),
    "exit": ("exit 0", 0),
}


@pytest.mark.parametrize("how", ENDS)
def test_the_modes_a_session_left_on_are_reset_on_every_way_out(shells, tmp_path, how):
    outer = shells("bash", init=False)
    rc = tmp_path / "inner.rc"
    rc.write_text("PS1='<in''ner> '\n")
    outer.p.sendline(f"{BIN}/rw record bash -- --rcfile {rc} -i")
    outer.p.expect_exact("<inner> ")
    line, status = ENDS[how]
    outer.p.sendline(f"{ON}; {line}")
    outer.p.expect_exact(PROMPT)
    shown = outer.p.before
    after = shown[shown.rindex("\x1b[?1000h") :]
    for reset in RESETS:
        assert reset in after, (reset, after)
    assert outer.run("echo $?") == str(status)


def test_modes_turned_off_again_are_not_reset_and_a_sequence_cut_in_two_is_seen():
    modes = ScreenModes()
    modes.feed(b"\x1b[?1049h\x1b[?2")
    modes.feed(b"5l text \x1b=")
    assert modes.resets() == b"\x1b[?1049l\x1b>\x1b[?25h"
    modes.feed(b"\x1b[?1049l\x1b>\x1b[?25h plain")
    modes.feed(b"no escape at all")
    assert modes.resets() == b""

"""Live shells recorded for real: `rw record bash|zsh` with rw's own hooks (an
rc file that evaluates `rw init`), the real daemon storing each step's output."""

from __future__ import annotations

import codecs
import time

import pytest

from ..conftest import RW, rw_json, wait_for
from ..recorder.test_hook_marks import Started, recorded_rc, write_rc
from ..shell import PROMPT


class Live(Started):
    def __init__(self, argv: list[str], *, home, rw_home):
        super().__init__(argv, home=home, rw_home=rw_home)
        # What a step prints need not be UTF-8: shown as U+FFFD, as a terminal does.
        self.p.codec_errors = "replace"
        self.p._decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def resize(self, rows: int, cols: int) -> None:
        """Resize the terminal; the shell may redraw its prompt on SIGWINCH, so a
        line of its own is run to be in step with the prompts again."""
        self.p.setwinsize(rows, cols)
        time.sleep(0.3)
        self.p.sendline("echo resized-$((1 + 1))")
        self.p.expect_exact("resized-2\r\n")
        self.p.expect_exact(PROMPT)

    def session_id(self) -> str:
        return self.run("echo $RW_SESSION").strip()

    def finish(self) -> str:
        """End the shell; its session id once every step's output is stored."""
        sid = self.session_id()
        assert self.exit() == 0
        steps = len(rw_json("log", sid))

        def stored():
            return all(
                rw_json("show", sid, str(n))["output"] is not None for n in range(1, steps + 1)
            )

        wait_for(stored, 30)
        return sid


@pytest.fixture
def live(daemon, tmp_path):
    """Factory: live("bash", rc="...") starts `rw record bash` with an rc file
    that loads rw's hooks (and then `rc`)."""
    opened: list[Live] = []
    home = tmp_path / "home"

    def make(kind: str = "bash", rc: str = "") -> Live:
        write_rc(home, kind, recorded_rc(kind, rc))
        sh = Live([RW, "record", kind], home=home, rw_home=daemon)
        opened.append(sh)
        return sh

    yield make
    for sh in opened:
        sh.close()

"""Which command lines are rw's own: one classifier for rw back, rw log and replay."""

from __future__ import annotations

import pytest

from rewind_daemon.rw_commands import rw_verb


@pytest.mark.parametrize(
    ("line", "verb"),
    [
        ("rw back 2", "back"),
        ("rw back 2 --dry-run", "back"),
        ("\\rw log", "log"),
        ("'rw' show 3", "show"),
        ("command rw back", "back"),
        ("/home/me/.local/bin/rw replay current", "replay"),
        ("RW_X=1 OTHER='a b' rw sessions", "sessions"),
        ("env -u HOME rw log", "log"),
        ("sudo -u root rw guard -- ./install.sh", "guard"),
        ("time rw log | less", "log"),
        ("(rw log)", "log"),
        ("rw log; ls", "log"),
        ("rw", ""),
        ("rw --help", ""),
        ("rw 'unclosed", ""),
        ("ls; rw log", None),
        ("echo rw back", None),
        ("rwx back", None),
        ("cd /tmp/rw", None),
        ("grep -r rw .", None),
        ("./rw-tool back", None),
        ("", None),
    ],
)
def test_rw_verb(line, verb):
    assert rw_verb(line) == verb

"""What the spool leaves on disk: real shells, the real daemon, the file's bytes."""

from __future__ import annotations

import secrets
import stat
from pathlib import Path

import pytest

from .conftest import rw, wait_for

SHELLS = ["bash", "zsh"]


@pytest.fixture(params=SHELLS)
def kind(request):
    return request.param


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_spool_keeps_no_clear_text_once_ingested_and_is_private(daemon, shells, kind):
    token, bearer = f"tok{secrets.token_hex(8)}", f"bearer{secrets.token_hex(8)}"
    sh = shells(kind, before_init=["umask 022"])
    sh.run(f"export API_TOKEN={token}")
    sh.run(f"echo curl -H 'Authorization: Bearer {bearer}' https://example.invalid/ >/dev/null")
    sh.run("echo after")
    # The hooks made their files private and left the user's umask alone.
    assert sh.run("umask") in ("0022", "022")
    sid = sh.session_id()
    spool = daemon / "data" / "spool" / f"{sid}.spool"

    def clear_text_gone() -> bool:
        data = spool.read_bytes()  # every byte, holes read as zeros
        return token.encode() not in data and bearer.encode() not in data

    wait_for(clear_text_gone, timeout=3)
    assert spool.stat().st_size > 0
    assert mode(spool) == 0o600
    assert mode(spool.parent) == 0o700
    scratch = Path(sh.run("echo $__rw_scratch_dir"))
    assert mode(scratch) == 0o700
    if kind == "bash":
        assert mode(scratch / f"{sid}.hist") == 0o600
    # What it held was stored all the same.
    shown = rw("log", sid, "--json").stdout
    assert "echo after" in shown and token not in shown and bearer not in shown

"""A session id only ever names rw's own files: one that could reach outside
its directories (from a spool, or an imported file) is refused where it comes in."""

from __future__ import annotations

import socket
import time

import pytest

from rewind_daemon.capture import records
from rewind_daemon.store import Store

from .conftest import make_site, rw, rw_json, wait_for


def test_a_spooled_session_id_with_dotdot_is_dropped(daemon, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "decoy.ack").write_text("keep me\n")
    rw("watch", "add", str(make_site(tmp_path)))  # so the daemon makes FIFOs for new sessions
    hostile = "../" * 16 + str(outside / "evil").lstrip("/")
    now = f"{time.time():.6f}"
    spool = daemon / "data" / "spool" / "1795236632920925000ab1234.spool"
    spool.write_bytes(
        records.encode("S", hostile, "", "bash", "5.2", "1", "", now, "/", socket.gethostname(),
                       "u", "", "none")
        + records.encode("S", "../" * 16 + str(outside / "decoy").lstrip("/"), "", "bash", "5.2",
                         "1", "", now, "/", socket.gethostname(), "u", "", "none")
        + records.encode("S", "good-one", "", "bash", "5.2", "1", "", now, "/",
                         socket.gethostname(), "u", "", "none")
    )  # fmt: skip
    wait_for(lambda: "good-one" in {s["id"] for s in rw_json("sessions")})
    ids = {s["id"] for s in rw_json("sessions")}
    assert ids == {"good-one"}
    assert sorted(p.name for p in outside.iterdir()) == ["decoy.ack"]
    assert (outside / "decoy.ack").read_text() == "keep me\n"


@pytest.mark.parametrize("sid", ["../x", "a/b", "", ".", "..", "-rf", "x\n", "x\0y", "x" * 200])
def test_the_store_takes_no_session_id_but_rws_form(tmp_path, sid):
    store = Store(tmp_path / "rw.db")
    with pytest.raises(ValueError, match="not a session id"):
        store.upsert_session(
            sid, parent_id=None, shell="bash", shell_version="5", pid=1, tty=None,
            started_at=1.0, cwd="/", host="h", user="u",
        )  # fmt: skip
    assert store.sessions() == []

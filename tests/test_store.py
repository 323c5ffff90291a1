"""The store's schema and its migrations."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import zlib

from rewind_daemon import store as store_mod
from rewind_daemon.store import SCHEMA_VERSION, OutputRow, Store

from .conftest import RW


def test_a_version_1_store_is_migrated_and_keeps_its_data(tmp_path):
    path = tmp_path / "rw.db"
    db = sqlite3.connect(path)
    db.executescript(store_mod._SCHEMA_V1)
    db.execute("INSERT INTO sessions (id, shell, started_at) VALUES ('s1', 'bash', 1.0)")
    db.execute(
        "INSERT INTO steps (session, number, seq, command, started_at)"
        " VALUES ('s1', 1, 1, 'ls', 2.0)"
    )
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    s = Store(path)
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 5
    assert s.watches() == [] and s.checkpoints() == []
    row = s.get_session("s1")
    assert row is not None and row.env_id is None and row.steps == 1
    assert s.step("s1", 1).command == "ls"


def test_branch_copies_steps_with_seqs_apart_from_the_shells(tmp_path):
    s = Store(tmp_path / "rw.db")
    common = dict(shell="bash", shell_version="5", pid=None, tty=None, cwd="/", host="h", user="u")
    with s.transaction():
        s.upsert_session("p", parent_id=None, started_at=1.0, **common)
        for i in (1, 2, 3):
            s.begin_step("p", i, i, f"cmd {i}", "/", float(i))
        assert s.upsert_session("b", parent_id="p", started_at=5.0, branch_point=2, **common)
        assert not s.upsert_session("b", parent_id="p", started_at=5.0, branch_point=2, **common)
        assert s.begin_step("b", 3, 1, "new", "/", 6.0)  # the shell's seq 1 does not collide
    assert [r.command for r in s.steps("b")] == ["cmd 1", "cmd 2", "new"]
    assert [r.command for r in s.steps("p")] == ["cmd 1", "cmd 2", "cmd 3"]


def test_a_version_4_store_keeps_its_replay_outputs_in_the_one_output_model(no_autostart):
    path = no_autostart / "data" / "rw.db"
    Store(path).close()  # the private data dir, then the file made anew at v4
    path.unlink()
    db = sqlite3.connect(path)
    for v in (1, 2, 3, 4):
        db.executescript(store_mod.MIGRATIONS[v])
    db.execute(
        "INSERT INTO sessions (id, shell, started_at, origin) VALUES ('s1', 'bash', 1.0, 'replay')"
    )
    db.execute(
        "INSERT INTO steps (session, number, seq, command, started_at, ended_at, exit_code)"
        " VALUES ('s1', 1, 1, 'make', 2.0, 3.0, 0)"
    )
    printed = b"\x1b[32mok\x1b[0m built\nwarn\xff\n"
    db.execute("INSERT INTO step_outputs VALUES ('s1', 1, ?)", (zlib.compress(printed),))
    db.execute("PRAGMA user_version=4")
    db.commit()
    db.close()
    old = Store.open_for_reading(path)  # no daemon to migrate it yet: read as it is
    assert old is not None and old.schema_version() == 4
    assert old.step_output("s1", 1) == OutputRow(printed, None, -1, 0, True)
    old.close()
    for migrated in (False, True):  # rw show reads it before and after the daemon migrates
        if migrated:
            s = Store(path)
            assert s.schema_version() == 5
            assert s.step_output("s1", 1) == OutputRow(printed, None, len(printed), 0, True)
            s.close()
        shown = subprocess.run([RW, "show", "s1", "1", "--json"], capture_output=True, text=True)
        doc = json.loads(shown.stdout)
        assert doc["output"] == "ok built\nwarn\ufffd\n"
        assert doc["output_bytes"] == len(printed) and doc["output_truncated"] is False
        raw = subprocess.run([RW, "show", "s1", "1", "--raw"], capture_output=True, check=True)
        assert raw.stdout == printed
    # New outputs are stored beside it in the same table, text and all.
    s = Store(path)
    with s.transaction():
        s.set_output("s1", 2, OutputRow(b"x\r\n", "x\n", 3, 0, False))
    assert s.step_outputs("s1", 1, 2)[2] == OutputRow(b"x\r\n", "x\n", 3, 0, False)


def test_the_output_quota_drops_only_steps_outputs_oldest_first(tmp_path):
    s = Store(tmp_path / "rw.db")
    common = dict(shell="bash", shell_version="5", pid=None, tty=None, cwd="/", host="h", user="u")
    with s.transaction():
        s.upsert_session("g", parent_id=None, started_at=1.0, **common)
        s.begin_step("g", 1, 1, "./install.sh", "/", 9.0)
        s.begin_step("g", 2, 2, "make", "/", 3.0)
        s.set_output("g", 0, OutputRow(b"{}", "{}", 2))  # a guarded run's report: no step 0
        s.set_output("g", 1, OutputRow(b"later", "later", 5))
        s.set_output("g", 2, OutputRow(b"earlier", "earlier", 7))
    assert [(sid, n) for sid, n, _ in s.oldest_outputs()] == [("g", 2), ("g", 1)]
    assert s.output_usage()[0] == 3

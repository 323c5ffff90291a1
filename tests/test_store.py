"""The store's schema and its migrations."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import zlib

from rewind_daemon import store as store_mod
from rewind_daemon.store import SCHEMA_VERSION, OutputRow, Store

from .conftest import RW, rw


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
    assert s.db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 9
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
            assert s.schema_version() == SCHEMA_VERSION
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


# --- the search index (schema 6) --------------------------------------------------

COMMON = dict(shell="bash", shell_version="5", pid=None, tty=None, cwd="/", host="h", user="u")


def index_words(s: Store, table: str, word: str) -> list[int]:
    q = f"SELECT rowid FROM {table} WHERE {table} MATCH ? ORDER BY rowid DESC"
    return [r[0] for r in s.db.execute(q, (f'"{word}"',))]


def search_ids(s: Store, sid: str) -> dict[int, int]:
    q = "SELECT number, search_id FROM steps WHERE session=?"
    return dict(s.db.execute(q, (sid,)).fetchall())


def text_of(raw: bytes, command: str) -> str:
    from rewind_daemon.capture.termtext import text_of as real

    return real(raw, command)


def test_a_version_5_store_with_outputs_gets_its_search_index(no_autostart):
    path = no_autostart / "data" / "rw.db"
    Store(path).close()  # the private data dir, then the file made anew at v5
    path.unlink()
    db = sqlite3.connect(path)
    for v in (1, 2, 3, 4, 5):
        db.executescript(store_mod.MIGRATIONS[v])
    db.execute("INSERT INTO sessions (id, shell, started_at) VALUES ('s1', 'bash', 1.0)")
    db.execute(
        "INSERT INTO sessions (id, shell, started_at, parent_id, branch_point, origin)"
        " VALUES ('b1', 'bash', 9.0, 's1', 1, 'branch')"
    )
    for sid, n, seq, cmd, at in [
        ("s1", 1, 1, "apt-get install nginx", 2.0),
        ("s1", 2, 2, "systemctl restart nginx", 3.0),
        ("b1", 1, -1, "apt-get install nginx", 2.0),  # a branch's copy of s1's step 1
        ("b1", 2, 1, "curl localhost", 10.0),
    ]:
        db.execute(
            "INSERT INTO steps (session, number, seq, command, started_at) VALUES (?,?,?,?,?)",
            (sid, n, seq, cmd, at),
        )
    text = "Reading package lists\nE: Unable to locate package nginx\n"
    db.execute(
        "INSERT INTO step_outputs (session, number, raw, text, size) VALUES ('s1', 1, ?, ?, 9)",
        (zlib.compress(text.encode()), zlib.compress(text.encode())),
    )
    replayed = b"\x1b[31mJob for nginx.service failed\x1b[0m\r\n"  # (text made when read)
    db.execute(
        "INSERT INTO step_outputs (session, number, raw, size) VALUES ('s1', 2, ?, -1)",
        (zlib.compress(replayed),),
    )
    db.execute("PRAGMA user_version=5")
    db.commit()
    db.close()
    s = Store(path)
    assert s.schema_version() == SCHEMA_VERSION == 9
    assert s.search_backlog() == (4, 2)
    assert s.index_pending(text_of, 10) is True
    assert s.search_backlog() == (0, 0)
    ids = search_ids(s, "s1")
    assert 0 < ids[1] < ids[2] and search_ids(s, "b1")[1] == 0  # the copy is found in s1
    assert index_words(s, "search_commands", "nginx") == [ids[2], ids[1]]
    assert index_words(s, "search_outputs", "unable") == [ids[1]]
    assert index_words(s, "search_outputs", "service") == [ids[2]]
    assert s.step_output("s1", 2).text == "Job for nginx.service failed\n"  # made and kept
    # rw search finds them, once the daemon has migrated the store
    s.close()
    proc = subprocess.run([RW, "search", "--output", "nginx", "--json"], capture_output=True,
                          text=True)  # fmt: skip
    hits = json.loads(proc.stdout)
    assert [(h["session"], h["step"], h["match"]["in"]) for h in hits] == [
        ("s1", 2, "command"), ("s1", 1, "command"),
    ]  # fmt: skip
    proc = subprocess.run([RW, "search", "--output", "job for", "--json"], capture_output=True,
                          text=True)  # fmt: skip
    assert [h["match"]["line"] for h in json.loads(proc.stdout)] == ["Job for nginx.service failed"]


def test_removed_outputs_and_steps_leave_no_words_in_the_index(tmp_path):
    s = Store(tmp_path / "rw.db")
    with s.transaction():
        s.upsert_session("s1", parent_id=None, started_at=1.0, **COMMON)
        for n in (1, 2, 3):
            s.begin_step("s1", n, n, f"make target{n}", "/", float(n))
            s.set_output("s1", n, OutputRow(b"x", f"built alpha{n}\n", 1))
        s.set_output("s1", 0, OutputRow(b"{}", "report", 2))  # a guarded run's: no step
    assert s.index_pending(text_of, 10) is True
    assert s.search_backlog() == (0, 0)
    assert len(index_words(s, "search_outputs", "built")) == 3
    with s.transaction():  # an output stored again: its old words go, the new come later
        s.set_output("s1", 3, OutputRow(b"y", "rebuilt beta3\n", 1))
    assert index_words(s, "search_outputs", "alpha3") == [] and s.search_backlog() == (0, 1)
    s.index_pending(text_of, 10)
    assert len(index_words(s, "search_outputs", "beta3")) == 1
    with s.transaction():  # rw gc's output quota
        s.remove_outputs([("s1", 1)])
    assert index_words(s, "search_outputs", "alpha1") == []
    assert len(index_words(s, "search_outputs", "built")) == 1  # (step 2's)
    assert len(index_words(s, "search_commands", "target1")) == 1  # the step stays
    with s.transaction():  # a session removed
        s.remove_steps("s1")
    for table in ("search_commands", "search_outputs"):
        assert s.db.execute(f"SELECT count(*) FROM {table}").fetchone()[0] == 0
        s.db.execute(f"INSERT INTO {table} ({table}) VALUES ('integrity-check')")


def test_search_ids_order_steps_by_when_they_started(tmp_path):
    s = Store(tmp_path / "rw.db")
    with s.transaction():
        s.upsert_session("s1", parent_id=None, started_at=1.0, **COMMON)
        s.upsert_session("s2", parent_id=None, started_at=1.0, **COMMON)
        for n in range(1, 4):  # three steps in the same millisecond
            s.begin_step("s1", n, n, "same", "/", 1000.0)
        s.begin_step("s2", 1, 1, "earlier", "/", 999.0)
        s.begin_step("s2", 2, 2, "later", "/", 1000.5)
    s.index_pending(text_of, 10)
    one, two = search_ids(s, "s1"), search_ids(s, "s2")
    assert two[1] < one[1] < one[2] < one[3] < two[2]
    assert store_mod.search_id_floor(1000.0) < one[1] and one[3] < store_mod.search_id_floor(
        1000.001
    )


def test_the_last_word_is_found_as_a_prefix_however_many_words_start_so(tmp_path):
    from rewind_daemon.timeline import search

    s = Store(tmp_path / "rw.db")
    with s.transaction():
        s.upsert_session("s1", parent_id=None, started_at=1.0, **COMMON)
        for n in range(1, 41):  # 40 words starting "deploy" (the index names 32 at most)
            s.begin_step("s1", n, n, f"echo deploy{n:02d}x", "/", float(n))
        s.begin_step("s1", 41, 41, "echo redeploy", "/", 41.0)
    s.index_pending(text_of, 10)

    def steps(pattern: str, **kw) -> list[int]:
        found = search.search(s, search.Pattern.of(pattern), limit=100, **kw)
        return [h.step.row.number for h in found.hits]

    assert steps("deploy") == list(range(40, 0, -1))  # (a prefix query: > 32 words)
    assert steps("deploy1") == list(range(19, 9, -1))  # (10 words, named)
    assert steps("deploy07") == [7]
    assert steps("deploy99") == [] and steps("zzzz") == []  # (no word starts so)
    assert steps("echo deploy3") == list(range(39, 29, -1))
    assert steps("redeploy") == [41] and steps("eploy") == []


# --- the outputs' codecs (schema 8) -----------------------------------------------

COLOURED = (
    b"\x1b[1mReading package lists... 42%\rReading package lists... Done\x1b[0m\r\n"
    b"\x1b[31mE: Unable to locate package nginx\x1b[0m\r\n"
)
PLAIN = b"Get:1 http://deb.example bookworm/main nginx 1.22 [640 kB]\r\nFetched 640 kB\r\n"


def _codec_sessions(path) -> list[OutputRow]:
    """Sessions `old` (its outputs as an older rw stored them: zlib), `new` and
    `again` (as this rw stores them: zstd), each step printing the same; the
    rows stored."""
    from rewind_daemon.capture.outputs import make_output
    from rewind_daemon.redact import Redactor

    s = Store(path)
    rows = [
        make_output(COLOURED, "apt-get install nginx", Redactor(), timing=((0, 7.25),))[0],
        make_output(PLAIN, "apt-get update", Redactor())[0],
    ]
    with s.transaction():
        for sid, t in (("old", 10.0), ("new", 100.0), ("again", 200.0)):
            s.upsert_session(sid, parent_id=None, started_at=t, **COMMON)
            for n, command in ((1, "apt-get install nginx"), (2, "apt-get update")):
                s.begin_step(sid, n, n, command, "/", t + n)
                s.end_step(sid, n, ended_at=t + n + 0.5, exit_code=0, pipestatus="0", cwd="/",
                           env_id=None)  # fmt: skip
        for n, row in enumerate(rows, 1):
            for sid in ("new", "again"):
                s.set_output(sid, n, row)
            # (what an older rw's set_output wrote: zlib level 2, timing 6)
            text = b"" if row.plain else zlib.compress(row.text.encode(), 2)
            timing = b"".join(store_mod._TIMING.pack(o, t) for o, t in row.timing)
            s.db.execute(
                "INSERT INTO step_outputs (session, number, raw, text, size, omitted, complete,"
                " timing) VALUES ('old',?,?,?,?,0,1,?)",
                (n, zlib.compress(row.raw, 2), text, row.size,
                 zlib.compress(timing, 6) if timing else None),
            )  # fmt: skip
            s.db.execute("INSERT INTO search_pending (session, number) VALUES ('old', ?)", (n,))
    s.close()
    return rows


def test_outputs_stored_by_zlib_and_by_zstd_read_alike_in_one_store(no_autostart):
    """A store an older rw wrote outputs into (zlib) and this rw then (zstd):
    show, search, diff and export read both; two outputs this rw stored alike
    are still found equal in SQL, without being read."""
    path = no_autostart / "data" / "rw.db"
    rows = _codec_sessions(path)
    s = Store(path)
    first = dict(s.db.execute("SELECT session, substr(raw, 1, 4) FROM step_outputs WHERE number=1"))
    assert first["old"][:1] == b"\x78" and first["new"] == first["again"] == store_mod.ZSTD_MAGIC
    for sid in ("old", "new", "again"):
        assert s.step_outputs(sid, 1, 2) == {1: rows[0], 2: rows[1]}
    assert s.outputs_alike("new", "again", [(1, 1), (2, 2)]) == [(True, True, True)] * 2
    assert s.outputs_alike("old", "new", [(1, 1)]) == [(True, True, False)]  # (read to compare)
    s.close()
    for sid in ("old", "new"):
        assert rw("show", sid, "1", "--output").stdout == rows[0].text
        raw = subprocess.run([RW, "show", sid, "1", "--raw"], capture_output=True, check=True)
        assert raw.stdout == COLOURED
        assert rw("show", sid, "2", "--output").stdout == rows[1].text
    found = json.loads(rw("search", "--output", "unable", "--json").stdout)
    assert sorted(h["session"] for h in found) == ["again", "new", "old"]
    assert json.loads(rw("diff", "old", "new", "--json").stdout)["divergence"] is None
    exported = [json.loads(rw("export", sid, "--format", "json").stdout) for sid in ("old", "new")]
    assert (
        [st["output"] for st in exported[0]["steps"]]
        == [st["output"] for st in exported[1]["steps"]]
        == [COLOURED.decode(), PLAIN.decode()]
    )


def test_without_zstandard_outputs_are_stored_with_zlib(no_autostart, tmp_path):
    """Where zstandard cannot be imported (the remote agent's bundle), outputs
    are written with zlib, read there as before, and read here too; an output
    stored with zstd is refused there in one line, not a traceback."""
    path = no_autostart / "data" / "rw.db"
    rows = _codec_sessions(path)
    blocker = tmp_path / "no-zstd"
    blocker.mkdir()
    (blocker / "zstandard.py").write_text("raise ImportError('no zstandard here')\n")
    env = {**os.environ, "PYTHONPATH": str(blocker)}
    code = (
        "import sys; from rewind_daemon.store import Store, OutputRow, zstandard;"
        "assert zstandard is None; s = Store(__import__('pathlib').Path(sys.argv[1]));"
        "s.set_output('old', 3,"
        " OutputRow(b'\\x1b[32mok\\x1b[0m\\r\\n', 'ok\\n', 13, timing=((0, 1.5),)));"
        "print(s.step_output('old', 3).text, end='')"
    )
    there = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True,
                           text=True)  # fmt: skip
    assert there.returncode == 0 and there.stdout == "ok\n", there.stderr
    s = Store(path)
    (raw, text, timing), = s.db.execute(
        "SELECT raw, text, timing FROM step_outputs WHERE session='old' AND number=3"
    )  # fmt: skip
    assert raw[:1] == text[:1] == timing[:1] == b"\x78"
    assert s.step_output("old", 3) == OutputRow(
        b"\x1b[32mok\x1b[0m\r\n", "ok\n", 13, timing=((0, 1.5),)
    )
    s.close()
    old = subprocess.run([RW, "show", "old", "1", "--output"], env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert old.returncode == 0 and old.stdout == rows[0].text
    new = subprocess.run([RW, "show", "new", "1", "--output"], env=env, capture_output=True,
                         text=True)  # fmt: skip
    assert new.returncode == 1 and "Traceback" not in new.stderr
    assert new.stderr.splitlines()[-1] == (
        "rw: an output in the store is compressed with zstd: install the zstandard package"
        " (pip install zstandard) to read it"
    )


def test_the_daemon_s_log_is_copied_into_the_database_when_it_says(tmp_path):
    """The daemon's connection leaves the write-ahead log to grow (a backlog's
    ingest does not wait for SQLite's checkpoints every 1000 pages); copy_log
    copies it when the daemon is idle, and its file is cut back after."""
    path = tmp_path / "rw.db"
    s = Store(path)
    s.defer_checkpoints()
    wal = tmp_path / "rw.db-wal"
    blob = os.urandom(1 << 16)
    with s.transaction():
        s.db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB)")
    for _ in range(10):  # (10 MB in the log: 2,500 pages, beyond SQLite's 1000)
        with s.transaction():
            s.db.executemany("INSERT INTO t (v) VALUES (?)", [(blob,)] * 16)
    assert wal.stat().st_size > 10 << 20
    copied = sqlite3.connect(path)  # (another connection: the database file alone)
    before = path.stat().st_size
    s.copy_log()
    assert path.stat().st_size > before + (10 << 20)
    with s.transaction():
        s.db.execute("INSERT INTO t (v) VALUES (x'00')")
    assert wal.stat().st_size <= store_mod.WAL_KEEP
    assert copied.execute("SELECT count(*) FROM t").fetchone() == (161,)
    copied.close()
    s.close()

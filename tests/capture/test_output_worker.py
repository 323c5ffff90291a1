"""The output worker (capture/output_worker.py): a second process making many
steps' outputs ready at once stores exactly what the daemon would, and one
that dies or is stopped costs nothing."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rewind_daemon import paths
from rewind_daemon.capture import records
from rewind_daemon.capture.ingest import Ingester, SpoolReader
from rewind_daemon.capture.output_worker import READY, START_BYTES, OutputWorker
from rewind_daemon.capture.outputs import OutputReader, make_output
from rewind_daemon.recorder.spool import OutputSpool
from rewind_daemon.redact import Redactor

from ..conftest import rw, rw_json, wait_for, write_config

SID = "1795000000000000cafe"
TOKEN = "ghp_" + "Q7x9" * 9  # a rule's secret
ROOM = "Room-4711-Delta"  # the config's own pattern's secret
KNOWN = "s3cr3t-from-the-environment"  # known from the session's environment only
EXTRA = [re.compile(r"room (?P<s>Room-\d+-\w+)")]


def _output(seq: int, size: int) -> bytes:
    """`size` bytes of coloured build output with each kind of secret in it."""
    lines, n = [], 0
    while n < size:
        i = len(lines)
        if i % 997 == 5:
            line = f"export GITHUB_TOKEN={TOKEN}"
        elif i % 991 == 7:
            line = f"booked room {ROOM} for step {seq}"
        elif i % 983 == 9:
            line = f"connecting with {KNOWN} to the database"
        else:
            line = f"[{i % 100:3d}%] \x1b[32mBuilding C object src/m{seq}/f{i}.c.o\x1b[0m"
        lines.append(line)
        n += len(line) + 2
    return ("\r\n".join(lines) + "\r\n").encode()


def _spools(spool_dir: Path, steps: list[bytes]) -> None:
    """A session's command spool (its environment holds KNOWN as a secret
    variable's value) and its output spool, as the hooks and recorder write them."""
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    cmds = [records.encode("S", SID, "", "bash", "5.2", "", "", "1.0", "/", "h", "u")]
    for seq in range(1, len(steps) + 1):
        cmds.append(records.encode("B", SID, str(seq), f"{seq}.0", "/", f"make m{seq}"))
        end = [f"{seq}.5", "0", "0", "/", "list0", f"DB_PASSWORD={KNOWN}", "HOME=/root"]
        cmds.append(records.encode("E", SID, str(seq), *end))
    (spool_dir / f"{SID}.spool").write_bytes(b"".join(cmds))
    spool = OutputSpool(spool_dir, (120, 40))
    for seq, data in enumerate(steps, 1):
        spool.start(SID, seq)
        for at in range(0, len(data), 65536):
            spool.output(SID, seq, data[at : at + 65536])
        spool.end(SID, seq, True)
    spool.close()


def _ingest(tmp_path: Path, spools: Path, worker: OutputWorker | None):
    """Ingest a copy of the spools in `spools` into a store of its own."""
    from rewind_daemon.store import Store

    spool_dir = tmp_path / "spool"
    shutil.copytree(spools, spool_dir)
    store = Store(tmp_path / "rw.db")
    redactor = Redactor(EXTRA)
    ingester = Ingester(store, redactor, [])
    SpoolReader(spool_dir, ingester).ingest_all(set())
    reader = OutputReader(spool_dir, store, redactor, known=ingester.known, worker=worker)
    stored = reader.ingest_all()
    store.close()
    return stored, reader


def _rows(db: Path) -> list[tuple]:
    con = sqlite3.connect(db)
    try:
        rows = con.execute("SELECT * FROM step_outputs ORDER BY session, number").fetchall()
        rows += con.execute("SELECT key, value FROM meta WHERE key = 'redactions'").fetchall()
        return rows
    finally:
        con.close()


def _no_secret_in(db: Path) -> None:
    stored = b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*"))
    from rewind_daemon.store import Store

    store = Store.open_for_reading(db)
    assert store is not None
    try:
        for n in range(1, 200):
            out = store.step_output(SID, n)
            if out is not None:
                stored += out.raw + (out.text or "").encode()
    finally:
        store.close()
    for secret in (TOKEN, ROOM, KNOWN):
        assert secret.encode() not in stored


def test_the_worker_stores_what_the_daemon_stores_byte_for_byte(tmp_path):
    """Many steps ready at once, all made by the worker (alone: the daemon takes
    none), are stored as the daemon makes them itself: the same rows, blob for
    blob, the same count of masked secrets; the config's rule and the secrets
    known from the session's environment are masked in the worker too."""
    steps = [_output(seq, 150_000 + 40_000 * (seq % 5)) for seq in range(1, 13)]
    _spools(tmp_path / "spools", steps)  # (the same, to the wall times of their records)
    here, alone = _ingest(tmp_path / "here", tmp_path / "spools", None)
    worker = OutputWorker((EXTRA, []))
    worker.prepare(START_BYTES)  # (started for less, as for a large backlog)
    worker.alone = True
    try:
        there, reader = _ingest(tmp_path / "worker", tmp_path / "spools", worker)
        assert worker.pid is not None and worker.jobs_sent == len(steps)
    finally:
        worker.close()
    assert here == there == len(steps)
    rows = _rows(tmp_path / "worker" / "rw.db")
    assert rows == _rows(tmp_path / "here" / "rw.db")
    assert len(rows) == len(steps) + 1
    _no_secret_in(tmp_path / "worker" / "rw.db")
    assert reader.stats.redactions == alone.stats.redactions >= 3 * len(steps)


def test_a_worker_that_hangs_is_given_up_and_its_steps_made_by_the_daemon(tmp_path, caplog):
    """A worker that stops answering (SIGSTOP) is waited for a bounded time,
    killed, and said once; the daemon makes its steps: the rows are as the
    daemon alone makes them."""
    steps = [_output(seq, 150_000 + 40_000 * (seq % 5)) for seq in range(1, 13)]
    _spools(tmp_path / "spools", steps)
    _ingest(tmp_path / "here", tmp_path / "spools", None)
    worker = OutputWorker((EXTRA, []))
    worker.prepare(START_BYTES)
    pid = worker.pid
    assert pid is not None
    wait_for(lambda: _io(pid, "wchar") > 0)  # (it said it has started)
    os.kill(pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        stored, _ = _ingest(tmp_path / "worker", tmp_path / "spools", worker)
        took = time.monotonic() - t0
    finally:
        worker.close()
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)
    assert stored == len(steps) and took < 20, took
    assert worker.jobs_sent >= 1 and worker.pid is None and not _alive(pid)
    assert _rows(tmp_path / "worker" / "rw.db") == _rows(tmp_path / "here" / "rw.db")
    failed = [r for r in caplog.records if "the output worker failed" in r.getMessage()]
    assert len(failed) == 1 and "did not answer in time" in failed[0].getMessage()


def test_a_short_ingest_starts_no_worker(tmp_path):
    """An interactive shell's steps (one at a time, small), or a backlog of a
    few MB, cost no process."""
    worker = OutputWorker(([], []))
    try:
        _spools(tmp_path / "spools", [_output(n, 3000 + 500_000 * (n % 2)) for n in range(1, 14)])
        stored, _ = _ingest(tmp_path, tmp_path / "spools", worker)
        assert stored == 13 and worker.pid is None and worker.jobs_sent == 0
    finally:
        worker.close()


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _io(pid: int, what: str) -> int:
    for line in Path(f"/proc/{pid}/io").read_text().splitlines():
        if line.startswith(what + ":"):
            return int(line.split()[1])
    return 0


def _daemon_and_worker(home: Path, steps: list[bytes]) -> tuple[int, int]:
    """A running daemon given a backlog of `steps` at once (spools moved into
    its spool directory, as after a reboot); (its pid, its worker's pid)."""
    write_config(
        home, "[daemon]\nautostart = false\n[redact]\npatterns = ['room (?P<s>Room-\\d+-\\w+)']\n"
    )
    rw("daemon", "start")
    pid = int((home / "run" / "daemon.pid").read_text())
    staged = home / "staged"
    _spools(staged, steps)
    spool_dir = paths.resolve().spool_dir
    for suffix in (".spool", ".output"):  # (commands first, as the hooks write them)
        os.rename(staged / f"{SID}{suffix}", spool_dir / f"{SID}{suffix}")
    worker = wait_for(lambda: (_children(pid) or [None])[0], timeout=30, interval=0.005)
    return pid, worker


def _expected(steps: list[bytes]) -> tuple[list[tuple[bytes, str | None]], int]:
    """What the daemon alone stores of `steps`: (bytes, text) each, and the
    secrets masked in all."""
    from rewind_daemon.capture.known_secrets import KnownSecrets

    known = KnownSecrets()
    known.restore(SID, (KNOWN,))
    redactor = known.redactor(SID, Redactor(EXTRA))
    made = [make_output(d, f"make m{n}", redactor) for n, d in enumerate(steps, 1)]
    return [(r.raw, r.text) for r, _ in made], sum(n for _, n in made)


def _command_redactions(tmp_path: Path, steps: list[bytes]) -> int:
    """The secrets masked in the commands and environments of `steps`' session."""
    from rewind_daemon.store import Store

    _spools(tmp_path / "commands", steps)
    (tmp_path / "commands" / f"{SID}.output").unlink()
    store = Store(tmp_path / "commands.db")
    try:
        SpoolReader(tmp_path / "commands", Ingester(store, Redactor(EXTRA), [])).ingest_all(set())
        return store.counter("redactions")
    finally:
        store.close()


def test_a_worker_killed_mid_ingest_costs_nothing(rw_home, tmp_path):
    """SIGKILL the worker while the daemon ingests a backlog: every step's output
    is stored once, as the daemon alone would store it, no secret in the store,
    and the daemon says so once in its log."""
    steps = [_output(seq, 400_000 + 50_000 * (seq % 4)) for seq in range(1, 41)]
    pid, worker = _daemon_and_worker(rw_home, steps)
    # Killed once it has answered (a step made), others still to make.
    wait_for(lambda: _io(worker, "wchar") > len(READY), timeout=30, interval=0.002)
    os.kill(worker, signal.SIGKILL)
    db = paths.resolve().db
    from rewind_daemon.store import Store

    def all_stored() -> bool:
        store = Store.open_for_reading(db)
        try:
            return store is not None and len(store.step_outputs(SID, 1, len(steps))) == len(steps)
        finally:
            if store is not None:
                store.close()

    wait_for(all_stored, timeout=120, interval=0.2)
    assert not _alive(worker)
    store = Store.open_for_reading(db)
    assert store is not None
    rows, masked = _expected(steps)
    try:
        got = store.step_outputs(SID, 1, len(steps))
        assert [(o.raw, o.text) for _, o in sorted(got.items())] == rows
        assert store.counter("redactions") == masked + _command_redactions(tmp_path, steps)
    finally:
        store.close()
    _no_secret_in(db)
    assert rw_json("daemon", "status")["dropped_output"] == 0
    log = paths.resolve().log_file.read_text()
    assert log.count("the output worker failed") == 1, log
    assert _alive(pid)


def test_daemon_stop_ends_the_worker(rw_home):
    steps = [_output(seq, 300_000) for seq in range(1, 41)]
    pid, worker = _daemon_and_worker(rw_home, steps)
    assert _alive(worker)
    rw("daemon", "stop")
    wait_for(lambda: not _alive(pid), timeout=30)
    assert not _alive(worker)


def test_the_worker_starts_without_what_only_the_daemon_uses():
    # The worker's start is CPU the daemon's backlog waits on: it imports what
    # makes an output ready, not the spool readers' code (ingest, records,
    # ctypes) nor what starts the worker (subprocess).
    daemons = ("subprocess", "rewind_daemon.capture.ingest", "rewind_daemon.capture.records",
               "ctypes", "rewind_daemon.capture.daemon")  # fmt: skip
    probe = (
        "import runpy, sys\n"
        "sys.argv = ['output_worker']\n"
        "try:\n"
        "    runpy.run_module('rewind_daemon.capture.output_worker', run_name='__main__')\n"
        "except SystemExit:\n"
        "    pass\n"
        f"print(sorted(m for m in {daemons!r} if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        check=True, timeout=60,
    )  # fmt: skip
    assert done.stdout.strip() == "[]", done.stdout


def _backlog(tmp_path: Path):
    """A 12 MB backlog, ingested by the daemon alone into tmp_path/here, and
    (its store, a worker, a reader with the worker) to ingest its copy in
    tmp_path/worker: it is read 4 MiB at a time."""
    from rewind_daemon.store import Store

    steps = [_output(seq, 300_000 + 20_000 * (seq % 7)) for seq in range(1, 41)]
    _spools(tmp_path / "spools", steps)
    _ingest(tmp_path / "here", tmp_path / "spools", None)
    spool_dir = tmp_path / "worker" / "spool"
    shutil.copytree(tmp_path / "spools", spool_dir)
    store = Store(tmp_path / "worker" / "rw.db")
    redactor = Redactor(EXTRA)
    ingester = Ingester(store, redactor, [])
    SpoolReader(spool_dir, ingester).ingest_all(set())
    worker = OutputWorker((EXTRA, []))
    return store, worker, OutputReader(spool_dir, store, redactor, known=ingester.known,
                                       worker=worker)  # fmt: skip


def test_a_read_is_stored_while_the_worker_makes_the_next_and_trouble_there_loses_nothing(
    tmp_path,
):
    """A backlog read 4 MiB at a time: each read's steps are stored (the
    daemon's serial work) while the worker begins the next read's, not with it
    idle. The store failing then (a full disk) loses nothing: the reads are
    taken in again from the committed offset, each step stored once."""
    store, worker, reader = _backlog(tmp_path)
    events: list[str] = []
    run, store_one = worker.run, reader._store

    def counted_run(*args):
        events.append("run")
        return run(*args)

    def failing_store(*args):
        events.append("store")
        if events.count("run") == 3 and "failed" not in events:
            events.append("failed")
            raise sqlite3.OperationalError("database or disk is full")
        return store_one(*args)

    worker.run, reader._store = counted_run, failing_store
    try:
        try:
            reader.ingest_all()
            raise AssertionError("the store's failure was not raised")
        except sqlite3.OperationalError:
            pass
        reader.ingest_all()  # (again, from what the store says)
        assert worker.jobs_sent >= 1
    finally:
        worker.close()
        store.close()
    # Read 1's steps stored once read 2's were begun.
    assert events[: events.index("store")].count("run") == 2
    assert _rows(tmp_path / "worker" / "rw.db") == _rows(tmp_path / "here" / "rw.db")
    _no_secret_in(tmp_path / "worker" / "rw.db")


def test_the_next_read_is_taken_in_while_the_worker_makes_steps_and_trouble_there_loses_nothing(
    tmp_path,
):
    """The daemon takes in read N+1 (parses it, finds its steps) within read
    N's run, while the worker makes steps, not between the runs with the
    worker idle. Failing there (the store's trouble finding a step) loses
    nothing: taken in again from the committed offset, each step stored once."""
    store, worker, reader = _backlog(tmp_path)
    events: list[str] = []
    run, take = worker.run, reader._take

    def counted_run(*args):
        events.append("run")
        try:
            return run(*args)
        finally:
            events.append("ran")

    def failing_take(*args):
        events.append("take")
        if events.count("take") == 3 and "failed" not in events:
            events.append("failed")
            raise sqlite3.OperationalError("database is locked")
        return take(*args)

    worker.run, reader._take = counted_run, failing_take
    try:
        with pytest.raises(sqlite3.OperationalError):
            reader.ingest_all()
        reader.ingest_all()  # (again, from what the store says)
        assert worker.jobs_sent >= 1
    finally:
        worker.close()
        store.close()
    # Read 2 taken in within read 1's run, read 3 within read 2's.
    assert events[:6] == ["take", "run", "take", "ran", "run", "take"], events
    assert _rows(tmp_path / "worker" / "rw.db") == _rows(tmp_path / "here" / "rw.db")
    _no_secret_in(tmp_path / "worker" / "rw.db")


def test_a_backlog_in_the_spools_starts_the_worker_before_the_first_read(tmp_path):
    """Started with the daemon (OutputReader.prepare, before it listens, where
    `rw daemon run` has not started it), the worker's start overlaps the
    daemon's own; a backlog too small for it starts none."""
    from rewind_daemon.store import Store

    for size, started in ((300_000, True), (100_000, False)):
        spool_dir = tmp_path / str(size) / "spool"
        steps = [_output(seq, size) for seq in range(1, 31)]
        _spools(spool_dir, steps)
        assert (sum(len(s) for s in steps) >= START_BYTES) == started
        store = Store(tmp_path / str(size) / "rw.db")
        worker = OutputWorker((EXTRA, []))
        try:
            reader = OutputReader(spool_dir, store, Redactor(EXTRA), worker=worker)
            reader.prepare()
            assert (worker.pid is not None) == started
            if started:  # (it starts, and says so)
                assert worker.proc is not None and worker.proc.stdout is not None
                assert worker.proc.stdout.read(1) == READY
        finally:
            worker.close()
            store.close()


def test_rw_daemon_run_starts_the_worker_before_the_daemon_and_the_store_decides(tmp_path):
    """worker_spawn.early starts a worker where the output spools take
    START_BYTES on disk (before `rw daemon run` imports the daemon); the
    daemon keeps it where its store says that much is left to read, and ends
    it where it is stored already (the records not yet punched out)."""
    from rewind_daemon.capture import output_spool, worker_spawn
    from rewind_daemon.store import Store

    assert worker_spawn.OUTPUT_SUFFIX == output_spool.OUTPUT_SUFFIX
    spool_dir = tmp_path / "spool"
    steps = [_output(seq, 300_000) for seq in range(1, 31)]
    _spools(spool_dir, steps)
    small = tmp_path / "small"
    _spools(small, steps[:5])
    assert worker_spawn.early(small, (EXTRA, [])) is None
    assert worker_spawn.early(tmp_path / "none", (EXTRA, [])) is None
    for stored in (False, True):
        store = Store(tmp_path / f"rw-{stored}.db")
        proc = worker_spawn.early(spool_dir, (EXTRA, []))
        assert proc is not None
        worker = OutputWorker((EXTRA, []))
        worker.adopt(proc)
        try:
            if stored:  # (as after a crash before the punch: all stored, the bytes still there)
                with store.transaction():
                    name = f"{SID}.output"
                    store.set_spool_offset(name, (spool_dir / name).stat().st_size)
            OutputReader(spool_dir, store, Redactor(EXTRA), worker=worker).prepare()
            if stored:
                assert worker.pid is None and proc.wait(timeout=10) is not None
            else:
                assert worker.pid == proc.pid
                assert proc.stdout is not None and proc.stdout.read(1) == READY
        finally:
            worker.close()
            store.close()
        assert proc.poll() is not None


def test_an_early_worker_is_ended_when_another_daemon_runs(rw_home):
    """`rw daemon run` while a daemon runs: the worker it started for the
    backlog on disk is not left behind."""
    from rewind_daemon.capture import daemon, worker_spawn
    from rewind_daemon.config import load

    write_config(rw_home, "[daemon]\nautostart = false\n")
    rw("daemon", "start")
    try:
        where = paths.resolve()
        # (an output spool whose steps' commands never came: it stays on disk)
        staged = rw_home / "staged"
        _spools(staged, [_output(seq, 300_000) for seq in range(1, 31)])
        os.rename(staged / f"{SID}.output", where.spool_dir / f"{SID}.output")
        config = load(where.config_file)
        proc = worker_spawn.early(where.spool_dir, (EXTRA, []))
        assert proc is not None
        umask, handlers = os.umask(0o022), logging.getLogger().handlers[:]
        try:
            assert daemon.main(where, config, worker=proc) == 1  # (the lock is held)
        finally:  # (main sets the process's umask and logging: this one's are the tests')
            os.umask(umask)
            logging.getLogger().handlers[:] = handlers
        assert proc.poll() is not None
    finally:
        rw("daemon", "stop", check=False)

"""Fault tests: the daemon down, killed, stopped; many shells at once.
Whatever happens to the daemon, the shell keeps answering and nothing is lost."""

from __future__ import annotations

import os
import resource
import signal
import sqlite3
import time

import pexpect
import pytest

from rewind_daemon import paths
from rewind_daemon.capture import records
from rewind_daemon.capture.client import process_running
from rewind_daemon.store import Store

from ..conftest import daemon_pid, rw, rw_json, steps_of, wait_for


def spooled_bytes(home) -> int:
    return sum(p.stat().st_size for p in (home / "data" / "spool").glob("*.spool"))


def test_daemon_not_running_commands_are_spooled_then_ingested(no_autostart, shells):
    home = no_autostart
    sh = shells("bash")
    zsh = shells("zsh")
    for i in range(30):
        sh.run(f"echo bash-{i}")
        zsh.run(f"echo zsh-{i}")
    assert daemon_pid(home) is None
    assert not (home / "data" / "rw.db").exists()
    assert spooled_bytes(home) > 0
    rw("daemon", "start")
    for shell, prefix in ((sh, "bash"), (zsh, "zsh")):
        steps = steps_of(shell.session_id())
        assert [s["command"] for s in steps] == [f"echo {prefix}-{i}" for i in range(30)]
        assert all(s["exit_code"] == 0 for s in steps)


def test_daemon_killed_9_mid_stream_loses_and_duplicates_nothing(no_autostart, shells):
    home = no_autostart
    rw("daemon", "start")
    sh = shells("bash")
    for i in range(500):
        if i == 150:
            os.kill(daemon_pid(home), signal.SIGKILL)
        if i == 300:
            rw("daemon", "start")
        if i == 400:
            os.kill(daemon_pid(home), signal.SIGKILL)
        sh.run(f"echo n{i}")
    rw("daemon", "start")
    steps = steps_of(sh.session_id())
    assert [s["command"] for s in steps] == [f"echo n{i}" for i in range(500)]
    assert [s["step"] for s in steps] == list(range(1, 501))
    assert all(s["exit_code"] == 0 for s in steps)


def test_daemon_killed_9_while_ingesting_a_backlog(no_autostart):
    """A large spool, the daemon killed at random points while ingesting it."""
    home = no_autostart
    spool = home / "data" / "spool"
    spool.mkdir(parents=True)
    sid = "backlog-session"
    chunks = [records.encode("S", sid, "", "bash", "5.2", "1", "", "1.0", "/", "h", "u")]
    env = "".join(f'declare -x V{i}="{"x" * 40}"\n' for i in range(40))
    n = 20_000
    for i in range(1, n + 1):
        chunks.append(records.encode("B", sid, str(i), f"{i}.5", "/", f"cmd {i}"))
        chunks.append(records.encode("E", sid, str(i), f"{i}.9", "0", "0", "/", "declare", env))
    (spool / f"{sid}.spool").write_bytes(b"".join(chunks))
    for delay in (0.3, 0.2, 0.4):
        rw("daemon", "start")
        time.sleep(delay)
        os.kill(daemon_pid(home), signal.SIGKILL)
    rw("daemon", "start")
    steps = steps_of(sid)
    assert len(steps) == n
    assert [s["command"] for s in steps[:3]] == ["cmd 1", "cmd 2", "cmd 3"]
    assert steps[-1]["command"] == f"cmd {n}" and steps[-1]["step"] == n
    assert all(s["exit_code"] == 0 for s in steps)


def test_daemon_sigstopped_shell_keeps_answering(daemon, shells):
    home = daemon
    sh = shells("zsh")
    bash = shells("bash")
    sh.run("echo warm")
    bash.run("echo warm")
    pid = daemon_pid(home)
    os.kill(pid, signal.SIGSTOP)
    try:
        before = spooled_bytes(home)
        for i in range(200):
            # pexpect's timeout is the liveness check: a blocked shell fails here
            assert sh.run(f"echo stopped-{i}", timeout=5) == f"stopped-{i}"
            assert bash.run(f"echo stopped-{i}", timeout=5) == f"stopped-{i}"
        assert spooled_bytes(home) > before
    finally:
        os.kill(pid, signal.SIGCONT)
    for shell in (sh, bash):
        cmds = [s["command"] for s in steps_of(shell.session_id())]
        assert cmds == ["echo warm"] + [f"echo stopped-{i}" for i in range(200)]


def test_no_helper_process_per_shell(daemon, shells):
    """There is no per-shell relay to kill: the shell has no children at the prompt."""
    for kind in ("bash", "zsh"):
        sh = shells(kind)
        sh.run("echo one")
        children = []
        for entry in os.listdir("/proc"):
            if entry.isdigit():
                try:
                    stat = open(f"/proc/{entry}/stat").read()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == sh.pid:
                    children.append(entry)
        assert children == [], f"{kind} has child processes {children}"


def test_daemon_killed_then_autostarted_by_the_hook(daemon, shells):
    home = daemon
    sh = shells("bash")
    sh.run("echo before")
    old = daemon_pid(home)
    os.kill(old, signal.SIGKILL)
    wait_for(lambda: not process_running(old))
    # The hooks look every few seconds and start a new daemon in the background.
    typed = []

    def keep_typing():
        typed.append(f"echo after-kill-{len(typed)}")
        sh.run(typed[-1])
        time.sleep(0.25)
        return daemon_pid(home) not in (None, old) and process_running(daemon_pid(home))

    wait_for(keep_typing, timeout=15)
    cmds = [s["command"] for s in steps_of(sh.session_id())]
    assert cmds == ["echo before", *typed]


@pytest.mark.parametrize("count", [20])
def test_many_shells_at_once(daemon, shells, count):
    opened = [shells("bash" if i % 2 else "zsh") for i in range(count)]
    for round_ in range(10):
        for i, sh in enumerate(opened):
            sh.p.sendline(f"echo s{i}-r{round_}")
        for sh in opened:
            sh.p.expect_exact("<rwp> ")
    for i, sh in enumerate(opened):
        cmds = [s["command"] for s in steps_of(sh.session_id())]
        assert cmds == [f"echo s{i}-r{r}" for r in range(10)]


def test_ingested_spool_space_is_released_and_removed_when_the_shell_ends(daemon, shells):
    home = daemon
    sh = shells("bash")
    big = "x" * 3000
    sh.run(f"export RW_BIG_A={big} RW_BIG_B={big} RW_BIG_C={big}")
    for i in range(150):
        sh.run(f"echo {i}")
    sid = sh.session_id()
    spool = home / "data" / "spool" / f"{sid}.spool"
    st = spool.stat()
    assert st.st_size > 1024 * 1024  # ~10 KB of environment per command
    wait_for(lambda: spool.stat().st_blocks * 512 < st.st_size / 2)
    sh.close()
    wait_for(lambda: not spool.exists(), timeout=15)
    assert not spool.with_suffix(".hist").exists()
    steps = steps_of(sid)
    assert len(steps) == 151 and steps[-1]["command"] == "echo 149"
    session = next(s for s in rw_json("sessions") if s["id"] == sid)
    assert session["ended_at"] is not None


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_exit_closes_the_session_and_its_last_step(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo a")
    sid = sh.session_id()
    sh.p.sendline("exit 3")
    sh.p.expect(pexpect.EOF)
    wait_for(lambda: next(s for s in rw_json("sessions") if s["id"] == sid)["ended_at"], 15)
    steps = steps_of(sid)
    assert [s["command"] for s in steps] == ["echo a", "exit 3"]
    assert steps[1]["ended_at"] is not None and steps[1]["exit_code"] == 3


def test_daemon_ingests_within_a_second_while_records_keep_coming(daemon):
    """The daemon waits for the spools to go quiet before ingesting, but a
    shell that never stops writing is stored while it writes, within about a
    second (BATCH_MAX, and the one-second poll). Read from the database
    without a sync request, which would have it ingest at once."""
    home = daemon
    spool = home / "data" / "spool" / "burst-session.spool"
    sid = "burst-session"
    with open(spool, "ab") as f:
        f.write(records.encode("S", sid, "", "bash", "5.2", "1", "", "1.0", "/", "h", "u"))
    store_path = paths.resolve().db
    start = time.monotonic()
    stored = 0
    i = 0
    while time.monotonic() - start < 3.0:
        i += 1
        with open(spool, "ab") as f:  # a record every 5 ms, as a busy shell would
            f.write(records.encode("B", sid, str(i), f"{i}.5", "/", f"cmd {i}"))
            f.write(records.encode("E", sid, str(i), f"{i}.9", "0", "0", "/", "none"))
        time.sleep(0.005)
        if time.monotonic() - start > 1.6:
            store = Store.open_for_reading(store_path)
            if store is not None:
                try:
                    stored = store.step_count()
                finally:
                    store.close()
            if stored:
                break
    assert stored > 0, "nothing ingested within 1.6 s of continuous writes"


def bad_records(sid: str) -> list[bytes]:
    """Records no shell writes, each wrong in one field, for session `sid`."""
    t = "1700000000.5"
    env = ("none",)
    return [
        records.encode("B", sid, str(2**63), t, "/", "seq past SQLite's INTEGER"),
        records.encode("B", sid, "0", t, "/", "seq 0"),
        records.encode("B", sid, "-3", t, "/", "negative seq"),
        records.encode("B", sid, "\u0663", t, "/", "an Arabic digit"),
        records.encode("B", sid, "900001", "nan", "/", "NaN time"),
        records.encode("B", sid, "900002", "inf", "/", "infinite time"),
        records.encode("B", sid, "900003", "1e400", "/", "time overflowing a float"),
        records.encode("B", sid, "900004", "99999999999", "/", "year 5138"),
        records.encode("B", sid, "900005", "-5", "/", "before 1970"),
        records.encode("B", "../../elsewhere", "900006", t, "/", "a session id with a path"),
        records.encode("H", sid, "900007", t, "/", "not history output"),
        records.encode("E", sid, "1", t, str(2**63), "0", "/", *env),
        records.encode("E", sid, "1", t, "0x10", "0", "/", *env),
        records.encode("E", sid, "1", t, "0", "0", "/", "list", "9" * 5000, "A=1"),
        records.encode("S", "pid-too-big", "", "bash", "5.2", str(2**64), "", t, "/", "h", "u"),
        records.encode("S", "branch-point-too-big", sid, "bash", "5.2", "7", "", t, "/", "h", "u",
                       str(2**63), *env),
        records.encode("X", sid, "nan"),
        records.encode("A", sid, str(2**70)),
    ]  # fmt: skip


def daemon_status(home) -> dict:
    import json

    return json.loads(rw("daemon", "status", "--json").stdout)


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_bad_records_are_dropped_alone_and_the_shell_goes_on_being_recorded(daemon, shells, kind):
    """Today one record with an integer past 2^63 or a NaN time rolls back its
    chunk, is retried every second with a traceback, and nothing its shell
    types afterwards is stored."""
    home = daemon
    pid = daemon_pid(home)
    sh = shells(kind)
    sh.run("echo before")
    sid = sh.session_id()
    bad = bad_records(sid)
    with open(home / "data" / "spool" / f"{sid}.spool", "ab") as f:
        f.write(b"".join(bad))
    for i in range(5):
        sh.run(f"echo after-{i}; (exit {i})")
    time.sleep(2.5)  # the daemon polls every second: long enough to retry, were it to
    steps = steps_of(sid)
    assert [s["command"] for s in steps] == ["echo before"] + [
        f"echo after-{i}; (exit {i})" for i in range(5)
    ]
    assert [s["exit_code"] for s in steps] == [0, 0, 1, 2, 3, 4]
    assert not [s for s in rw_json("sessions") if s["id"].endswith("too-big")]
    status = daemon_status(home)
    assert status["pid"] == pid and status["dropped"] == len(bad)
    log = (home / "data" / "daemon.log").read_text()
    assert "Traceback" not in log
    assert log.count("dropped") == 1, log  # said once, not once per record or per second


def test_a_record_the_store_refuses_is_dropped_alone(daemon):
    """Whatever a record breaks in the store, it loses that record, not its
    neighbours (here a trigger refuses one command, as a constraint would)."""
    home = daemon
    db = sqlite3.connect(home / "data" / "rw.db")
    db.execute(
        "CREATE TRIGGER poison BEFORE INSERT ON steps WHEN NEW.command = 'poison'"
        " BEGIN SELECT RAISE(ABORT, 'refused'); END"
    )
    db.close()
    sid = "refused-session"
    spool = [records.encode("S", sid, "", "bash", "5.2", "1", "", "1.0", "/", "h", "u")]
    for i, command in enumerate(["one", "poison", "three"], 1):
        spool.append(records.encode("B", sid, str(i), f"{i}.5", "/", command))
        spool.append(records.encode("E", sid, str(i), f"{i}.9", str(i), "0", "/", "none"))
    (home / "data" / "spool" / f"{sid}.spool").write_bytes(b"".join(spool))
    rw("daemon", "status")
    steps = steps_of(sid)
    assert [(s["step"], s["command"], s["exit_code"]) for s in steps] == [
        (1, "one", 1),
        (2, "three", 3),
    ]
    # the poisoned step's begin is dropped; its end then names a step never begun
    assert daemon_status(home)["dropped"] == 2


def test_a_full_disk_loses_no_record_and_drops_only_the_bad_one(daemon, shells):
    """A store that cannot write is not the records' fault: they are retried
    until it can, and none is dropped (a bad one among them still is, once)."""
    home = daemon
    pid = daemon_pid(home)
    sh = shells("bash")
    sh.run("echo before")
    sid = sh.session_id()
    hard = resource.prlimit(pid, resource.RLIMIT_FSIZE)[1]
    # The daemon can write no file past 4 KiB: the store's writes fail as on a full disk.
    resource.prlimit(pid, resource.RLIMIT_FSIZE, (4096, hard))
    try:
        for i in range(10):
            sh.run(f"echo full-{i}")
            if i == 5:
                with open(home / "data" / "spool" / f"{sid}.spool", "ab") as f:
                    f.write(records.encode("B", sid, "0", "1.0", "/", "a bad record"))
        time.sleep(2.5)  # retried, and failing, every second
        assert [s["command"] for s in steps_of(sid)] == ["echo before"]
        assert daemon_status(home)["dropped"] == 0
    finally:
        resource.prlimit(pid, resource.RLIMIT_FSIZE, (hard, hard))
    steps = steps_of(sid)
    assert [s["command"] for s in steps] == ["echo before"] + [f"echo full-{i}" for i in range(10)]
    assert all(s["exit_code"] == 0 for s in steps)
    assert daemon_status(home)["dropped"] == 1 and daemon_pid(home) == pid
    db = sqlite3.connect(f"file:{home / 'data' / 'rw.db'}?mode=ro", uri=True)
    assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
    db.close()

"""Fault tests: the daemon down, killed, stopped; many shells at once.
Whatever happens to the daemon, the shell keeps answering and nothing is lost."""

from __future__ import annotations

import os
import signal
import time

import pexpect
import pytest

from rewind_daemon import paths, records
from rewind_daemon.client import process_running
from rewind_daemon.store import Store

from .conftest import daemon_pid, rw, rw_json, steps_of, wait_for


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
    assert steps[1]["ended_at"] is not None and steps[1]["exit_code"] is None


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

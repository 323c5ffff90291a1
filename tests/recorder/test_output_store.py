"""Recorded output, stored: `rw record` with rw's hooks and marks printed by the
test's rc file (as the hooks will print them), the real daemon and store."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pexpect
import pytest

from ..conftest import RW, daemon_pid, rw, rw_json, wait_for, write_config

# rw's hooks, and the marks keyed on the hooks' session and step numbers (the
# C mark is printed before the hooks number the step: hence the + 1).
HOOKED = {
    "bash": r"""
eval "$(command rw init bash)"
__t=${RW_RECORD%%:*}
PS0=$PS0'\e]133;C;rw=${__t}:${__rw_sid}:$((__rw_seq+1))\a'
__d() {
  local s=$?
  printf '\e]133;D;%s;rw=%s:%s:%s\a\e]133;A;rw=%s:%s:\a' \
    "$s" "$__t" "$__rw_sid" "$__rw_seq" "$__t" "$__rw_sid"
  return $s
}
PROMPT_COMMAND=(__d "${PROMPT_COMMAND[@]}")
""",
    "zsh": r"""
eval "$(command rw init zsh)"
__t=${RW_RECORD%%:*}
preexec() { printf '\e]133;C;rw=%s:%s:%s\a' $__t $__rw_sid $((__rw_seq+1)); }
precmd() {
  local s=$?
  printf '\e]133;D;%s;rw=%s:%s:%s\a\e]133;A;rw=%s:%s:\a' \
    $s $__t $__rw_sid $__rw_seq $__t $__rw_sid
}
""",
}
TOKEN = "ghp_" + "Zx9" * 12  # a GitHub token, as redact.py's rules know them
BAR = r"printf '  0%%\r 50%%\r100%%\n'"


def only_session() -> str:
    sessions = rw_json("sessions")
    assert len(sessions) == 1, sessions
    return sessions[0]["id"]


def stored_output(sid: str, step: int) -> dict:
    return rw_json("show", sid, str(step))


def wait_output(sid: str, step: int, timeout: float = 20) -> dict:
    def ready():
        doc = stored_output(sid, step)
        return doc if doc["output"] is not None else None

    return wait_for(ready, timeout)


def raw_of(sid: str, step: int) -> bytes:
    """`rw show --raw` into a pipe: the bytes as they are."""
    return subprocess.run(
        [RW, "show", sid, str(step), "--raw"], capture_output=True, check=True
    ).stdout


def database_bytes(rw_home) -> bytes:
    return b"".join(
        (rw_home / "data" / n).read_bytes()
        for n in ("rw.db", "rw.db-wal")
        if (rw_home / "data" / n).exists()
    )


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_each_steps_output_is_stored_as_text_and_exact_bytes(daemon, recorded, kind):
    sh = recorded(kind, rc=HOOKED[kind])
    sh.run("echo one; echo two >&2")
    sh.run(r"printf '\033[31mred\033[0m plain\n'")
    sh.run(BAR)
    sh.run("true")
    sh.run(f"echo token {TOKEN} printed")
    sh.run("echo last")
    sid = only_session()
    steps = rw_json("log", sid)
    assert [s["command"] for s in steps][:2] == ["echo one; echo two >&2", steps[1]["command"]]
    first = wait_output(sid, 1)
    assert first["output"] == "one\ntwo\n"
    assert first["output_bytes"] == len(b"one\r\ntwo\r\n")
    assert first["output_truncated"] is False
    red = wait_output(sid, 2)
    assert red["output"] == "red plain\n"
    assert raw_of(sid, 2) == b"\x1b[31mred\x1b[0m plain\r\n"  # into a pipe: exact
    bar = wait_output(sid, 3)
    assert bar["output"] == "100%\n"
    assert raw_of(sid, 3) == b"  0%\r 50%\r100%\r\n"
    assert wait_output(sid, 4)["output"] == ""
    secret = wait_output(sid, 5)
    assert TOKEN not in secret["output"] and "token " in secret["output"]
    assert wait_output(sid, 6)["output"] == "last\n"
    assert rw("show", sid, "6", "--output").stdout == "last\n"
    shown = rw("show", sid, "5").stdout
    assert "output" in shown and TOKEN not in shown and TOKEN.encode() not in raw_of(sid, 5)
    sh.exit_status()
    wait_for(lambda: not list((daemon / "data" / "spool").glob("*.output")) or None, 30)
    assert TOKEN.encode() not in database_bytes(daemon)
    rw("daemon", "stop")
    assert TOKEN.encode() not in database_bytes(daemon)


def test_the_daemon_killed_mid_ingest_loses_and_duplicates_nothing(rw_home, recorded):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    sh = recorded("bash", rc=HOOKED["bash"])
    # ~300 kB each, spooled while no daemon runs; in colour, so that the text is
    # made and stored apart from the bytes (plain output is ingested too fast)
    colour = """awk '{printf "\\033[1m%s\\033[0m\\n", $0}'"""
    for i in range(1, 31):
        sh.run(f"seq {i} {i + 20000} | {colour}")
    sh.exit_status()
    db = rw_home / "data" / "rw.db"

    def stored() -> int:
        if not db.exists():
            return 0
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            return con.execute("SELECT count(*) FROM step_outputs").fetchone()[0]
        except sqlite3.OperationalError:  # no table yet
            return 0
        finally:
            con.close()

    def killed(when) -> int:
        """Start the daemon, kill it once `when()` says, and how many are stored."""
        (rw_home / "run" / "daemon.pid").unlink(missing_ok=True)
        start = subprocess.Popen([RW, "daemon", "start"], stderr=subprocess.DEVNULL)
        pid = wait_for(lambda: daemon_pid(rw_home), 20)  # written before it ingests
        when()
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda p=pid: dead(p) or None)
        start.kill()  # (it waits for the daemon's answer, which will not come)
        start.wait(30)
        return stored()

    def dead(pid: int) -> bool:
        """Gone, or a zombie (its files closed; its parent, `rw daemon start`,
        would reap it only when it gives up waiting, seconds later)."""
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            return True

    # Killed once its first transaction is seen (all of it may be stored in 150
    # ms, its three transactions within 30 ms: a kill at a fixed time may miss
    # them all), then later each time, by 10 ms, until a kill finds all of it
    # stored.
    counts = [killed(lambda: wait_for(lambda: stored() > 0 or None, 60, interval=0.001))]
    assert 0 < counts[0] < 31, counts  # killed mid-ingest
    delay = 0.0
    while counts[-1] < 31 and delay < 5:
        counts.append(killed(lambda d=delay: time.sleep(d)))
        assert counts == sorted(counts), counts  # (nothing stored is lost)
        delay += 0.01
    rw("daemon", "start")
    sid = only_session()
    for i in range(1, 31):
        doc = wait_output(sid, i)
        assert doc["output"] == "".join(f"{n}\n" for n in range(i, i + 20001)), i
    assert stored() == len(rw_json("log", sid)) == 31  # (the exit too)


def test_the_per_step_cap_keeps_the_first_and_last_lines(rw_home, recorded):
    write_config(rw_home, "[record]\nmax_step_output = 2000\n")
    rw("daemon", "start")
    sh = recorded("bash", rc=HOOKED["bash"])
    sh.run("seq 1 1000 >/dev/null; seq 1 2000")
    sid = only_session()
    doc = wait_output(sid, 1)
    lines = doc["output"].splitlines()
    assert lines[0] == "1" and lines[-1] == "2000"
    assert doc["output_truncated"] is True
    printed = sum(len(f"{n}\r\n") for n in range(1, 2001))
    assert doc["output_bytes"] == printed
    assert len(raw_of(sid, 1)) <= 2000
    assert "left out" in rw("show", sid, "1").stdout


def test_show_prints_the_tail_and_output_prints_all(daemon, recorded):
    sh = recorded("zsh", rc=HOOKED["zsh"])
    sh.run("seq 1 50")
    sid = only_session()
    wait_output(sid, 1)
    shown = rw("show", sid, "1").stdout
    assert "\n".join(str(n) for n in range(31, 51)) + "\n" in shown
    assert "\n30\n" not in shown and "last 20 lines" in shown
    assert rw("show", sid, "1", "--output").stdout == "".join(f"{n}\n" for n in range(1, 51))
    both = rw("show", sid, "1", "--output", "--raw", check=False)
    assert both.returncode == 2 and len(both.stderr.splitlines()) == 1
    # To a terminal, --raw ends with a reset (colours off, the main screen, a cursor).
    term = pexpect.spawn(RW, ["show", sid, "1", "--raw"], env=dict(os.environ))
    term.expect(pexpect.EOF)
    assert term.before.endswith(b"50\r\r\n\x1b[0m\x1b[?1049l\x1b[?25h")  # (onlcr)


def test_gc_drops_the_oldest_output_over_the_quota(rw_home, recorded):
    rw("daemon", "start")
    sh = recorded("bash", rc=HOOKED["bash"])
    for i in range(1, 6):
        sh.run(f"head -c 30000 /dev/urandom | base64 -w 100; echo step{i}")
    sid = only_session()
    for i in range(1, 6):
        wait_output(sid, i)
    db = sqlite3.connect(rw_home / "data" / "rw.db")
    sizes = dict(
        db.execute(
            "SELECT number, length(raw) + length(text) + coalesce(length(timing), 0)"
            " FROM step_outputs"
        ).fetchall()
    )
    db.close()
    quota = sizes[4] + sizes[5] + 100
    write_config(rw_home, f"[record]\nmax_total_output = {quota}\n")
    dry = rw("gc", "--dry-run").stdout
    assert "3 step(s)" in dry
    assert wait_output(sid, 1)["output"] is not None
    out = rw("gc").stdout
    assert "recorded output of 3 step(s)" in out
    assert [stored_output(sid, i)["output"] is None for i in range(1, 6)] == [
        True, True, True, False, False,
    ]  # fmt: skip
    assert len(rw_json("log", sid)) >= 5  # the steps stay
    assert stored_output(sid, 5)["output"].endswith("step5\n")

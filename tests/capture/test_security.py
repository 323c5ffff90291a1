"""Security: a private socket, peer uid checked, and hostile input that
leaves the daemon up and the store unchanged."""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import socket
import sqlite3
import stat
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

from rewind_daemon.capture import records

from ..conftest import daemon_pid, kill_daemon, rw, steps_of

CONNECT = """
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print("connect-failed", e.errno); sys.exit(0)
try:
    s.sendall(b'{"op": "ping"}\\n')
    data = s.recv(1000)
except OSError:  # the daemon may hang up before we even send
    data = b""
print("reply", data.decode() or "<closed>")
"""


def as_nobody(*args: str) -> str:
    setpriv = shutil.which("setpriv")
    assert setpriv, "setpriv (util-linux) is required"
    proc = subprocess.run(
        [setpriv, "--reuid=65534", "--regid=65534", "--clear-groups", *args],
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


@pytest.fixture
def open_home(monkeypatch):
    """An RW_HOME whose parent directories another user may traverse."""
    root = Path(tempfile.mkdtemp(prefix="rw-sec-", dir="/tmp"))
    root.chmod(0o755)
    monkeypatch.setenv("RW_HOME", str(root))
    yield root
    kill_daemon(root)
    shutil.rmtree(root, ignore_errors=True)


def test_socket_and_runtime_dir_are_private(daemon):
    run_dir = daemon / "run"
    assert stat.S_IMODE(run_dir.stat().st_mode) == 0o700
    assert stat.S_IMODE((run_dir / "daemon.sock").stat().st_mode) == 0o600
    assert stat.S_IMODE((daemon / "data").stat().st_mode) == 0o700
    assert stat.S_IMODE((daemon / "data" / "rw.db").stat().st_mode) & 0o077 == 0


@pytest.mark.skipif(os.getuid() != 0, reason="switching uid needs root (CI runs as root)")
def test_another_uid_cannot_connect(open_home):
    rw("daemon", "start")
    sock = str(open_home / "run" / "daemon.sock")
    python = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") else shutil.which("python3")
    # As installed: the 0700 directory and 0600 socket keep the other user out.
    out = as_nobody(python, "-c", CONNECT, sock)
    assert out.startswith("connect-failed 13"), out
    # Even with the file permissions opened up, the daemon checks the peer's
    # uid (SO_PEERCRED) and hangs up without answering.
    (open_home / "run").chmod(0o755)
    os.chmod(sock, 0o666)
    out = as_nobody(python, "-c", CONNECT, sock)
    assert out == "reply <closed>", out
    log = (open_home / "data" / "daemon.log").read_text()
    assert "refused connection from uid 65534" in log
    assert rw("daemon", "status").returncode == 0


def dump_store(home: Path) -> list:
    db = sqlite3.connect(f"file:{home / 'data' / 'rw.db'}?mode=ro", uri=True)
    try:
        return [
            db.execute("SELECT * FROM sessions ORDER BY id").fetchall(),
            db.execute("SELECT * FROM steps ORDER BY session, number").fetchall(),
            db.execute("SELECT id, hash FROM envs ORDER BY id").fetchall(),
        ]
    finally:
        db.close()


def hostile_messages(rng: random.Random, n: int):
    valid_ops = ["ping", "status", "sync"]
    for i in range(n):
        kind = i % 8
        if kind == 0:
            yield bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 300))) + b"\n"
        elif kind == 1:
            yield b'{"op": ' + str(rng.random()).encode() + b"\n"
        elif kind == 2:
            yield json.dumps([1, 2, {"op": "stop"}]).encode() + b"\n"
        elif kind == 3:
            yield json.dumps({"op": f"no-such-op-{i}"}).encode() + b"\n"
        elif kind == 4:
            yield json.dumps({"op": "name", "session": i, "name": None}).encode() + b"\n"
        elif kind == 5:
            yield json.dumps({"op": "name", "session": f"nope-{i}", "name": "x"}).encode() + b"\n"
        elif kind == 6:
            yield b"\x00\xff\xfe" * rng.randint(1, 50) + b"\n"
        else:
            yield json.dumps({"op": rng.choice(valid_ops), "junk": "x" * 100}).encode() + b"\n"


def test_ten_thousand_malformed_messages_leave_daemon_up_and_store_unchanged(daemon, shells):
    home = daemon
    sh = shells("bash")
    for i in range(5):
        sh.run(f"echo keep-{i}")
    sid = sh.session_id()
    before = dump_store(home)
    pid = daemon_pid(home)
    rng = random.Random(1234)
    sock_path = str(home / "run" / "daemon.sock")

    # 10,000 messages over a handful of connections, without reading replies
    # fast (the daemon must cope with a slow reader too)
    messages = list(hostile_messages(rng, 10_000))
    for batch in range(0, len(messages), 500):
        s = socket.socket(socket.AF_UNIX)
        s.settimeout(10)
        s.connect(sock_path)
        s.sendall(b"".join(messages[batch : batch + 500]))
        s.shutdown(socket.SHUT_WR)
        while s.recv(65536):
            pass
        s.close()
    # an oversized request, and a connection that sends garbage and vanishes
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    try:
        s.sendall(b"x" * (3 * 1024 * 1024))
    except OSError:
        pass
    s.close()
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b'{"op": "pi')
    s.close()

    # malformed spool records: garbage, truncated, wrong field counts,
    # unknown types, steps of unknown sessions, ends without beginnings
    spool = home / "data" / "spool" / "hostile.spool"
    junk = [
        bytes(rng.getrandbits(8) for _ in range(2000)),
        records.MAGIC + b"B\x00only\x00two",
        records.encode("B", "no-such-session", "1", "1.0", "/", "x"),
        records.encode("E", sid, "999", "1.0", "0", "0", "/", "declare", ""),
        records.encode("Q", "what"),
        records.encode("S", "short"),
        records.encode("B", sid, "not-a-number", "1.0", "/", "x"),
        records.encode("E", sid, "1", "1.0", "0", "0", "/", "list", "5", "A=1"),
        records.MAGIC + b"E\x00" + b"y" * 100,
    ]
    spool.write_bytes(b"".join(junk))
    rw("daemon", "status")

    assert daemon_pid(home) == pid
    assert rw("daemon", "status").returncode == 0
    assert dump_store(home) == before
    # and it still records
    sh.run("echo still-recording")
    assert steps_of(sid)[-1]["command"] == "echo still-recording"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and "dropped" not in (home / "data/daemon.log").read_text():
        time.sleep(0.05)
    assert "dropped" in (home / "data" / "daemon.log").read_text()


def _connect(home: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(10)
    s.connect(str(home / "run" / "daemon.sock"))
    return s


def _ask(s: socket.socket, line: bytes) -> dict:
    """Send one request line and read its one-line reply."""
    s.sendall(line + b"\n")
    buf = b""
    while not buf.endswith(b"\n"):
        chunk = s.recv(65536)
        assert chunk, f"the daemon hung up on {line[:40]!r}"
        buf += chunk
    return json.loads(buf)


def test_deep_nesting_and_bad_arguments_get_an_error_and_the_daemon_keeps_serving(daemon):
    home = daemon
    pid = daemon_pid(home)
    s = _connect(home)
    hostile = [
        b"[" * 1000,  # RecursionError in json.loads
        b'{"a":' * 5000,
        b"[" * 60_000,
        b'{"op": "name", "session": 1, "name": "x"}',
        b'{"op": "name", "session": "s", "name": "a\\u0000b"}',
        b'{"op": "name", "session": "s", "name": "\\ud800"}',
        b'{"op": "name", "session": "s", "name": ["x"]}',
        b'{"op": "branch", "session": "s", "step": "1"}',
        b'{"op": "branch", "session": "s", "step": true}',
        b'{"op": "branch", "session": "s", "step": 1e400}',
        b'{"op": "branch", "session": "s", "step": 99999999999999999999999}',
        b'{"op": "branch", "session": "s", "step": 1, "name": {"x": 1}}',
        b'{"op": "gc", "dry_run": "no"}',
        b'{"op": "__init__"}',
        b'{"op": "ping\\u0000"}',
        b'{"op": ["ping"]}',
        b"9" * 5000,  # over Python's digit limit for int()
    ]
    for line in hostile:
        reply = _ask(s, line)
        assert reply["ok"] is False and reply["error"], (line[:40], reply)
        assert _ask(s, b'{"op": "ping"}')["pid"] == pid  # the same connection still works
    # The same malformed request a thousand times is logged once, not a thousand times.
    s.sendall(b"[" * 1000 + b"\n" + (b"[[[\n" * 999))
    reply = b""
    while reply.count(b"\n") < 1000:
        reply += s.recv(65536)
    s.close()
    assert daemon_pid(home) == pid
    assert rw("daemon", "status").returncode == 0
    assert (home / "data" / "daemon.log").read_text().count("malformed request") == 1


def test_a_client_that_never_reads_or_floods_does_not_block_others(daemon):
    home = daemon
    pid = daemon_pid(home)
    hog = _connect(home)
    hog.setblocking(False)
    sent = 0
    try:  # requests until its socket is full, never reading a reply
        while sent < 64 * 1024 * 1024:
            sent += hog.send(b'{"op": "status"}\n' * 1000)
    except BlockingIOError:
        pass
    # and one that pipelines 20,000 requests (reading its replies while it sends)
    flood = _connect(home)
    sender = threading.Thread(target=flood.sendall, args=(b'{"op": "ping"}\n' * 20_000,))
    sender.start()
    for _ in range(20):
        start = time.monotonic()
        s = _connect(home)
        assert _ask(s, b'{"op": "ping"}')["pid"] == pid
        s.close()
        assert time.monotonic() - start < 1.0  # today: 2 s, blocked on the one that never reads
    answers = b""
    while answers.count(b"\n") < 20_000:
        answers += flood.recv(65536)
    sender.join()
    assert answers.count(b'"ok": true') == 20_000
    flood.close()
    hog.close()
    # and a request without an end of line that keeps growing is cut off
    s = _connect(home)
    try:
        s.sendall(b"x" * (4 * 1024 * 1024))
    except OSError:
        pass  # the daemon hung up before taking it all
    s.close()
    assert _ask(_connect(home), b'{"op": "ping"}')["pid"] == pid


def test_many_idle_connections_do_not_lock_others_out(daemon):
    """Connections that stay open and silent must not use up the daemon's file
    descriptors: the idlest is hung up on to make room for a new one."""
    home = daemon
    pid = daemon_pid(home)
    hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)[1]
    resource.prlimit(pid, resource.RLIMIT_NOFILE, (256, hard))
    idle = []
    try:
        deadline = time.monotonic() + 30  # (a loaded machine: the daemon accepts slowly)
        while len(idle) < 401 and time.monotonic() < deadline:
            try:
                idle.append(_connect(home))
            except BlockingIOError:  # its backlog is full: it must accept some first
                time.sleep(0.01)
        s = idle.pop()  # the 401st: its ping must be answered
        s.settimeout(3)
        assert _ask(s, b'{"op": "ping"}')["pid"] == pid
        assert len(idle) == 400
    finally:
        for c in idle:
            c.close()
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (hard, hard))
    assert (home / "data" / "daemon.log").read_text().count("accept failed") <= 1

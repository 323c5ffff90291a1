"""Talking to the daemon: requests over its socket, and starting it."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys
import time

from ..errors import DaemonUnavailable
from ..paths import Paths, ensure_private_dir

STOPPED = "the daemon was stopped on purpose (rw daemon stop); start it with: rw daemon start"


def request(paths: Paths, op: str, timeout: float = 5.0, **fields: object) -> dict:
    """Send one request and return the reply; raises DaemonUnavailable when down."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        sock.connect(str(paths.socket))
        sock.sendall(json.dumps({"op": op, **fields}).encode() + b"\n")
        buf = b""
        while b"\n" not in buf:
            chunk = sock.recv(65536)
            if not chunk:
                raise DaemonUnavailable("the daemon closed the connection")
            buf += chunk
    except (OSError, socket.timeout) as e:
        raise DaemonUnavailable(f"the daemon is not reachable at {paths.socket}: {e}") from None
    finally:
        sock.close()
    reply = json.loads(buf.split(b"\n", 1)[0])
    if not reply.get("ok"):
        raise DaemonUnavailable(f"the daemon refused {op}: {reply.get('error')}")
    return reply


def process_running(pid: int) -> bool:
    """True while `pid` exists and is not a zombie waiting for its parent."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            state = fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return state not in (b"Z", b"X")


def ping(paths: Paths, timeout: float = 1.0) -> dict | None:
    try:
        return request(paths, "ping", timeout=timeout)
    except DaemonUnavailable:
        return None


def lock_held(paths: Paths) -> bool:
    """Whether a daemon holds its lock: it runs, even when too busy to answer a ping."""
    try:
        fd = os.open(paths.lock_file, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        # A shared lock, dropped at once: it conflicts only with the daemon's.
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def daemon_pid(paths: Paths) -> int | None:
    """The pid the daemon wrote (None: no pid file, or not a pid)."""
    try:
        text = paths.pid_file.read_text()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.strip().isdigit() else None


def _state(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[0]
    except (OSError, IndexError):
        return b""


def stopped(paths: Paths) -> str | None:
    """Why the daemon cannot answer at all, found without asking it: its process
    is stopped (SIGSTOP, Ctrl-Z). None otherwise."""
    pid = daemon_pid(paths)
    if pid is None or _state(pid) not in (b"T", b"t") or not lock_held(paths):
        return None
    return f"the daemon (pid {pid}) is stopped (SIGSTOP); kill -CONT {pid} lets it go on"


def not_answering(paths: Paths) -> str | None:
    """Why a daemon that runs did not answer (stopped, or busy); None when none
    runs (no process holds its lock)."""
    if not lock_held(paths):
        return None
    pid = daemon_pid(paths)
    return stopped(paths) or (
        f"the daemon ({'pid ' + str(pid) if pid else 'its pid unknown'}) is running but"
        f" busy or not answering; see {paths.log_file}"
    )


def stopped_on_purpose(paths: Paths) -> bool:
    """Whether `rw daemon stop` said the daemon stays stopped (until `rw daemon start`)."""
    return paths.stop_file.exists()


def end_stop(paths: Paths) -> None:
    """`rw daemon start`: the daemon is no longer stopped on purpose."""
    try:
        paths.stop_file.unlink(missing_ok=True)
    except OSError as e:
        raise DaemonUnavailable(f"cannot let the daemon start again: {e}") from None


def spawn(paths: Paths, explicit: bool = False) -> None:
    """Start the daemon in the background, detached from this process, unless
    one is running already (a second one would only find the lock held), or
    it was stopped on purpose and this is not `rw daemon start` (`explicit`,
    which ends that)."""
    if explicit:
        end_stop(paths)
    elif stopped_on_purpose(paths):
        return
    if lock_held(paths):
        return
    ensure_private_dir(paths.runtime_dir)
    ensure_private_dir(paths.data_dir)
    fd = os.open(paths.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    log = os.fdopen(fd, "ab", buffering=0)  # noqa: SIM115 - handed to the child
    try:
        subprocess.Popen(
            [sys.executable, "-m", "rewind_daemon", "daemon", "run", "--quiet"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=log,
            start_new_session=True,
            close_fds=True,
            cwd="/",
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    finally:
        log.close()


def ensure_running(paths: Paths, wait: float = 5.0, explicit: bool = False) -> dict:
    """Ping the daemon, starting it if none runs; raise when it does not answer,
    or when it was stopped on purpose and this is not `rw daemon start`."""
    reply = ping(paths)
    if reply:
        if explicit:
            end_stop(paths)
        return reply
    if not explicit and stopped_on_purpose(paths):
        raise DaemonUnavailable(STOPPED)
    spawn(paths, explicit)
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(0.02)
        reply = ping(paths, timeout=0.5)
        if reply:
            return reply
    if lock_held(paths):
        raise DaemonUnavailable(
            f"the daemon is running but did not answer within {wait:.0f}s (busy?); try again,"
            f" or see {paths.log_file}"
        )
    raise DaemonUnavailable(f"the daemon did not start; see {paths.log_file}")


def stop(paths: Paths, wait: float = 5.0) -> int | None:
    """Ask the daemon to stop, and to stay stopped until `rw daemon start`: the
    shells' autostart and other commands leave it so. Return its pid, or None
    when it was not running."""
    ensure_private_dir(paths.data_dir)
    try:
        fd = os.open(
            paths.stop_file, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600
        )
        os.close(fd)
    except OSError as e:
        raise DaemonUnavailable(f"cannot note that the daemon stays stopped: {e}") from None
    reply = ping(paths)
    if not reply:
        return None
    request(paths, "stop")
    pid = int(reply["pid"])
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        if not process_running(pid):
            return pid
        time.sleep(0.01)
    raise DaemonUnavailable(f"the daemon (pid {pid}) did not stop within {wait:.0f}s")

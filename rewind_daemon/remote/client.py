"""The local side of a guarded run on another host: the user's own ssh carries
the bundle (when the remote lacks it), the request and the halt; the remote's
output, notes, report and recorded run come back as frames.

rw runs the real `ssh` program (RW_SSH names another, with options), so the
user's ~/.ssh/config, agent, jump hosts and ControlMaster all apply. ssh is
started with SIGINT and SIGQUIT ignored, which OpenSSH keeps (it installs its
handlers only over a default disposition): Ctrl-C reaches rw alone, which asks
the remote breaker to halt and roll back instead of cutting the connection.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import select
import shlex
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from ..config import Config
from ..errors import EXIT_PROBLEM, EXIT_USAGE, RwError
from ..guard.runner import GuardReport, GuardRequest
from . import wire
from .agent import config_to_wire
from .bootstrap import NO_PYTHON, no_python_line, remote_command
from .bundle import Bundle, bundle

SSH_FAILED = 255  # ssh's own exit status when it could not connect or lost the connection
# A destination as ssh takes it ([user@]host, an alias, ssh://...): never an option.
_DESTINATION = re.compile(r"[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]{0,254}")
Notify = Callable[[str], None]


def check_destination(destination: str) -> str:
    if not _DESTINATION.fullmatch(destination):
        raise RwError(f"--host {destination!r}: not a host to connect to ([USER@]HOST)")
    return destination


def ssh_program(ssh_config: str | None = None) -> list[str]:
    """The ssh command line before the destination: RW_SSH (split as a shell
    would) or `ssh`, and -F FILE for --ssh-config."""
    raw = os.environ.get("RW_SSH") or "ssh"
    try:
        argv = shlex.split(raw)
    except ValueError as e:
        raise RwError(f"RW_SSH: {e}") from None
    if not argv:
        raise RwError("RW_SSH is empty: name the ssh program to use")
    if ssh_config is not None:
        if not os.path.isfile(ssh_config):
            raise RwError(f"--ssh-config {ssh_config}: no such file")
        argv += ["-F", ssh_config]
    return argv


@dataclass
class RemoteRun:
    destination: str
    report: GuardReport | None = None
    run: dict = field(default_factory=dict)  # the run as the remote recorded it
    sent_bundle: bool = False  # the remote had no bundle of this version: it got one
    python: str = ""
    where: str = ""  # the bundle's directory there
    lost: str = ""  # why no report came back (the run goes on there)

    @property
    def exit_code(self) -> int:
        return self.report.exit_code if self.report is not None else EXIT_PROBLEM


def _ignore_interrupts() -> None:
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_IGN)


class _Connection:
    def __init__(self, argv: list[str]):
        try:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                bufsize=0, preexec_fn=_ignore_interrupts, close_fds=True,
            )  # fmt: skip
        except OSError as e:
            raise RwError(f"cannot run {argv[0]}: {e.strerror}") from None
        self.errors: list[str] = []
        self.no_python = False  # the remote said it has no Python to run rw
        self.show_errors: Notify | None = None
        self.lock = threading.Lock()
        self.err_thread = threading.Thread(target=self._read_errors, daemon=True)
        self.err_thread.start()

    def _read_errors(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            with self.lock:
                if self.show_errors is None:
                    self.errors.append(line)
                    continue
                show = self.show_errors
            show(line)

    def connected(self, show: Notify) -> None:
        """Past the connection: what ssh and the remote say on stderr is shown."""
        with self.lock:
            self.show_errors = show
            held, self.errors = self.errors, []
        for line in held:
            show(line)

    def send(self, data: bytes) -> bool:
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write(data)
            return True
        except (BrokenPipeError, OSError):
            return False

    def last_error(self) -> str:
        self.err_thread.join(2)
        with self.lock:
            lines = [x for x in self.errors if not x.startswith("Warning: Permanently added")]
        return lines[-1] if lines else ""

    def close(self) -> int:
        try:
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        except OSError:
            pass
        try:
            return self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            return self.proc.wait()


class _Interrupts:
    """Ctrl-C, SIGTERM and SIGHUP here: the first asks the remote to halt, a
    later Ctrl-C stops waiting for it."""

    def __init__(self) -> None:
        self.count = 0
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.saved: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self.saved[sig] = signal.signal(sig, self._handle)

    def _handle(self, _signum, _frame) -> None:
        self.count += 1
        try:
            os.write(self.wake_w, b"x")
        except OSError:
            pass

    def close(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        os.close(self.wake_r)
        os.close(self.wake_w)


def guard_remote(
    destination: str,
    config: Config,
    request: GuardRequest | None,
    *,
    ssh: list[str],
    out_fd: int | None,
    notify: Notify,
    the_bundle: Bundle | None = None,
) -> RemoteRun:
    """Run `request` under the breaker on `destination`: its paths and command
    are the remote's (`~` its user's home). Raises RwError (exit 2) when the
    host cannot be reached or has no Python to run rw. With no request, the
    report of the last guarded run there is fetched (waited for while it runs)."""
    check_destination(destination)
    b = the_bundle or bundle()
    nonce = secrets.token_hex(8)
    argv = [*ssh, "-T", "-e", "none", "--", destination, remote_command(b, nonce)]
    conn = _Connection(argv)
    result = RemoteRun(destination)
    interrupts = _Interrupts()
    try:
        _talk(conn, result, b, nonce, config, request, out_fd, notify, interrupts)
    finally:
        interrupts.close()
        status = conn.close()
    if result.report is None and not result.lost:
        _no_run(conn, result, status, nonce)
    return result


def _no_run(conn: _Connection, result: RemoteRun, status: int, nonce: str) -> None:
    why = conn.last_error()
    dest = result.destination
    if status == NO_PYTHON and conn.no_python:
        raise RwError(
            f"{dest}: no Python 3.9 or later to run rw there (python3 on the PATH of "
            "its non-interactive shell)",
            EXIT_USAGE,
        )
    if not result.python:
        raise RwError(f"{dest}: cannot connect: {why or f'ssh exited {status}'}", EXIT_USAGE)
    result.lost = why or f"ssh exited {status}"


def _talk(
    conn: _Connection,
    result: RemoteRun,
    b: Bundle,
    nonce: str,
    config: Config,
    request: GuardRequest | None,
    out_fd: int | None,
    notify: Notify,
    interrupts: _Interrupts,
) -> None:
    assert conn.proc.stdout is not None
    out = conn.proc.stdout.fileno()
    start = wire.start_line(nonce)[1:]
    before = b""  # what the remote's shell printed before rw's frames
    parser: wire.Parser | None = None
    asked_halt = False
    while True:
        ready, _, _ = select.select([out, interrupts.wake_r], [], [])
        if interrupts.wake_r in ready:
            os.read(interrupts.wake_r, 64)
            if interrupts.count >= 2 and asked_halt:
                result.lost = "stopped waiting (Ctrl-C); the rollback goes on there"
                conn.proc.terminate()
                return
            if not asked_halt:
                asked_halt = True
                notify("halting there and rolling back (Ctrl-C again: stop waiting)")
                conn.send(wire.json_frame(wire.HALT, {"why": "interrupted here"}))
        if out not in ready:
            continue
        data = os.read(out, 65536)
        if not data:
            if parser is not None and result.report is None and not result.lost:
                result.lost = "the connection was lost"
            return
        if parser is None:
            before += data
            if no_python_line(nonce).encode() in before:
                conn.no_python = True
                continue
            at = before.find(start)
            if at < 0:
                before = before[-4096:]
                continue
            parser = wire.Parser()
            data = before[at + len(start) :]
        try:
            frames = parser.feed(data)
        except wire.WireError as e:
            result.lost = f"the remote rw said what is not a frame ({e})"
            conn.proc.terminate()
            return
        for kind, payload in frames:
            _frame(kind, payload, conn, result, b, config, request, out_fd, notify)


def _frame(
    kind: str,
    payload: bytes,
    conn: _Connection,
    result: RemoteRun,
    b: Bundle,
    config: Config,
    request: GuardRequest | None,
    out_fd: int | None,
    notify: Notify,
) -> None:
    if kind == wire.OUT:
        if out_fd is not None:
            _write_all(out_fd, payload)
        return
    doc = json.loads(payload)
    if kind == wire.HELLO:
        result.python, result.where = doc.get("python", ""), doc.get("dir", "")
        conn.connected(lambda line: notify(f"ssh: {line}"))
        if not doc.get("cached"):
            notify(f"sending rw {b.version} ({len(b.data) // 1024} KiB) to {result.where}")
            result.sent_bundle = True
            conn.send(wire.frame(wire.BUNDLE, b.data))
        ask = {"attach": True} if request is None else {
            "request": request.to_json(), "config": config_to_wire(config)
        }  # fmt: skip
        conn.send(wire.json_frame(wire.REQUEST, ask))
    elif kind == wire.NOTE:
        notify(str(doc.get("message", "")))
    elif kind == wire.REPORT:
        result.report = GuardReport.from_json(doc)
    elif kind == wire.SESSION:
        result.run = doc if isinstance(doc, dict) else {}
    elif kind == wire.ERROR:
        code = doc.get("exit_code")
        raise RwError(
            f"{result.destination}: {doc.get('message')}",
            code if isinstance(code, int) and 1 <= code <= 3 else EXIT_USAGE,
        )


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except OSError:
            return

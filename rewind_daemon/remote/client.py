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

import io
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
from ..guard.process import _Terminal as UserTerminal
from ..guard.runner import GuardReport, GuardRequest
from . import checks, wire
from .agent import config_to_wire
from .bootstrap import NO_PYTHON, no_python_line, remote_command
from .bundle import Bundle, bundle

INPUT_WINDOW = 1024 * 1024  # bytes of input sent and not yet taken there, at most
SSH_FAILED = 255  # ssh's own exit status when it could not connect or lost the connection
CONNECTION_LOST = "the connection was lost"
# A destination as ssh takes it ([user@]host, an alias, ssh://...): never an option.
_DESTINATION = re.compile(r"[^\s\x00-\x1f\x7f-][^\s\x00-\x1f\x7f]{0,254}")
Notify = Callable[[str], None]
Output = Callable[[bytes], None]
Take = Callable[[bytes], object]  # stores one pulled session as it arrives
HELD_ERRORS = 200  # lines of ssh's stderr kept until the remote answers (the last ones)
Earlier = Callable[[dict], None]  # a run there whose report did not come back, as recorded


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
    take: Take | None = None  # rw pull: each session there, as it arrives
    max_pull: int = checks.MAX_PULL  # rw pull: bytes of sessions taken at most
    pulled: int = 0  # rw pull: bytes of sessions taken
    ended: bool = False  # the remote said all it had to say (rw pull)
    lost: str = ""  # why no report came back
    going_on: bool = False  # the run goes on there under its breaker (the connection went)
    input_in_flight: int = 0  # bytes of input read here and not yet taken there

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
        # Buffered: the pipe is unbuffered (bufsize=0), whose readline reads a byte at a time.
        stderr = io.BufferedReader(self.proc.stderr)  # type: ignore[type-var]
        for raw in iter(lambda: stderr.readline(4096), b""):  # (a line without end: in pieces)
            line = raw.decode(errors="replace").rstrip()
            if not line:
                continue
            with self.lock:
                if self.show_errors is None:
                    self.errors.append(line)
                    del self.errors[:-HELD_ERRORS]
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


class Stop:
    """Asks the runs in flight to halt and roll back: Ctrl-C, SIGTERM or SIGHUP
    here, or, in a fleet, another host that did not pass (stop the line). Asked
    again while they roll back (a second Ctrl-C), the runs stop waiting for
    their reports: the rollbacks go on there."""

    def __init__(self) -> None:
        self.asked = 0
        self.why = ""
        self.the_line = False  # first asked because another host did not pass
        self.resized = 0  # times the terminal here changed size (SIGWINCH)
        self._pipes: set[int] = set()  # write ends, one per run in flight
        self._saved: dict[int, object] = {}

    def catch_signals(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            self._saved[sig] = signal.signal(sig, self._signalled)
        self._saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, self._resized)

    def _resized(self, _signum, _frame) -> None:
        self.resized += 1
        self._wake()

    def release_signals(self) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._saved = {}

    def _signalled(self, signum, _frame) -> None:
        name = signal.Signals(signum).name
        self.ask("Ctrl-C here" if name == "SIGINT" else f"{name} here")

    def ask(self, why: str, the_line: bool = False) -> None:
        """Safe in a signal handler: no lock, a byte to each run's pipe."""
        if not self.asked:
            self.why, self.the_line = why, the_line
        self.asked += 1
        self._wake()

    def _wake(self) -> None:
        for w in list(self._pipes):
            try:
                os.write(w, b"x")
            except OSError:
                pass

    def listen(self) -> tuple[int, int]:
        r, w = os.pipe()
        os.set_blocking(w, False)
        self._pipes.add(w)
        if self.asked:
            os.write(w, b"x")
        return r, w

    def forget(self, pipe: tuple[int, int]) -> None:
        self._pipes.discard(pipe[1])
        os.close(pipe[0])
        os.close(pipe[1])


def terminal_size() -> list[int] | None:
    """[rows, columns] of the terminal here (stdout's, else stdin's), if any."""
    for fd in (1, 0):
        try:
            if os.isatty(fd):
                size = os.get_terminal_size(fd)
                return [size.lines, size.columns]
        except OSError:
            continue
    return None


def write_to(fd: int) -> Output:
    def write(data: bytes) -> None:
        _write_all(fd, data)

    return write


def guard_remote(
    destination: str,
    config: Config,
    request: GuardRequest | None,
    *,
    ssh: list[str],
    output: Output | None,
    notify: Notify,
    stop: Stop | None = None,
    the_bundle: Bundle | None = None,
    earlier: Earlier | None = None,
    keys_fd: int | None = None,
) -> RemoteRun:
    """Run `request` under the breaker on `destination`: its paths and command
    are the remote's (`~` its user's home); what it prints goes to `output`.
    Raises RwError (exit 2) when the host cannot be reached or has no Python to
    run rw, or while a run started there over ssh still goes on. With no
    request, the report of the last guarded run there is fetched (waited for
    while it runs). Runs there whose reports did not come back (the connection
    went) and that have ended since go to `earlier` first. What `keys_fd` (a
    terminal, taken raw as a local run takes it, or a pipe or file) gives goes
    to the command's terminal there. Without a `stop` of the caller's, Ctrl-C
    here halts the run there."""
    ask: dict = {"attach": True}
    if request is not None:
        ask = {"request": request.to_json(), "config": config_to_wire(config)}
        ask["size"] = terminal_size() if output is not None else None
    return talk_to(destination, ask, ssh=ssh, output=output, notify=notify, stop=stop,
                   the_bundle=the_bundle, earlier=earlier, keys_fd=keys_fd)  # fmt: skip


def pull_remote(
    destination: str,
    ref: str | None,
    *,
    ssh: list[str],
    notify: Notify,
    take: Take,
    max_bytes: int = checks.MAX_PULL,
) -> RemoteRun:
    """The sessions recorded on `destination` (or the one `ref` names there),
    each given to `take` as its JSON document arrives, so that what was taken
    stays whatever comes after it. A session over checks.MAX_DOCUMENT bytes, or
    one taking the whole past `max_bytes`, ends the pull with RwError (exit 2)."""
    return talk_to(destination, {"pull": ref}, ssh=ssh, output=None, notify=notify,
                   take=take, max_bytes=max_bytes)  # fmt: skip


def talk_to(
    destination: str,
    ask: dict,
    *,
    ssh: list[str],
    output: Output | None,
    notify: Notify,
    stop: Stop | None = None,
    the_bundle: Bundle | None = None,
    take: Take | None = None,
    max_bytes: int = checks.MAX_PULL,
    earlier: Earlier | None = None,
    keys_fd: int | None = None,
) -> RemoteRun:
    """Start rw on `destination` (shipping it when it is not there) and ask it
    `ask`; what comes back is in the RemoteRun (or given to `take`)."""
    check_destination(destination)
    b = the_bundle or bundle()
    nonce = secrets.token_hex(8)
    argv = [*ssh, "-T", "-e", "none", "--", destination, remote_command(b, nonce)]
    own = stop is None
    if stop is None:
        stop = Stop()
        stop.catch_signals()
    keyboard = Keyboard(keys_fd if "request" in ask else None)
    conn = _Connection(argv)
    result = RemoteRun(destination, take=take, max_pull=max_bytes)
    pipe = stop.listen()
    try:
        _talk(conn, result, b, nonce, ask, output, notify, stop, pipe[0], earlier, keyboard)
    finally:
        keyboard.restore()
        stop.forget(pipe)
        if own:
            stop.release_signals()
        status = conn.close()
    if result.report is None and not result.lost and not result.ended:
        _no_run(conn, result, status, nonce)
    elif result.report is None and result.lost == CONNECTION_LOST and 0 <= status != SSH_FAILED:
        result.lost = f"rw there ended without a report (exit status {status})"
        result.going_on = False
    return result


class Keyboard:
    """This rw's stdin for the command there. Taken only once the remote has
    answered: until then ssh may be asking on the terminal (a password, a
    passphrase, a host key), and the terminal is left as it is, Ctrl-C a
    signal. Then a terminal in the foreground is taken raw, as a local run
    takes it; a pipe or a file is read as it is; a terminal that is not rw's
    to read (in the background) is not read."""

    def __init__(self, fd: int | None):
        self.fd = fd
        self.terminal = UserTerminal(None)
        self.reading: int | None = None  # the fd read, once started

    def start(self) -> str | None:
        """Start reading: "terminal", "pipe", or None (nothing is read)."""
        if self.fd is None:
            return None
        try:
            os.fstat(self.fd)
        except OSError:
            return None
        self.terminal = UserTerminal(self.fd)
        if self.terminal.background or (os.isatty(self.fd) and not self.terminal.raw):
            return None
        self.reading = self.fd
        return "terminal" if self.terminal.raw else "pipe"

    def restore(self) -> None:
        self.terminal.restore()


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
    result.lost, result.going_on = why or f"ssh exited {status}", True


def _talk(
    conn: _Connection,
    result: RemoteRun,
    b: Bundle,
    nonce: str,
    ask: dict,
    output: Output | None,
    notify: Notify,
    stop: Stop,
    wake: int,
    earlier: Earlier | None,
    keyboard: Keyboard,
) -> None:
    assert conn.proc.stdout is not None
    out = conn.proc.stdout.fileno()
    start = wire.start_line(nonce)[1:]
    before = b""  # what the remote's shell printed before rw's frames
    parser: wire.Parser | None = None
    asked_halt = False
    resized = stop.resized
    while True:
        fds = [out, wake]
        keys = keyboard.reading
        if keys is not None and result.input_in_flight < INPUT_WINDOW:
            fds.append(keys)
        ready, _, _ = select.select(fds, [], [])
        if keys is not None and keys in ready:
            try:
                data = os.read(keys, 65536)
            except OSError:
                data = b""
            interrupted = keyboard.terminal.raw and b"\x03" in data
            if interrupted:  # Ctrl-C here: a halt there, not a key
                stop.ask("Ctrl-C here")
                data = data[: data.index(b"\x03")]
            if data:
                conn.send(wire.frame(wire.INPUT, data))
                result.input_in_flight += len(data)
            elif not interrupted:  # the end of the input here
                conn.send(wire.json_frame(wire.EOF, {}))
                keyboard.reading = None
            continue
        if wake in ready:
            os.read(wake, 64)
            if stop.resized != resized and result.python:
                resized = stop.resized
                size = terminal_size()
                if size is not None:
                    conn.send(wire.json_frame(wire.RESIZE, {"rows": size[0], "columns": size[1]}))
            if not stop.asked:
                continue
            if stop.asked >= 2 and asked_halt:
                result.lost = "stopped waiting for it; the rollback goes on there"
                result.going_on = True
                conn.proc.terminate()
                return
            if not result.python:  # nothing asked of the remote yet: nothing runs there
                result.lost = f"{stop.why}: stopped before anything ran there"
                conn.proc.terminate()
                return
            if not asked_halt:
                asked_halt = True
                notify(f"{stop.why}: halting there and rolling back (Ctrl-C again: stop waiting)")
                conn.send(wire.json_frame(wire.HALT, {"why": stop.why}))
        if out not in ready:
            continue
        data = os.read(out, 65536)
        if not data:
            if parser is not None and result.report is None and not (result.lost or result.ended):
                result.lost, result.going_on = CONNECTION_LOST, True
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
            parser = wire.Parser(dict(checks.LIMITS))
            data = before[at + len(start) :]
        try:
            frames = _feed(parser, result, data)
            while frames:
                for kind, payload in frames:
                    _frame(kind, payload, conn, result, b, ask, output, notify, earlier, keyboard)
                if result.take is not None:
                    left = max(result.max_pull - result.pulled, 0)
                    parser.limits[wire.DOCUMENT] = min(checks.MAX_DOCUMENT, left)
                frames = _feed(parser, result, b"")  # (what stopped the last feed, if anything)
        except wire.WireError as e:
            result.lost = f"the remote rw said what is not a frame ({e})"
            conn.proc.terminate()
            return
        except checks.Malformed as e:  # nothing it says is taken for what happened there
            result.lost, result.going_on = f"{e}; {checks.UNKNOWN}", False
            result.report = None
            conn.proc.terminate()
            return
        except BaseException:
            conn.proc.terminate()
            raise


def _feed(parser: wire.Parser, result: RemoteRun, data: bytes) -> list[tuple[str, bytes]]:
    try:
        return parser.feed(data)
    except wire.TooBig as e:
        raise _too_big(result, e.kind, e.size, e.limit) from None


def _too_big(result: RemoteRun, kind: str, size: int, limit: int) -> RwError:
    if kind != wire.DOCUMENT:
        return checks.Malformed(f"the remote's {kind} is malformed: {size} bytes, over the "
                                f"{limit} it may be")  # fmt: skip
    if size > checks.MAX_DOCUMENT:
        why = f"is over the {checks.MAX_DOCUMENT} bytes one session may be"
    else:
        why = f"would take what is pulled past {result.max_pull} bytes (--max-bytes)"
    return RwError(
        f"{result.destination}: stopped: its next session ({size} bytes) {why}; "
        "the sessions before it are stored"
    )


def _frame(
    kind: str,
    payload: bytes,
    conn: _Connection,
    result: RemoteRun,
    b: Bundle,
    ask: dict,
    output: Output | None,
    notify: Notify,
    earlier: Earlier | None,
    keyboard: Keyboard,
) -> None:
    if kind == wire.OUT:
        if output is not None:
            output(payload)
        return
    if kind == wire.DOCUMENT:
        if result.take is None:
            return
        if result.pulled + len(payload) > result.max_pull:
            raise _too_big(result, kind, len(payload), result.max_pull - result.pulled)
        result.pulled += len(payload)
        result.take(payload)
        return
    if kind == wire.REPORT:
        result.report = checks.report_message(payload)
        return
    doc = checks.message(kind, payload)
    if doc is None:
        return
    if kind == wire.HELLO:
        result.python, result.where = doc["python"], doc["dir"]
        conn.connected(lambda line: notify(f"ssh: {line}"))
        if not doc.get("cached"):
            notify(f"sending rw {b.version} ({len(b.data) // 1024} KiB) to {result.where}")
            result.sent_bundle = True
            conn.send(wire.frame(wire.BUNDLE, b.data))
        keys = keyboard.start()
        conn.send(wire.json_frame(wire.REQUEST, {**ask, "input": keys} if keys else ask))
    elif kind == wire.NOTE:
        notify(doc["message"])
    elif kind == wire.END:
        result.ended = True
    elif kind == wire.TAKEN:
        result.input_in_flight = max(0, result.input_in_flight - doc["bytes"])
    elif kind == wire.SESSION:
        result.run = doc
        _ack(conn, result.run)
    elif kind == wire.EARLIER:
        if earlier is not None:
            earlier(doc)
        _ack(conn, doc)
    elif kind == wire.ERROR:
        code = doc.get("exit_code")
        message = f"{result.destination}: {doc.get('message')}"
        if doc.get("busy"):
            message += f" (rw guard --host {result.destination} --attach waits for its report)"
        raise RwError(message, code if isinstance(code, int) and 1 <= code <= 3 else EXIT_USAGE)


def _ack(conn: _Connection, run: dict) -> None:
    """The run's report and record are here: the remote forgets it was unreported."""
    session = run.get("session")
    sid = session.get("id") if isinstance(session, dict) else None
    if isinstance(sid, str):
        conn.send(wire.json_frame(wire.ACK, {"session": sid}))


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view) :]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
        except OSError:
            return

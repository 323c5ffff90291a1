"""rw's side on the remote host: reads the request the local rw sent, runs the
circuit breaker here (checkpoint, stream, classify, halt, kill, roll back,
verify), and sends its output, its notes, the report and the recorded run back
as frames.

The connection is not needed for the run to stay guarded: when it drops, the
breaker goes on and halts and rolls back on its own rules; what it would have
sent is dropped, and the run is in this host's store (its report too).
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import select
import signal
import struct
import sys
import termios
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import BinaryIO

from ..config import Config, GuardConfig
from ..errors import EXIT_PROBLEM, EXIT_USAGE, RwError
from ..guard.runner import REPORT_STEP, GuardRequest, guard
from ..paths import Paths, ensure_private_dir, resolve
from ..store import Store
from ..timeline import exporting, history
from . import wire

BACKLOG = 16 * 1024 * 1024  # bytes of output held for a slow connection before some are dropped
KEYS = ("terminal", "pipe")  # where the local rw's stdin comes from, when it sends it
RUNS = "remote-runs"  # in the data dir: a marker per run whose report has not reached its rw


class Busy(RwError):
    """A guarded run started over ssh still goes on here: no second one."""


def config_to_wire(config: Config) -> dict:
    """The local config as the remote uses it: rules, redaction, probes and caps.
    The trees this host watches are its own paths, not the remote's."""
    doc = asdict(config)
    doc.pop("source", None)
    doc["watch_paths"] = []
    return doc


def config_from_wire(doc: dict) -> Config:
    known = Config.__dataclass_fields__
    fields = {k: v for k, v in doc.items() if k in known and k not in ("source", "guard")}
    guard_known = GuardConfig.__dataclass_fields__
    g = GuardConfig(**{k: v for k, v in (doc.get("guard") or {}).items() if k in guard_known})
    return Config(**fields, guard=g)


def expand_home(word: str) -> str:
    """`~` and `~/...` as the remote's shell would read them."""
    if word == "~" or word.startswith("~/"):
        return os.path.expanduser(word)
    return word


class _Sender:
    """Frames to the local rw from any thread; a writer thread keeps the breaker
    from ever waiting on the connection. Once the connection is gone, nothing
    more is sent (the run goes on)."""

    def __init__(self, out: BinaryIO):
        self.out = out
        self.frames: queue.Queue[bytes | None] = queue.Queue()
        self.pending = 0
        self.dropped = 0
        self.gone = False
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def send(self, kind: str, payload: bytes, droppable: bool = False) -> None:
        with self.lock:
            if self.gone:
                return
            if droppable and self.pending > BACKLOG:
                self.dropped += len(payload)
                return
            self.pending += len(payload)
        self.frames.put(wire.frame(kind, payload))

    def send_json(self, kind: str, doc: object) -> None:
        self.send(kind, json.dumps(doc).encode())

    def _write(self) -> None:
        while True:
            data = self.frames.get()
            if data is None:
                return
            try:
                self.out.write(data)
                self.out.flush()
            except (OSError, ValueError):
                with self.lock:
                    self.gone = True
            with self.lock:
                self.pending -= len(data)

    def close(self, wait: float = 30.0) -> None:
        self.frames.put(None)
        self.thread.join(wait)


def _pump_output(read_fd: int, sender: _Sender) -> None:
    while True:
        try:
            data = os.read(read_fd, 65536)
        except OSError:
            return
        if not data:
            return
        sender.send(wire.OUT, data, droppable=True)


class _Inbox:
    """Frames from the local rw while the run goes on. A halt is a SIGINT to this
    process (the breaker halts on it as on Ctrl-C), sent again until the run is
    over, so that a halt asked for while the checkpoint is taken stops the
    command as it starts. A resize sizes `terminal` (the command's terminal
    takes its size from it on SIGWINCH). An ack says a run's report reached the
    local rw. The end of the stream is no halt: the connection may have dropped,
    and the breaker goes on."""

    def __init__(
        self,
        stream: BinaryIO,
        done: threading.Event,
        runs: Path,
        terminal: int | None = None,
        keys: _Keys | None = None,
    ):
        self.stream = stream
        self.done = done
        self.runs = runs  # markers of the runs whose report has not reached the local rw
        self.terminal = terminal
        self.keys = keys
        self.acked: set[str] = set()
        self.changed = threading.Condition()
        self.closed = False
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        halting = False
        try:
            while True:
                got = wire.read_frame(self.stream)
                if got is None:
                    return
                kind, payload = got
                if kind == wire.HALT and not halting:
                    halting = True
                    threading.Thread(target=_halt, args=(self.done,), daemon=True).start()
                elif kind == wire.RESIZE and self.terminal is not None:
                    doc = json.loads(payload)
                    _set_size(self.terminal, doc.get("rows"), doc.get("columns"))
                    os.kill(os.getpid(), signal.SIGWINCH)
                elif kind == wire.INPUT and self.keys is not None:
                    self.keys.put(payload)
                elif kind == wire.EOF and self.keys is not None:
                    self.keys.put(None)
                elif kind == wire.ACK:
                    sid = json.loads(payload).get("session")
                    if isinstance(sid, str):
                        _forget(self.runs, sid)
                        with self.changed:
                            self.acked.add(sid)
                            self.changed.notify_all()
        except (OSError, ValueError, wire.WireError):
            return
        finally:
            with self.changed:
                self.closed = True
                self.changed.notify_all()

    def wait_ack(self, sid: str, wait: float = 30.0) -> bool:
        """Whether the local rw said it has the run's report (not when the
        connection went first)."""
        with self.changed:
            self.changed.wait_for(lambda: sid in self.acked or self.closed, wait)
            return sid in self.acked


def _halt(done: threading.Event) -> None:
    while not done.is_set():
        os.kill(os.getpid(), signal.SIGINT)
        done.wait(0.5)


def _set_size(fd: int, rows: object, columns: object) -> None:
    if isinstance(rows, int) and isinstance(columns, int) and 0 < rows < 10000 > columns > 0:
        try:
            fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, columns, 0, 0))
        except OSError:
            pass


def _terminal(size: object, keys: object) -> tuple[int, int] | tuple[None, None]:
    """The local user's terminal as the breaker sees it here: (master, slave),
    or none. Of the size of the local one, for the command's to follow. With
    keys from here ("terminal": typed, echoed there as by any terminal; "pipe":
    not echoed), they are written to its master side, and it is made this
    process's controlling terminal, so that the breaker takes it raw as it
    takes a user's: each key reaches the command's terminal as typed."""
    sized = isinstance(size, list) and len(size) == 2
    if not sized and keys not in KEYS:
        return None, None
    master, slave = os.openpty()
    if sized:
        _set_size(slave, size[0], size[1])  # type: ignore[index]
    if keys in KEYS:
        try:
            if keys == "pipe":
                mode = termios.tcgetattr(slave)
                mode[3] &= ~termios.ECHO
                termios.tcsetattr(slave, termios.TCSANOW, mode)
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
        except (OSError, termios.error):
            pass
    return master, slave


class _Keys:
    """What the local rw's stdin gives, written to the terminal's master side
    once the breaker has taken that terminal raw (the command has started);
    its end is an end of file (^D) for the command, as a terminal gives one.
    Each chunk written is said (`taken`): the local rw keeps no more than a
    window of input unsaid, so what waits here for a command that does not
    read stays small."""

    def __init__(self, master: int, slave: int, done: threading.Event, sender: _Sender):
        self.master, self.slave, self.done, self.sender = master, slave, done, sender
        self.chunks: queue.Queue[bytes | None] = queue.Queue()
        self.stopped = False
        os.set_blocking(master, False)
        self.thread = threading.Thread(target=self._write, daemon=True)
        self.thread.start()

    def put(self, data: bytes | None) -> None:
        self.chunks.put(data)

    def _raw(self) -> bool:
        try:
            return not termios.tcgetattr(self.slave)[3] & termios.ICANON
        except termios.error:
            return False

    def _write(self) -> None:
        while not self._raw():
            if self.stopped or self.done.wait(0.02):
                return
        last = b"\n"
        while not self.stopped:
            try:
                data = self.chunks.get(timeout=0.2)
            except queue.Empty:
                continue
            if data is None:  # the end: ^D at the start of a line (after a partial one, two)
                data = b"\x04" if last == b"\n" else b"\x04\x04"
            elif data:
                last = data[-1:]
            view = memoryview(data)
            while view and not self.stopped:
                try:
                    view = view[os.write(self.master, view) :]
                except BlockingIOError:
                    select.select([], [self.master], [], 0.2)
                except OSError:
                    return
            if not view:  # taken: the local rw may send as much again
                self.sender.send_json(wire.TAKEN, {"bytes": len(data)})

    def stop(self) -> None:
        """Before the terminal is closed: no write may reach a reused fd."""
        self.stopped = True
        self.thread.join()


def recorded_run(store: Store, sid: str) -> dict:
    """The run as this host's store holds it, for the local store."""
    session = store.get_session(sid)
    steps = store.steps(sid)
    if session is None or not steps:
        return {}
    output = store.output(sid, 1)
    report = store.output(sid, REPORT_STEP)
    return {
        "session": {k: v for k, v in asdict(session).items() if k != "steps"},
        "step": asdict(steps[0]),
        "output_base64": base64.b64encode(output or b"").decode(),
        "report": json.loads(report) if report else None,
    }


def _alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _attach(paths: Paths, sender: _Sender, inbox: _Inbox) -> int:
    """The report of the last guarded run here (rw guard --host HOST --attach):
    waited for while it goes on, then sent with the run as recorded."""
    store = Store.open_for_reading(paths.db)
    if store is None:
        raise RwError("no guarded run there yet")
    try:
        runs = [s for s in store.sessions() if s.origin == "guard"]
        if not runs:
            raise RwError("no guarded run there yet")
        sid = runs[0].id
        told = False
        while True:
            session = store.get_session(sid)
            if session is None:
                raise RwError(f"the run {sid} is gone from the store there")
            if session.ended_at is not None:
                break
            if not _alive(session.pid):
                raise RwError(
                    f"the run {sid} there ended without a report (its rw was killed)", EXIT_PROBLEM
                )
            if not told:
                sender.send_json(wire.NOTE, {"message": f"waiting for the run {sid} to end"})
                told = True
            time.sleep(0.2)
        run = recorded_run(store, sid)
    finally:
        store.close()
    if not run.get("report"):
        raise RwError(f"the run {sid} there has no report", EXIT_PROBLEM)
    sender.send_json(wire.REPORT, run["report"])
    sender.send_json(wire.SESSION, run)
    inbox.wait_ack(sid)
    return int(run["report"].get("exit_code") or 0)


def _mark(runs: Path) -> Path:
    """This run's marker, named by this process (the run's session records its
    pid); it gets the session's id when the run ends, and goes when the local rw
    acks the report."""
    marker = runs / str(os.getpid())
    marker.write_text("")
    return marker


def _forget(runs: Path, sid: str) -> None:
    try:
        markers = list(runs.iterdir())
    except OSError:
        return
    for marker in markers:
        try:
            if marker.read_text() == sid:
                marker.unlink()
        except OSError:
            pass


def _one_at_a_time(runs: Path) -> int:
    """A lock this process holds until it ends (an fd left open): one guarded
    run started over ssh at a time here. Busy when another holds it."""
    ensure_private_dir(runs)
    fd = os.open(runs / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        going = [m for m in runs.iterdir() if m.name.isdigit() and _alive(int(m.name))]
        sid = going[0].read_text().strip() if len(going) == 1 else ""
        what = f"the run {sid}" if sid else "a run"
        raise Busy(
            f"{what} started over ssh still goes on there: one guarded run at a time"
        ) from None
    return fd


def _unreported(store: Store | None, runs: Path) -> tuple[list[str], list[str]]:
    """The runs started over ssh whose reports did not reach their rw (the
    connection went), all ended (this process holds the lock): (their
    sessions, notes on runs that ended without a report)."""
    try:
        markers = sorted(runs.iterdir())
    except OSError:
        return [], []
    ended, notes = [], []
    for marker in markers:
        if not marker.name.isdigit() or int(marker.name) == os.getpid():
            continue
        pid = int(marker.name)
        try:
            sid = marker.read_text().strip()
            since = marker.stat().st_mtime - 1
        except OSError:
            continue
        if not sid and store is not None:  # its rw was killed before the run ended
            mine = [s for s in store.sessions()
                    if s.origin == "guard" and s.pid == pid and s.started_at >= since]  # fmt: skip
            sid = mine[0].id if mine else ""
        session = store.get_session(sid) if sid and store is not None else None
        if session is None:
            marker.unlink(missing_ok=True)  # its rw ended before the run was recorded
        elif session.ended_at is None:
            marker.unlink(missing_ok=True)
            notes.append(f"the run {sid} there ended without a report (its rw was killed)")
        else:
            marker.write_text(sid)  # for the ack to find it
            ended.append(sid)
    return ended, notes


def _pull(paths, sender: _Sender, ref: object) -> int:
    """The sessions recorded here (or the one `ref` names), oldest first, each
    as `rw export --format json` writes it (rw pull)."""
    store = Store.open_for_reading(paths.db)
    if store is None:
        if isinstance(ref, str) and ref:
            raise RwError("nothing recorded there yet")
        sender.send_json(wire.END, {})  # (all of nothing: none to send)
        return 0
    try:
        if isinstance(ref, str) and ref:
            ids = [history.resolve(store, ref).id]
        else:
            ids = [s.id for s in reversed(store.sessions())]
        for sid in ids:
            doc = exporting.to_document(store, exporting.select(store, sid))
            sender.send_json(wire.DOCUMENT, doc)
    finally:
        store.close()
    sender.send_json(wire.END, {})
    return 0


def _send_earlier(paths: Paths, runs: Path, sender: _Sender) -> None:
    """Before a new run: the reports of runs here that did not reach their rw
    (their markers go when it acks them)."""
    store = Store.open_for_reading(paths.db)
    try:
        ended, notes = _unreported(store, runs)
        for note in notes:
            sender.send_json(wire.NOTE, {"message": note})
        for sid in ended:
            run = recorded_run(store, sid) if store is not None else {}
            if run.get("report"):
                sender.send_json(wire.EARLIER, run)
            else:
                _forget(runs, sid)
    finally:
        if store is not None:
            store.close()


def serve(stdin: BinaryIO, stdout: BinaryIO, where: str) -> None:
    """The bootstrap's last call: run, then end the process at once (a thread
    still reading the connection must not hold up its end)."""
    code = main(stdin, stdout, where)
    sys.stderr.flush()
    os._exit(code)


def main(stdin: BinaryIO, stdout: BinaryIO, where: str) -> int:
    # Nothing but frames may reach the wire: whatever else prints goes to stderr.
    stdout.flush()
    wire_out = os.fdopen(os.dup(stdout.fileno()), "wb")
    os.dup2(2, 1)
    # SIGINT is a halt (see _Inbox); outside the run, where the breaker does not
    # handle it, it must not end this process half-way.
    signal.signal(signal.SIGINT, lambda *_: None)
    # The terminal made for the keys is this process's: its closing hangs it up.
    # (A handler, not SIG_IGN, which the command would inherit.)
    signal.signal(signal.SIGHUP, lambda *_: None)
    sender = _Sender(wire_out)
    done = threading.Event()
    try:
        got = wire.read_frame(stdin)
        if got is None or got[0] != wire.REQUEST:
            return EXIT_USAGE
        doc = json.loads(got[1])
        paths = resolve()
        runs = paths.data_dir / RUNS
        if doc.get("attach"):
            return _attach(paths, sender, _Inbox(stdin, done, runs))
        if "pull" in doc:
            return _pull(paths, sender, doc["pull"])
        config = config_from_wire(doc["config"])
        request = GuardRequest.from_json(doc["request"])
        request.argv = [expand_home(w) for w in request.command]  # recorded as given
        request.cwd = os.path.expanduser(request.cwd or "~")
        request.paths = [os.path.normpath(os.path.join(request.cwd, expand_home(p)))
                         for p in request.paths]  # fmt: skip
        term_master, term = _terminal(doc.get("size"), doc.get("input"))
        keys = None
        if doc.get("input") in KEYS and term_master is not None and term is not None:
            keys = _Keys(term_master, term, done, sender)
        inbox = _Inbox(stdin, done, runs, term, keys)
        _one_at_a_time(runs)  # (held until this process ends)
        _send_earlier(paths, runs, sender)
        marker = _mark(runs)
        read_fd, write_fd = os.pipe()
        pump = threading.Thread(target=_pump_output, args=(read_fd, sender), daemon=True)
        pump.start()
        try:
            report = guard(
                paths,
                config,
                request,
                out_fd=write_fd,
                in_fd=term,
                notify=lambda msg: sender.send_json(wire.NOTE, {"message": msg}),
            )
        except BaseException:
            marker.unlink(missing_ok=True)  # nothing ran, or nothing was recorded
            raise
        finally:
            done.set()
            os.close(write_fd)
            pump.join(10)
            os.close(read_fd)
            if keys is not None:
                keys.stop()
            for fd in (term, term_master):
                if fd is not None:
                    os.close(fd)
        marker.write_text(report.session or "")
        if sender.dropped:
            sender.send_json(
                wire.NOTE, {"message": f"{sender.dropped} bytes of output were not sent here"}
            )
        sender.send_json(wire.REPORT, report.to_json())
        store = Store(paths.db)
        try:
            sender.send_json(wire.SESSION, recorded_run(store, report.session or ""))
        finally:
            store.close()
        if report.session:
            inbox.wait_ack(report.session)
        return report.exit_code
    except RwError as e:
        error = {"message": str(e), "exit_code": e.exit_code, "busy": isinstance(e, Busy)}
        sender.send_json(wire.ERROR, error)
        return e.exit_code
    finally:
        done.set()
        sender.close()

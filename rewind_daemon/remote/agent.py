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
import signal
import struct
import sys
import termios
import threading
import time
from dataclasses import asdict
from typing import BinaryIO

from ..config import Config, GuardConfig
from ..errors import EXIT_PROBLEM, EXIT_USAGE, RwError
from ..guard.runner import REPORT_STEP, GuardRequest, guard
from ..paths import resolve
from ..store import Store
from ..timeline import exporting, history
from . import wire

BACKLOG = 16 * 1024 * 1024  # bytes of output held for a slow connection before some are dropped


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


def _listen(stream: BinaryIO, done: threading.Event, terminal: int | None) -> None:
    """Frames from the local rw while the run goes on. A halt is a SIGINT to this
    process (the breaker halts on it as on Ctrl-C), sent again until the run is
    over, so that a halt asked for while the checkpoint is taken stops the
    command as it starts. A resize sizes `terminal` (the command's terminal
    takes its size from it on SIGWINCH). The end of the stream is no halt: the
    connection may have dropped, and the breaker goes on."""
    halting = False
    try:
        while True:
            got = wire.read_frame(stream)
            if got is None:
                return
            kind, payload = got
            if kind == wire.HALT and not halting:
                halting = True
                threading.Thread(target=_halt, args=(done,), daemon=True).start()
            elif kind == wire.RESIZE and terminal is not None:
                doc = json.loads(payload)
                _set_size(terminal, doc.get("rows"), doc.get("columns"))
                os.kill(os.getpid(), signal.SIGWINCH)
    except (OSError, ValueError, wire.WireError):
        return


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


def _terminal(size: object) -> tuple[int, int] | tuple[None, None]:
    """A terminal of the size of the local one, for the command's to follow
    (the command gets no input from it): (master, slave), or none."""
    if not (isinstance(size, list) and len(size) == 2):
        return None, None
    master, slave = os.openpty()
    _set_size(slave, size[0], size[1])
    return master, slave


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


def _attach(paths, sender: _Sender) -> int:
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
    return int(run["report"].get("exit_code") or 0)


def _pull(paths, sender: _Sender, ref: object) -> int:
    """The sessions recorded here (or the one `ref` names), oldest first, each
    as `rw export --format json` writes it (rw pull)."""
    store = Store.open_for_reading(paths.db)
    if store is None:
        raise RwError("nothing recorded there yet")
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
    # SIGINT is a halt (see _listen); outside the run, where the breaker does not
    # handle it, it must not end this process half-way.
    signal.signal(signal.SIGINT, lambda *_: None)
    sender = _Sender(wire_out)
    done = threading.Event()
    try:
        got = wire.read_frame(stdin)
        if got is None or got[0] != wire.REQUEST:
            return EXIT_USAGE
        doc = json.loads(got[1])
        if doc.get("attach"):
            return _attach(resolve(), sender)
        if "pull" in doc:
            return _pull(resolve(), sender, doc["pull"])
        config = config_from_wire(doc["config"])
        request = GuardRequest.from_json(doc["request"])
        request.argv = [expand_home(w) for w in request.command]  # recorded as given
        request.cwd = os.path.expanduser(request.cwd or "~")
        request.paths = [os.path.normpath(os.path.join(request.cwd, expand_home(p)))
                         for p in request.paths]  # fmt: skip
        term_master, term = _terminal(doc.get("size"))
        threading.Thread(target=_listen, args=(stdin, done, term), daemon=True).start()
        read_fd, write_fd = os.pipe()
        pump = threading.Thread(target=_pump_output, args=(read_fd, sender), daemon=True)
        pump.start()
        paths = resolve()
        try:
            report = guard(
                paths,
                config,
                request,
                out_fd=write_fd,
                in_fd=term,
                notify=lambda msg: sender.send_json(wire.NOTE, {"message": msg}),
            )
        finally:
            done.set()
            os.close(write_fd)
            pump.join(10)
            os.close(read_fd)
            for fd in (term, term_master):
                if fd is not None:
                    os.close(fd)
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
        return report.exit_code
    except RwError as e:
        sender.send_json(wire.ERROR, {"message": str(e), "exit_code": e.exit_code})
        return e.exit_code
    finally:
        done.set()
        sender.close()

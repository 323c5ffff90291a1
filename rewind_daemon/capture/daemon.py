"""The daemon: one process per user that owns the store.

It follows the per-session spool files the shell hooks append to (inotify,
with a slow poll as a safety net) and answers control requests on a private
Unix socket. Everything runs in one thread around one selector, so the store
has exactly one writer (a backlog of output is partly made ready in a worker
process, output_worker.py, which never touches the store).
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import selectors
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from .. import __version__
from ..checkpoints.checkpoint import Checkpoints
from ..checkpoints.watcher import TreeWatcher
from ..config import Config
from ..config import load as load_config
from ..errors import RwError
from ..fsops import Inotify
from ..paths import Paths, ensure_private_dir
from ..store import Store
from .client import process_running
from .ingest import DROPPED, SPOOL_SUFFIX, Ingester, SpoolReader, space_problem
from .logonce import LogOnce
from .output_spool import OUTPUT_SUFFIX
from .output_worker import OutputWorker
from .outputs import DAMAGED, OutputReader
from .termtext import text_of

if TYPE_CHECKING:
    import subprocess

log = logging.getLogger("rw.daemon")

# A request is one JSON line; the largest real one (a name) is far smaller.
MAX_REQUEST = 64 * 1024
# While this much of a client's replies is unsent, its further requests wait
# (a client that never reads costs memory up to here, and nobody else time).
MAX_UNSENT = 256 * 1024
# Requests answered for one client before the others get their turn.
REQUESTS_PER_TURN = 32
MAX_CLIENTS = 128
POLL_SECONDS = 1.0
MAINTENANCE_SECONDS = 5.0
# Records are ingested once their spools have been quiet this long (so a
# command's begin and end records usually share one transaction, and a burst
# of commands is not slowed by the daemon competing for the CPU), but never
# later than BATCH_MAX after the first of them. (A shell waiting for its step
# checkpoint, and a client's sync, are answered at once.)
BATCH_DELAY = 0.02
BATCH_MAX = 1.0
CLIENT_IDLE_SECONDS = 30.0
# The search index is brought up to date when nothing else is to be done, in
# slices this long; a client's sync that asks for it waits at most SYNC_INDEX
# (rw search reads what is left itself).
INDEX_SLICE = 0.02
SYNC_INDEX = 0.5
_UCRED = struct.Struct("3i")  # struct ucred: pid, uid, gid
_SUFFIXES = (SPOOL_SUFFIX, OUTPUT_SUFFIX)


def _spool_watch(directory: Path) -> Inotify:
    """inotify on the spool directory: a spool created, moved in or written."""
    ino = Inotify()
    try:
        ino.add(directory, Inotify.CLOSE_WRITE | Inotify.CREATE | Inotify.MOVED_TO)
    except OSError:
        ino.close()
        raise
    return ino


class _Client:
    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.buf = bytearray()  # received, not yet answered
        self.out = bytearray()  # answers not yet sent
        self.eof = False  # it sent all it will: answer, then hang up
        self.events = 0  # what the selector watches it for
        self.last = time.monotonic()


def _file_id(path: Path) -> tuple[int, int] | None:
    """(device, inode) of a file; None when it is missing."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


class Daemon:
    def __init__(self, paths: Paths, config: Config, worker: OutputWorker):
        self.paths = paths
        self.config = config
        self.worker = worker  # (its process started by `rw daemon run` or later: main)
        self.started = time.time()
        self.sel = selectors.DefaultSelector()
        self.clients: dict[int, _Client] = {}
        self.waiting: set[_Client] = set()  # clients with requests left for their next turn
        self.requests_log = LogOnce(log)
        self.ingest_log = LogOnce(log)  # by spool: a store that keeps failing is said once
        self.dirty: set[str] = set()
        self.dirty_since = 0.0  # when the pending records began to arrive
        self.ingest_at = 0.0  # when to ingest them, if their spools are quiet by then
        self.running = True
        self.host = socket.gethostname()
        self.failing: dict[str, str] = {}  # spool name: why it cannot be ingested now
        self.index_behind = True  # the search index may lack something stored

    # --- lifecycle ---------------------------------------------------------------

    home_lost = False
    _held: dict[Path, tuple[int, int] | None]

    def run(self) -> int:
        # The runtime dir is the scratch dir too: the hooks make and read their
        # FIFOs where the daemon does (paths.py decides it, once).
        ensure_private_dir(self.paths.runtime_dir)
        if self.paths.notice:
            log.warning("%s", self.paths.notice)
        ensure_private_dir(self.paths.data_dir)
        ensure_private_dir(self.paths.spool_dir)
        lock = os.open(self.paths.lock_file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            log.error("another rw daemon is running (lock %s is held)", self.paths.lock_file)
            return 1
        self.store = Store(self.paths.db)
        self.store.defer_checkpoints()  # (done when idle: see _index)
        self._held = {p: _file_id(p) for p in (self.paths.lock_file, self.paths.db)}
        redactor = self.config.redactor()
        self.ingester = Ingester(self.store, redactor, self.config.ignore_regexes())
        self.spools = SpoolReader(self.paths.spool_dir, self.ingester, self.paths.scratch_dir)
        self.outputs = OutputReader(
            self.paths.spool_dir,
            self.store,
            redactor,
            self.config.max_step_output,
            known=self.ingester.known,
            worker=self.worker,
        )
        self.outputs.prepare()  # (a backlog's worker runs from the daemon's start, or none)
        self.watcher = TreeWatcher(
            Checkpoints(self.paths, self.store, self.config), self.paths.scratch_dir
        )
        self.watcher.reload()
        self._listen()
        wake_r, wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wake_w)
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        self.sel.register(wake_r, selectors.EVENT_READ, "wake")
        try:
            self.inotify: Inotify | None = _spool_watch(self.paths.spool_dir)
            self.sel.register(self.inotify.fd, selectors.EVENT_READ, "inotify")
        except OSError as e:
            log.warning("inotify unavailable (%s); polling spools every %ss", e, POLL_SECONDS)
            self.inotify = None
        if self.watcher.inotify is not None:
            self.sel.register(self.watcher.inotify.fd, selectors.EVENT_READ, "trees")
        self._open_acks()
        self._write_pid()
        log.info("rw daemon %s pid %d listening on %s", __version__, os.getpid(), self.paths.socket)
        self._maintain()
        try:
            self._loop()
        finally:
            self._shutdown()
            os.close(lock)
        return 0

    def _on_signal(self, signum: int, _frame: object) -> None:
        self.running = False

    def _listen(self) -> None:
        path = self.paths.socket
        # We hold the lock, so any socket file here is a leftover of a crash.
        path.unlink(missing_ok=True)
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o177)
        try:
            self.server.bind(str(path))
        finally:
            os.umask(old)
        os.chmod(path, 0o600)
        self.server.listen(64)
        self.server.setblocking(False)
        self.sel.register(self.server, selectors.EVENT_READ, "accept")

    def _write_pid(self) -> None:
        tmp = self.paths.pid_file.with_suffix(".tmp")
        tmp.write_text(f"{os.getpid()}\n")
        os.replace(tmp, self.paths.pid_file)

    def _shutdown(self) -> None:
        try:
            self._ingest(self._spool_names())
        except Exception:  # noqa: BLE001 - never lose the shutdown path
            log.exception("final ingest failed")
        for client in list(self.clients.values()):
            if self._send(client):  # what fits now, such as the answer to stop
                self._drop(client)
        if self.outputs.worker is not None:
            self.outputs.worker.close()
        self.watcher.close_all(remove=False)
        self.server.close()
        for p in () if self.home_lost else (self.paths.socket, self.paths.pid_file):
            try:
                if p == self.paths.pid_file and p.read_text().strip() != str(os.getpid()):
                    continue
                p.unlink()
            except OSError:
                pass
        self.store.close()
        log.info("rw daemon stopped")

    # --- the loop ----------------------------------------------------------------

    def _loop(self) -> None:
        next_poll = time.monotonic() + POLL_SECONDS
        next_maint = time.monotonic() + MAINTENANCE_SECONDS
        while self.running:
            now = time.monotonic()
            timeout = min(next_poll, next_maint) - now
            if self.dirty:
                timeout = min(timeout, self.ingest_at - now)
            if self.waiting or (self.index_behind and not self.dirty):
                timeout = 0.0
            for key, events in self.sel.select(max(0.0, timeout)):
                if key.data == "accept":
                    self._accept()
                elif key.data == "inotify":
                    assert self.inotify is not None
                    names = {n for _wd, n in self.inotify.read() if n.endswith(_SUFFIXES)}
                    if names and not self.dirty:
                        self.dirty_since = time.monotonic()
                        self.ingest_at = self.dirty_since + self._batch_delay()
                        # Leave further events queued until the batch is ingested:
                        # the kernel merges repeats, so a burst costs one wake-up.
                        self.sel.unregister(self.inotify.fd)
                    self.dirty |= names
                elif key.data == "trees":
                    self.watcher.drain()
                elif key.data == "wake":
                    try:
                        os.read(key.fd, 512)
                    except BlockingIOError:
                        pass
                else:
                    self._serve(key.data, events)
            for client in list(self.waiting):
                self._serve(client, 0)
            now = time.monotonic()
            if self.dirty and now >= self.ingest_at and self._quiet(now):
                self._ingest(self.dirty)
                self.dirty = set()
                if self.inotify is not None:
                    self.sel.register(self.inotify.fd, selectors.EVENT_READ, "inotify")
            if now >= next_poll:
                next_poll = now + POLL_SECONDS
                if self._home_gone():
                    break
                self._ingest(self._spool_names())
                self._reap_idle_clients(now)
            if now >= next_maint:
                next_maint = now + MAINTENANCE_SECONDS
                self._maintain()
                self.index_behind = True  # (replays, guarded runs, imports write too)
            if self.index_behind and not self.dirty and not self.waiting:
                self._index(INDEX_SLICE)
                if not self.index_behind:  # (idle: what was written copied into the database)
                    self._checkpoint()

    def _home_gone(self) -> bool:
        """Whether its lock file or its database was removed (RW_HOME or the data
        dir deleted): then this daemon serves a store nobody can find, and a
        daemon started now makes a new one. It exits, leaving alone the socket
        and pid file a new daemon may have made."""
        for path, held in self._held.items():
            try:
                same = _file_id(path) == held
            except OSError:
                same = True  # (not known: a directory not searchable now)
            if not same:
                log.warning("%s was removed: the daemon exits", path)
                self.home_lost = True
                self.running = False
                return True
        return False

    def _quiet(self, now: float) -> bool:
        """Whether the dirty spools have not been written to for BATCH_DELAY
        (or it is BATCH_MAX since they became dirty); if not, look again later."""
        if self.watcher.active or now >= self.dirty_since + BATCH_MAX:
            return True
        latest = 0
        for name in self.dirty:
            try:
                latest = max(latest, os.stat(self.paths.spool_dir / name).st_mtime_ns)
            except OSError:
                pass
        ago = time.time() - latest / 1e9
        if ago >= BATCH_DELAY:
            return True
        # (A spool written "in the future", the clock having been set back,
        # must not put this off beyond BATCH_MAX.)
        self.ingest_at = min(now + BATCH_DELAY - ago, self.dirty_since + BATCH_MAX)
        return False

    def _batch_delay(self) -> float:
        # A shell waiting for its step checkpoint is answered at once.
        return 0.0 if self.watcher.active else BATCH_DELAY

    def _spool_names(self) -> list[str]:
        """The command spools, then the output spools (a step's output is stored
        once its step is)."""
        return self.spools.spool_files_names() + [p.name for p in self.outputs.spool_files()]

    def _ingest(self, names: set[str] | list[str]) -> int:
        total = 0
        # A step's output waits for its end (whose environment may hold secrets
        # it printed): the end read, the output spool is read again too.
        names = set(names) | {
            n[: -len(SPOOL_SUFFIX)] + OUTPUT_SUFFIX
            for n in names
            if n.endswith(SPOOL_SUFFIX)
            and (self.paths.spool_dir / (n[: -len(SPOOL_SUFFIX)] + OUTPUT_SUFFIX)).exists()
        }
        # Commands first: the output of a step is stored beside it.
        for name in sorted(names, key=lambda n: (n.endswith(OUTPUT_SUFFIX), n)):
            try:
                if name.endswith(OUTPUT_SUFFIX):
                    total += self.outputs.ingest_file(self.paths.spool_dir / name)
                    self.index_behind = True
                    continue
                total += self.spools.ingest_file(self.paths.spool_dir / name)
                self.index_behind = True
            except Exception as e:  # noqa: BLE001 - one bad spool must not stop the daemon
                # Said once (a full disk would have it said every second).
                self.ingest_log.warning(
                    name, "ingesting %s failed; will retry", name, exc_info=True
                )
                self.failing[name] = str(e)
            else:
                self.ingest_log.forget(name)
                if self.failing.pop(name, None) is not None:
                    log.info("ingesting %s works again", name)
        self._step_checkpoints()
        return total

    def _step_checkpoints(self) -> None:
        """Answer the shells waiting to run a command: checkpoint the watched
        trees for each step just begun (see watcher.py)."""
        ing = self.ingester
        opened, begun, ended = ing.opened, ing.begun, ing.ended
        ing.opened, ing.begun, ing.ended = [], [], False
        if not self.watcher.active:
            return
        for sid in opened:
            self.watcher.open_ack(sid)
        for sid, seq, number, started in begun:
            if sid not in self.watcher.acks:
                continue
            if number is None:
                self.watcher.ack(sid, seq, False)
                continue
            if time.time() - started > self.config.watch_timeout + 2:
                continue  # from a backlog: its shell stopped waiting long ago
            try:
                cid = self.watcher.checkpoint(sid, number)
            except Exception:  # noqa: BLE001 - the shell must get its answer
                log.exception("checkpoint for step %d of %s failed", number, sid)
                cid = None
            self.watcher.ack(sid, seq, cid is not None)
        if ended:
            try:
                self.watcher.refresh_dirty()
            except Exception:  # noqa: BLE001
                log.exception("refreshing watched trees failed")

    def _open_acks(self) -> None:
        here = [sid for sid, _pid, host in self.store.open_sessions() if host == self.host]
        for sid in here:
            if self.watcher.active:
                self.watcher.open_ack(sid)
            else:
                self.watcher.close_ack(sid)  # removes the FIFO: its shell stops waiting
        if not self.watcher.active:
            self.watcher.close_all()

    def _maintain(self) -> None:
        """Ingest everything, close sessions whose shell is gone, remove their spools."""
        try:
            finished = set()
            with self.store.transaction():
                for sid, pid, host in self.store.open_sessions():
                    if host == self.host and pid and not process_running(pid):
                        finished.add(sid)
            self.spools.ingest_all(finished)
            self.outputs.ingest_all()
            self._step_checkpoints()
            for sid in finished:
                self.watcher.close_ack(sid)
                with self.store.transaction():
                    ended = self.store.last_activity(sid)
                    session = self.store.get_session(sid)
                    if session is not None:
                        self.store.end_session(sid, ended or session.started_at)
                self.spools.remove_if_done(sid)
            for path in self.outputs.spool_files():
                self.outputs.remove_if_done(path.name[: -len(OUTPUT_SUFFIX)])
            if self.outputs.worker is not None:
                self.outputs.worker.idle()
        except Exception:  # noqa: BLE001
            self.ingest_log.warning("maintenance", "maintenance failed; will retry", exc_info=True)

    # --- clients -------------------------------------------------------------------
    # Every client is served a few requests at a time, without blocking: one that
    # sends garbage gets an error per line, one that never reads its replies is
    # paused, then hung up on when idle; none can stall the others or the ingest.

    def _accept(self) -> None:
        while True:
            try:
                sock, _ = self.server.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                self.requests_log.warning("accept", "accept failed: %s", e)
                if e.errno in (errno.EMFILE, errno.ENFILE) and self.clients:
                    self._drop(min(self.clients.values(), key=lambda c: c.last))
                return
            try:
                creds = sock.getsockopt(
                    socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")
                )
                pid, uid, _gid = struct.unpack("3i", creds)
            except OSError:
                sock.close()
                continue
            if uid != os.getuid():
                log.warning("refused connection from uid %d (pid %d)", uid, pid)
                sock.close()
                continue
            if len(self.clients) >= MAX_CLIENTS:
                self._drop(min(self.clients.values(), key=lambda c: c.last))
            sock.setblocking(False)
            client = _Client(sock)
            self.clients[sock.fileno()] = client
            self._watch(client, selectors.EVENT_READ)

    def _watch(self, client: _Client, events: int) -> None:
        if events == client.events:
            return
        if not events:
            self.sel.unregister(client.sock)
        elif not client.events:
            self.sel.register(client.sock, events, client)
        else:
            self.sel.modify(client.sock, events, client)
        client.events = events

    def _drop(self, client: _Client) -> None:
        if client.sock.fileno() < 0:
            return
        self._watch(client, 0)
        self.clients.pop(client.sock.fileno(), None)
        self.waiting.discard(client)
        client.sock.close()

    def _reap_idle_clients(self, now: float) -> None:
        for client in list(self.clients.values()):
            if now - client.last > CLIENT_IDLE_SECONDS:
                self._drop(client)

    def _serve(self, client: _Client, events: int) -> None:
        try:
            if events & selectors.EVENT_WRITE and not self._send(client):
                return
            if events & selectors.EVENT_READ:
                try:
                    data = client.sock.recv(65536)
                except (BlockingIOError, InterruptedError):
                    data = None
                except OSError:
                    self._drop(client)
                    return
                if data == b"":
                    client.eof = True
                elif data:
                    client.last = time.monotonic()
                    client.buf += data
            self._answer(client)
        except Exception:  # noqa: BLE001 - no client may end the daemon
            self.requests_log.warning("serve", "serving a client failed", exc_info=True)
            self._drop(client)

    def _answer(self, client: _Client) -> None:
        """Answer the client's complete requests (a turn's worth), send what can be
        sent, and watch it for what it needs next."""
        self.waiting.discard(client)
        for _ in range(REQUESTS_PER_TURN):
            end = client.buf.find(b"\n", 0, MAX_REQUEST + 1)
            if end < 0 or len(client.out) >= MAX_UNSENT:
                break
            line = bytes(client.buf[:end])
            del client.buf[: end + 1]
            reply = self._handle(line)
            client.out += _encode(reply)
            if reply.get("stopping"):
                self.running = False
        answerable = client.buf.find(b"\n", 0, MAX_REQUEST + 1) >= 0
        if not answerable and len(client.buf) > MAX_REQUEST:
            self.requests_log.warning(
                "too large", "hung up on a client: request over %d bytes", MAX_REQUEST
            )
            client.out += _encode({"ok": False, "error": "request too large"})
            client.buf.clear()
            client.eof = True
        if not self._send(client):
            return
        if client.eof and not client.out and not answerable:
            self._drop(client)  # it has every answer it asked for
            return
        room = len(client.out) < MAX_UNSENT
        if answerable and room:
            self.waiting.add(client)  # the rest in its next turn, after the others'
        events = selectors.EVENT_WRITE if client.out else 0
        if not client.eof and not answerable and room:
            events |= selectors.EVENT_READ
        self._watch(client, events)

    def _send(self, client: _Client) -> bool:
        """Send what the socket takes now; False when the client is gone."""
        while client.out:
            try:
                sent = client.sock.send(client.out)
            except (BlockingIOError, InterruptedError):
                return True
            except OSError:
                self._drop(client)
                return False
            del client.out[:sent]
            client.last = time.monotonic()
        return True

    def _handle(self, line: bytes) -> dict:
        """The reply to one request line. Nothing a client sends may raise out of here."""
        try:
            req = json.loads(line)
        except (ValueError, UnicodeDecodeError, RecursionError):
            self.requests_log.warning(
                "malformed", "dropped a malformed request (%d bytes)", len(line)
            )
            return {"ok": False, "error": "malformed request"}
        if not isinstance(req, dict) or not isinstance(req.get("op"), str):
            self.requests_log.warning("no op", "dropped a request without an op")
            return {"ok": False, "error": "request needs an op"}
        op = req["op"]
        handler = getattr(self, f"_op_{op}", None) if op.isidentifier() else None
        if handler is None:
            self.requests_log.warning("unknown op", "dropped a request with unknown op %r", op[:40])
            return {"ok": False, "error": f"unknown op {op[:40]!r}"}
        try:
            return {"ok": True, **handler(req)}
        except ValueError as e:
            return {"ok": False, "error": str(e)}
        except Exception as e:  # noqa: BLE001 - a request must never take the daemon down
            self.requests_log.warning(f"op {op}", "request %s failed", op, exc_info=True)
            return {"ok": False, "error": f"internal error: {e}"}

    def _op_ping(self, req: dict) -> dict:
        return {"pid": os.getpid(), "version": __version__}

    def _index(self, seconds: float) -> None:
        try:
            self.index_behind = not self.store.index_pending(text_of, seconds)
        except Exception:  # noqa: BLE001 - searching reads what is not indexed itself
            self.ingest_log.warning("index", "indexing for search failed; will retry",
                                    exc_info=True)  # fmt: skip
            self.index_behind = False  # (until the next maintenance)

    def _checkpoint(self) -> None:
        try:
            self.store.copy_log()
        except Exception:  # noqa: BLE001 - SQLite copies the log itself beyond WAL_PAGES
            self.ingest_log.warning("checkpoint", "copying the write-ahead log failed",
                                    exc_info=True)  # fmt: skip

    def _op_sync(self, req: dict) -> dict:
        records = self._ingest(self._spool_names())
        if req.get("index") is True:  # (rw search: the index as complete as it can be soon)
            self._index(SYNC_INDEX)
        return {"records": records}

    def _op_status(self, req: dict) -> dict:
        self._ingest(self._spool_names())
        stats = self.ingester.stats
        return {
            "pid": os.getpid(),
            "version": __version__,
            "uptime": round(time.time() - self.started, 3),
            "socket": str(self.paths.socket),
            "scratch": str(self.paths.scratch_dir),
            "watching": "inotify" if self.inotify else "polling",
            "records": stats.records,
            "dropped": self.store.counter(DROPPED),
            "dropped_output": self.store.counter(DAMAGED),
            "redactions": self.store.counter("redactions"),
            "problems": self._problems(),
            "lost_commands": self.store.counter("lost_commands"),
            "last_loss": json.loads(self.store.meta("last_loss") or "null"),
        }

    def _problems(self) -> list[str]:
        """What keeps commands from being stored right now."""
        out = [
            f"cannot ingest {name}: {why}"
            for name, why in sorted(self.failing.items())
            if (self.paths.spool_dir / name).exists()
        ]
        space = space_problem(self.paths.spool_dir, self.paths.data_dir)
        return [space, *out] if space else out

    def _op_name(self, req: dict) -> dict:
        sid, name = _text_arg(req, "session"), _text_arg(req, "name")
        if sid is None or name is None or not name.strip():
            raise ValueError("name needs a session and a non-empty name")
        self._ingest(self.spools.spool_files_names())
        with self.store.transaction():
            if not self.store.set_session_name(sid, name.strip()):
                raise ValueError(f"no session {sid!r} recorded yet")
        return {"session": sid, "name": name.strip()}

    def _op_branch(self, req: dict) -> dict:
        parent, step, name = _text_arg(req, "session"), req.get("step"), _text_arg(req, "name")
        if parent is None or not isinstance(step, int) or isinstance(step, bool):
            raise ValueError("branch needs a session and a step number")
        if name is not None and not name.strip():
            raise ValueError("a branch name must be a non-empty string")
        self._ingest(self.spools.spool_files_names())
        try:
            sid, name = self.store.create_branch(parent, step, name)
        except RwError as e:
            raise ValueError(str(e)) from None
        if req.get("open", True) is False:  # no shell will record into it
            with self.store.transaction():
                self.store.end_session(sid, time.time())
        return {"session": sid, "name": name}

    def _op_watches(self, req: dict) -> dict:
        self.watcher.reload()
        self._open_acks()
        return {"trees": sorted(self.watcher.trees)}

    def _op_gc(self, req: dict) -> dict:
        """Garbage collection runs here when the daemon is up: only it knows which
        objects its current snapshots still lend to the next checkpoint."""
        try:
            config = load_config(self.paths.config_file)  # retention as the file says now
        except RwError as e:
            raise ValueError(str(e)) from None
        dry_run = req.get("dry_run", False)
        if not isinstance(dry_run, bool):
            raise ValueError("dry_run must be true or false")
        cps = Checkpoints(self.paths, self.store, config)
        return cps.gc(dry_run, self.watcher.in_use()).to_json()

    def _op_stop(self, req: dict) -> dict:
        return {"stopping": True, "pid": os.getpid()}


def _encode(reply: dict) -> bytes:
    return json.dumps(reply).encode() + b"\n"


def _text_arg(req: dict, key: str) -> str | None:
    """A request's string argument (None when absent); ValueError when it is not
    text the store can hold."""
    value = req.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 4096 or "\x00" in value:
        raise ValueError(f"{key} must be a string of at most 4096 characters, without NUL")
    try:
        value.encode()
    except UnicodeEncodeError:
        raise ValueError(f"{key} is not valid Unicode") from None
    return value


def main(
    paths: Paths, config: Config, verbose: bool = True, worker: subprocess.Popen | None = None
) -> int:
    """Run the daemon; `worker`: an output worker started for it (worker_spawn.early)."""
    os.umask(0o077)
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s rw[%(process)d] %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    outputs = OutputWorker((config.redact_regexes(), config.redact_env_name_regexes()))
    if worker is not None:
        outputs.adopt(worker)
    try:
        return Daemon(paths, config, outputs).run()
    except OSError as e:
        if e.errno in (errno.EADDRINUSE, errno.EACCES, errno.EPERM):
            log.error("cannot listen on %s: %s", paths.socket, e)
            return 1
        raise
    finally:
        outputs.close()  # (another daemon ran, or this one failed: not left behind)

"""Turning spool records into stored sessions and steps (exactly once)."""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import json
import logging
import os
import re
import sqlite3
from collections import OrderedDict
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from ..errors import StoreError
from ..paths import session_file
from ..redact import MASK, Redactor
from ..store import Store, env_blob
from . import records
from .known_secrets import KnownSecrets
from .logonce import LogOnce
from .records import Dropped, Record

log = logging.getLogger("rw.ingest")

_PUNCH_HOLE, _KEEP_SIZE = 0x02, 0x01
_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
_libc.fallocate.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_long, ctypes.c_long]


def _fallocate(fd: int, mode: int, offset: int, length: int) -> int:
    return _libc.fallocate(fd, mode, offset, length)


CHUNK = records.MAX_RECORD + 64 * 1024
_ZEROS = bytes(1024 * 1024)
HIST_SUFFIX = ".hist"
SPOOL_SUFFIX = ".spool"
DROPPED = "dropped"  # the store's counter of records dropped, ever
# Our own bookkeeping variables are not part of the user's environment.
PRIVATE_ENV = ("RW_SESSION",)
_NUMBER = re.compile(r"-?\d+")
# What the hooks take for a leading space ([[:space:]]): not str.isspace(), for
# which 0x1C-0x1F are spaces too (a line typed with 0x1E first is recorded).
_SPACE = frozenset(" \t\n\v\f\r")


def _time(value: str) -> float:
    return float(value.replace(",", "."))


def _int_or_none(value: str) -> int | None:
    return int(value) if value.lstrip("-").isdigit() else None


def store_trouble(e: Exception) -> bool:
    """Whether an error is the store's (full, busy, failing, closed), not a record's:
    values can only break a constraint (a NaN into NOT NULL) or be too big."""
    if isinstance(e, (sqlite3.IntegrityError, sqlite3.DataError)):
        return False
    return isinstance(e, (sqlite3.Error, OSError, MemoryError, StoreError))


def _why(e: Exception) -> str:
    return str(e) if isinstance(e, ValueError) else f"{type(e).__name__}: {e}"


def _digest(salt: str, value: str) -> str:
    return hashlib.sha256(f"{salt}\0{value}".encode("utf-8", "surrogateescape")).hexdigest()


@dataclass
class IngestStats:
    records: int = 0
    dropped: int = 0
    redactions: int = 0


class Ingester:
    """Applies records to the store. The caller owns the transaction."""

    def __init__(self, store: Store, redactor: Redactor, ignore: list[re.Pattern[str]]):
        self.store = store
        self.redactor = redactor
        self.ignore = ignore
        self.stats = IngestStats()
        self._drops_log = LogOnce(log)
        self._next_number: dict[str, int] = {}
        self._sessions: set[str] = set()
        self._ignored: set[tuple[str, int]] = set()
        self._begun_here: set[tuple[str, int]] = set()
        self._env_cache: OrderedDict[bytes, int] = OrderedDict()
        self.known = KnownSecrets()  # the values of secret variables (known_secrets.py)
        # Per session: a salt, and the digests of the values that lines not
        # recorded gave to variables (see _on_U).
        self._hidden: dict[str, tuple[str, dict[str, str]]] = {}
        # For the daemon's step checkpoints: sessions opened, and steps begun
        # as (session, seq, number, started_at), since it last looked.
        # (number None: a step not recorded, such as a line typed with a leading
        # space; its shell still waits for an answer.)
        self.opened: list[str] = []
        self.begun: list[tuple[str, int, int | None, float]] = []
        self.ended = False

    def apply(self, item: Record | Dropped, source: str) -> None:
        """Store one record, or drop it and count it: whatever is wrong with a
        record loses that record alone. An error of the store itself (disk full,
        busy) raises, for the caller to roll back and retry: then nothing is lost."""
        if isinstance(item, Dropped):
            self._drop(source, "dropped %d bytes: %s", item.size, item.reason)
            return
        handler = getattr(self, f"_on_{item.type}", None)
        if handler is None:
            self._drop(source, "dropped a %s record: not one the daemon stores", item.type)
            return
        for retry in (False, True):
            try:
                with self.store.savepoint():
                    handler(item.fields)
            except Exception as e:  # noqa: BLE001 - sorted out below
                if store_trouble(e):
                    raise
                self._forget_rows()  # they may name rows the savepoint took back
                if retry or isinstance(e, ValueError):
                    self._drop(source, "dropped a %s record: %s", item.type, _why(e))
                    return
                # Anything else may have come of a stale cache: once more from the store.
            else:
                self.stats.records += 1
                return

    def _drop(self, source: str, msg: str, *args: object) -> None:
        self.stats.dropped += 1
        self.store.add_counter(DROPPED, 1)
        self._drops_log.warning(source, f"%s: {msg}", source, *args)

    def _on_S(self, f: list[str]) -> None:
        sid, parent, shell, version, pid, tty, started, cwd, host, user = f[:10]
        if not sid:
            raise ValueError("empty session id")
        branch_point = _int_or_none(f[10]) if len(f) > 10 else None
        if branch_point is not None and not (parent and self.store.session_exists(parent)):
            raise ValueError(f"branch of unknown session {parent[:24]!r}")
        self.store.upsert_session(
            sid,
            parent_id=parent or None,
            shell=shell,
            shell_version=version,
            pid=_int_or_none(pid),
            tty=tty or None,
            started_at=_time(started),
            cwd=cwd,
            host=host,
            user=user,
            env_id=self._env_id(f[11], f[12:], sid, parent) if len(f) > 11 else None,
            branch_point=branch_point,
        )
        self.opened.append(sid)

    def _on_H(self, f: list[str]) -> None:
        command = records.history_command(f[4])
        if command[:1] in _SPACE:
            # A line typed with a leading space: never recorded.
            self._ignored.add((f[0], int(f[1])))
            self.begun.append((f[0], int(f[1]), None, _time(f[2])))
            return
        self._on_B([*f[:4], command])

    def _on_P(self, f: list[str]) -> None:
        """A step whose text is only the first simple command of its line, as far
        as the shell can tell (bash with history off): stored marked partial."""
        self._on_B(f, partial=True)

    def _on_B(self, f: list[str], partial: bool = False) -> None:
        sid, seq_s, started, cwd, command = f
        seq = int(seq_s)
        if sid not in self._sessions:
            if not self.store.session_exists(sid):
                raise ValueError(f"step for unknown session {sid[:24]!r}")
            self._sessions.add(sid)
        if any(p.search(command) for p in self.ignore):
            self._ignored.add((sid, seq))
            self.begun.append((sid, seq, None, _time(started)))
            return
        command, n = self.known.redactor(sid, self.redactor).text(command)
        self._count_redactions(n)
        number = self._next_number.get(sid) or self.store.next_step_number(sid)
        if self.store.begin_step(sid, number, seq, command, cwd, _time(started), partial):
            self._next_number[sid] = number + 1
            if len(self._begun_here) >= 4096:  # steps whose shell died before they ended
                self._begun_here.clear()
            self._begun_here.add((sid, seq))
            self.begun.append((sid, seq, number, _time(started)))
        # else: already ingested (a spool read twice after a crash)

    def _on_E(self, f: list[str]) -> None:
        sid, seq_s, ended, status, pipestatus, cwd, fmt = f[:7]
        seq = int(seq_s)
        if (sid, seq) in self._ignored:
            self._ignored.discard((sid, seq))
            self._on_U([sid, ended, *f[6:]])
            return
        self.ended = True
        if (sid, seq) in self._begun_here:
            # Begun by this ingester and not ended since: no need to ask the store.
            self._begun_here.discard((sid, seq))
        else:
            state = self.store.step_is_open(sid, seq)
            if state is None:
                raise ValueError(f"end of a step never begun ({sid[:24]} #{seq})")
            if not state:
                return  # already ingested (a spool read twice after a crash)
        self.store.end_step(
            sid,
            seq,
            ended_at=_time(ended),
            exit_code=_int_or_none(status),
            pipestatus=" ".join(_NUMBER.findall(pipestatus)),
            cwd=cwd,
            env_id=self._env_id(fmt, f[7:], sid),
        )

    def _on_A(self, f: list[str]) -> None:
        sid, seq = f[0], int(f[1])
        self.store.confirm_step_checkpoint(sid, seq)

    def _on_N(self, f: list[str]) -> None:
        sid, name = f
        if not self.store.set_session_name(sid, name):
            raise ValueError(f"name for unknown session {sid[:24]!r}")

    def _on_X(self, f: list[str]) -> None:
        sid, ended = f
        self.store.end_session(sid, _time(ended))

    def _on_U(self, f: list[str]) -> None:
        """A line that was not recorded ran (typed with a leading space, kept out
        of history, or ignored by the config): the values it gave variables are
        left out of every environment stored after it in this session (and its
        branches), for as long as the variables keep them."""
        sid, fmt, payload = f[0], f[2], f[3:]
        if not self.store.session_exists(sid):
            raise ValueError(f"unrecorded line of unknown session {sid[:24]!r}")
        env = self._parse_env(fmt, payload)
        before = self.store.env_before(sid, self.store.next_step_number(sid))
        stored = self.store.env(before) if before is not None else {}
        salt, names = self._hidden_in(sid)
        changed = {k: _digest(salt, v) for k, v in env.items() if stored.get(k) != v}
        if changed:
            names.update(changed)
            self.store.set_meta(f"hidden-env:{sid}", json.dumps([salt, names]))

    def _on_L(self, f: list[str]) -> None:
        """A shell could not write its records for a while: say so, keep the count."""
        sid, count, since, until, why = f
        n = int(count)
        if n < 1 or n > 1 << 40:
            raise ValueError(f"lost-commands count {count[:24]!r}")
        loss = dict(session=sid, commands=n, since=_time(since), until=_time(until), why=why)
        self.store.add_counter("lost_commands", n)
        self.store.set_meta("last_loss", json.dumps(loss))
        log.warning("session %s: %d command(s) could not be recorded: %s", sid, n, why)

    def _hidden_in(self, sid: str, parent: str = "") -> tuple[str, dict[str, str]]:
        """The session's hidden variables (a new session inherits its parent's)."""
        hidden = self._hidden.get(sid)
        if hidden is None:
            saved = self.store.meta(f"hidden-env:{sid}")
            if saved is None and parent and self._hidden_in(parent)[1]:
                saved = json.dumps(self._hidden_in(parent))
                self.store.set_meta(f"hidden-env:{sid}", saved)
            salt, names = json.loads(saved) if saved else (os.urandom(16).hex(), {})
            hidden = self._hidden[sid] = (salt, names)
        return hidden

    def _parse_env(self, fmt: str, payload: list[str]) -> dict[str, str]:
        env = records.parse_env(fmt, payload)
        for name in PRIVATE_ENV:
            env.pop(name, None)
        for name in [n for n in env if n.startswith("__rw_")]:
            del env[name]  # the hooks' own, exported by a user's `set -a`
        return env

    def _env_id(self, fmt: str, payload: list[str], sid: str = "", parent: str = "") -> int | None:
        if fmt == "none":
            return None
        salt, names = self._hidden_in(sid, parent) if sid else ("", {})
        raw = "\0".join((sid, fmt, *payload, *(f"{k}={v}" for k, v in names.items())))
        raw_key = hashlib.sha1(raw.encode("utf-8", "replace")).digest()
        cached = self._env_cache.get(raw_key)
        if cached is not None:
            self._env_cache.move_to_end(raw_key)
            return cached
        env = self._parse_env(fmt, payload)
        hidden = 0
        for name, digest in list(names.items()):
            if name in env and _digest(salt, env[name]) == digest:
                env[name] = MASK
                hidden += 1
            else:  # set again since, by a recorded line (or unset)
                del names[name]
                self.store.set_meta(
                    f"hidden-env:{sid}", json.dumps([salt, names]) if names else None
                )
        env, n = self.redactor.env(plain := env)
        self.known.learn(sid, plain, env)
        self._count_redactions(n + hidden)
        env_id = self.store.add_env(*env_blob(env))
        self._env_cache[raw_key] = env_id
        if len(self._env_cache) > 256:
            self._env_cache.popitem(last=False)
        return env_id

    def _count_redactions(self, n: int) -> None:
        if n:
            self.stats.redactions += n
            self.store.add_counter("redactions", n)

    def forget_caches(self) -> None:
        """After a rolled-back transaction the caches may name rows that do not exist."""
        self.opened.clear()
        self.begun.clear()
        self._forget_rows()

    def _forget_rows(self) -> None:
        self._next_number.clear()
        self._env_cache.clear()
        self._hidden.clear()
        self._sessions.clear()
        self._begun_here.clear()


LOW_SPACE = 64 * 1024


def space_problem(*dirs: Path) -> str | None:
    """What is wrong when a directory's filesystem is (nearly) full: records
    written there are lost."""
    for d in dirs:
        try:
            st = os.statvfs(d)
        except OSError:
            continue
        free = (st.f_bfree if os.getuid() == 0 else st.f_bavail) * st.f_frsize
        if free < LOW_SPACE:
            return f"no space left on device: {free} bytes free in {d}; commands typed now are lost"
    return None


def punch(path: Path, start: int, end: int) -> bool:
    """Erase bytes [start, end) of a spool that its writer still appends to.

    Punching a hole keeps the file's size and offsets (the partial blocks at
    its edges are zeroed), so it is safe against the shell appending with
    O_APPEND meanwhile. Where the filesystem cannot punch holes, the bytes
    are overwritten with zeros; their space comes back when the session ends
    and its spool is removed.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
    except OSError:
        return False
    try:
        if _fallocate(fd, _PUNCH_HOLE | _KEEP_SIZE, start, end - start) != 0:
            for at in range(start, end, len(_ZEROS)):
                os.pwrite(fd, _ZEROS[: min(len(_ZEROS), end - at)], at)
        return True
    except OSError as e:
        log.warning("%s: cannot erase its ingested records: %s", path.name, e)
        return False
    finally:
        os.close(fd)


class SpoolReader:
    """Reads each session's spool file from the offset last committed with its records."""

    def __init__(self, spool_dir: Path, ingester: Ingester, scratch_dir: Path | None = None):
        self.spool_dir = spool_dir
        self.scratch_dir = scratch_dir or spool_dir
        self._offsets: dict[str, int] = {}
        self.ingester = ingester
        self.store = ingester.store
        self._punched: dict[str, int] = {}

    def spool_files(self) -> list[Path]:
        try:
            return sorted(p for p in self.spool_dir.iterdir() if p.name.endswith(SPOOL_SUFFIX))
        except FileNotFoundError:
            return []

    def spool_files_names(self) -> list[str]:
        return [p.name for p in self.spool_files()]

    def ingest_all(self, finished: AbstractSet[str] = frozenset()) -> int:
        """Ingest every spool; `finished` names sessions whose writer is gone."""
        total = 0
        for path in self.spool_files():
            total += self.ingest_file(path, final=path.name[: -len(SPOOL_SUFFIX)] in finished)
        return total

    def ingest_file(self, path: Path, final: bool = False) -> int:
        """Ingest what is complete in `path`; return the number of records applied."""
        key = path.name
        total = 0
        while True:
            offset = self._offsets.get(key)
            if offset is None:
                offset = self._offsets[key] = self.store.spool_offset(key)
            try:
                with open(path, "rb") as fh:
                    st = os.fstat(fh.fileno())
                    size = st.st_size
                    if st.st_mode & 0o077 and st.st_uid == os.getuid():
                        # Made by a hook under the user's umask (an older one).
                        os.fchmod(fh.fileno(), 0o600)
                    if offset > size:
                        log.warning("%s: shorter than its ingested offset; starting over", key)
                        offset = self._offsets[key] = 0
                    if offset == size:
                        return total
                    fh.seek(offset)
                    buf = fh.read(CHUNK)
            except FileNotFoundError:
                return total
            more = offset + len(buf) < size
            applied = 0
            try:
                with self.store.transaction():
                    pos = 0
                    for item, end in records.parse(buf, final=final and not more):
                        self.ingester.apply(item, key)
                        pos = end
                        applied += 1
                    if pos:
                        self.store.set_spool_offset(key, offset + pos)
            except BaseException:
                self.ingester.forget_caches()
                self._offsets.pop(key, None)
                raise
            if pos:
                self._offsets[key] = offset + pos
            total += applied
            if pos:
                self._release(path, offset + pos)
            if not more or pos == 0:
                return total

    def _release(self, path: Path, ingested: int) -> None:
        """Remove the ingested records from disk at once: they hold commands and
        environments in clear, secrets included (see `punch`)."""
        start = self._punched.get(path.name, 0)
        if ingested > start and punch(path, start, ingested):
            self._punched[path.name] = ingested

    def remove_if_done(self, sid: str) -> bool:
        """Delete a finished session's spool once everything in it is stored."""
        path = session_file(self.spool_dir, sid, SPOOL_SUFFIX)
        hist = session_file(self.scratch_dir, sid, HIST_SUFFIX)
        if path is None or hist is None:
            return False
        try:
            size = path.stat().st_size
        except FileNotFoundError:
            return False
        if self.store.spool_offset(path.name) < size:
            return False
        path.unlink(missing_ok=True)
        hist.unlink(missing_ok=True)
        self._punched.pop(path.name, None)
        self._offsets.pop(path.name, None)
        with self.store.transaction():
            self.store.forget_spool(path.name)
        return True

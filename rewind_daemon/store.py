"""The SQLite store. Owns the schema, its version and every SQL statement on it."""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import struct
import threading
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from .errors import NotFound, RwError, StoreBusy, StoreError
from .paths import ensure_private_dir, is_session_id, new_session_id

try:  # (not in the remote agent's bundle, which is pure Python: it writes zlib)
    import zstandard
except ImportError:  # pragma: no cover - where its wheel does not install
    zstandard = None  # type: ignore[assignment]

SCHEMA_VERSION = 9

_SCHEMA_V1 = """
CREATE TABLE sessions (
    id            TEXT PRIMARY KEY,
    name          TEXT,
    shell         TEXT,
    shell_version TEXT,
    host          TEXT,
    user          TEXT,
    tty           TEXT,
    pid           INTEGER,
    cwd           TEXT,
    started_at    REAL NOT NULL,
    ended_at      REAL,
    parent_id     TEXT,
    branch_point  INTEGER,
    origin        TEXT NOT NULL DEFAULT 'shell'
);
CREATE INDEX sessions_by_start ON sessions (started_at);
CREATE INDEX sessions_by_name ON sessions (name);

CREATE TABLE envs (
    id   INTEGER PRIMARY KEY,
    hash BLOB NOT NULL UNIQUE,
    data BLOB NOT NULL
);

CREATE TABLE steps (
    session    TEXT NOT NULL,
    number     INTEGER NOT NULL,
    seq        INTEGER NOT NULL,
    command    TEXT NOT NULL,
    cwd_before TEXT,
    cwd_after  TEXT,
    started_at REAL NOT NULL,
    ended_at   REAL,
    exit_code  INTEGER,
    pipestatus TEXT,
    env_id     INTEGER REFERENCES envs (id),
    PRIMARY KEY (session, number)
) WITHOUT ROWID;
CREATE UNIQUE INDEX steps_by_seq ON steps (session, seq);

CREATE TABLE spool_offsets (
    path   TEXT PRIMARY KEY,
    offset INTEGER NOT NULL
);

CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value
);
"""

# v2: the environment a session started with (for going back to before step 1)
_SCHEMA_V2 = """
ALTER TABLE sessions ADD COLUMN env_id INTEGER REFERENCES envs (id);
"""

# v3: what each step printed (replays record it), and breakpoints
_SCHEMA_V3 = """
CREATE TABLE step_outputs (
    session TEXT NOT NULL,
    number  INTEGER NOT NULL,
    output  BLOB NOT NULL,
    PRIMARY KEY (session, number)
) WITHOUT ROWID;

CREATE TABLE breakpoints (
    id      INTEGER PRIMARY KEY,
    session TEXT NOT NULL,
    kind    TEXT NOT NULL,
    step    INTEGER,
    pattern TEXT,
    target  TEXT
);
CREATE INDEX breakpoints_by_session ON breakpoints (session);
"""

# v4: checkpoints (file trees by manifest digest, probe states) and watched paths
_SCHEMA_V4 = """
CREATE TABLE checkpoints (
    id         INTEGER PRIMARY KEY,
    created_at REAL NOT NULL,
    label      TEXT,
    origin     TEXT NOT NULL,
    session    TEXT,
    step       INTEGER,
    state      TEXT NOT NULL DEFAULT 'ok'
);
CREATE INDEX checkpoints_by_step ON checkpoints (session, step);

CREATE TABLE checkpoint_trees (
    checkpoint INTEGER NOT NULL,
    root       TEXT NOT NULL,
    manifest   TEXT NOT NULL,
    taken_ns   INTEGER NOT NULL,
    entries    INTEGER NOT NULL,
    PRIMARY KEY (checkpoint, root)
) WITHOUT ROWID;
CREATE INDEX checkpoint_trees_by_root ON checkpoint_trees (root, checkpoint);

CREATE TABLE checkpoint_probes (
    checkpoint INTEGER NOT NULL,
    probe      TEXT NOT NULL,
    data       BLOB NOT NULL,
    PRIMARY KEY (checkpoint, probe)
) WITHOUT ROWID;

CREATE TABLE watches (
    path     TEXT PRIMARY KEY,
    excludes TEXT NOT NULL DEFAULT '[]',
    added_at REAL NOT NULL
);
"""

# v5: one model for every step's output (recorded shells, replays, guard runs):
# the bytes as the terminal got them and their text, both compressed and
# redacted, the size the step printed, the bytes the cap left out, whether it
# is complete (the step's end was seen), and when each part was printed; and
# the recorded terminals' sizes over time (for the cast export). Replays' outputs move over as they
# were (their text is made from the bytes when read: it is NULL).
_SCHEMA_V5 = """
CREATE TABLE step_outputs_v5 (
    session  TEXT NOT NULL,
    number   INTEGER NOT NULL,
    raw      BLOB NOT NULL,
    text     BLOB,
    size     INTEGER NOT NULL,
    omitted  INTEGER NOT NULL DEFAULT 0,
    complete INTEGER NOT NULL DEFAULT 1,
    timing   BLOB,
    PRIMARY KEY (session, number)
) WITHOUT ROWID;
INSERT INTO step_outputs_v5 (session, number, raw, size)
    SELECT session, number, output, -1 FROM step_outputs;
DROP TABLE step_outputs;
ALTER TABLE step_outputs_v5 RENAME TO step_outputs;

CREATE TABLE terminal_sizes (
    session TEXT NOT NULL,
    at      REAL NOT NULL,
    columns INTEGER NOT NULL,
    rows    INTEGER NOT NULL,
    PRIMARY KEY (session, at)
) WITHOUT ROWID;
"""

# v6: the search index (rw search). Two contentless FTS5 tables hold only the
# words of what is stored (commands, outputs' text: redacted), never the text
# itself; a row's id is its step's `search_id`, made from when the step started
# (milliseconds << 16, plus a few bits to keep ids apart), so the index lists
# matches newest first and a time range is a range of ids. Words (unicode61),
# not trigrams, and no positions (detail=none): the index stays a fraction of
# the text's size; rw search checks each match in the text itself. A step not
# indexed yet has search_id NULL (0: a branch's copy of its parent's step, found
# in the parent); an output not indexed yet is listed in search_pending (a
# table of its own: marking the output's row would write its blobs again). The
# daemon indexes
# them when idle (Store.index_pending), so ingest pays nothing for it.
_SCHEMA_V6 = """
ALTER TABLE steps ADD COLUMN search_id INTEGER;
CREATE INDEX steps_by_search_id ON steps (search_id);
CREATE INDEX steps_by_session_search_id ON steps (session, search_id);
CREATE TABLE search_pending (
    session TEXT NOT NULL,
    number  INTEGER NOT NULL,
    PRIMARY KEY (session, number)
) WITHOUT ROWID;
INSERT INTO search_pending (session, number) SELECT session, number FROM step_outputs;
CREATE VIRTUAL TABLE search_commands USING fts5 (
    command, content='', detail=none, tokenize='unicode61 remove_diacritics 2'
);
CREATE VIRTUAL TABLE search_outputs USING fts5 (
    output, content='', detail=none, tokenize='unicode61 remove_diacritics 2'
);
"""

# v7: an output's text may be stored as X'' (an empty blob: zlib never makes
# one): the bytes' own, decoded (CR LF as LF), where the bytes hold no escape,
# CR or backspace (termtext.is_plain), so it is neither redacted, compressed nor
# kept twice. Nothing moves: older rows keep their text; the version keeps an
# older rw, which would take X'' for a compressed text, from reading the store.
_SCHEMA_V7 = ""

# v8: outputs' blobs (bytes, text, timing) may be zstd frames (they begin with
# ZSTD_MAGIC; zlib's with 0x78), written where the zstandard package is there:
# level 1 is about three times as fast as zlib's level 2 over output, and
# stores it a little smaller. Nothing moves: older rows stay zlib, and both
# are read (zstd never makes an empty blob either); the version keeps an older
# rw, which knows zlib alone, from reading the store.
_SCHEMA_V8 = ""

# v9: commands and directories keep their exact bytes. One that is not UTF-8
# (a directory named with byte 0xff, a command typed with one) has them in its
# *_bytes column, and its text column holds its text form (text_form: each such
# byte as \xHH), which search, its index and the cwd filter read; NULL where
# the text is exact. A step is `partial` when its command may be only the
# first simple command of the line (bash with history off).
_SCHEMA_V9 = """
ALTER TABLE steps ADD COLUMN command_bytes BLOB;
ALTER TABLE steps ADD COLUMN cwd_before_bytes BLOB;
ALTER TABLE steps ADD COLUMN cwd_after_bytes BLOB;
ALTER TABLE sessions ADD COLUMN cwd_bytes BLOB;
ALTER TABLE steps ADD COLUMN partial INTEGER NOT NULL DEFAULT 0;
"""

MIGRATIONS = {
    1: _SCHEMA_V1, 2: _SCHEMA_V2, 3: _SCHEMA_V3, 4: _SCHEMA_V4, 5: _SCHEMA_V5, 6: _SCHEMA_V6,
    7: _SCHEMA_V7, 8: _SCHEMA_V8, 9: _SCHEMA_V9,
}  # fmt: skip

MAX_OUTPUT = 8 * 1024 * 1024  # bytes of a step's output kept, by default
BUSY_TIMEOUT_MS = 10000  # how long a writer waits for another's transaction


def is_busy(e: sqlite3.Error) -> bool:
    """Whether `e` says another connection holds the lock (not that the file is bad)."""
    return isinstance(e, sqlite3.OperationalError) and ("locked" in str(e) or "busy" in str(e))


@dataclass(frozen=True)
class SessionRow:
    id: str
    name: str | None
    shell: str | None
    shell_version: str | None
    host: str | None
    user: str | None
    tty: str | None
    pid: int | None
    cwd: str | None
    started_at: float
    ended_at: float | None
    parent_id: str | None
    branch_point: int | None
    origin: str
    env_id: int | None
    steps: int

    def __post_init__(self) -> None:
        if isinstance(self.cwd, bytes):  # (schema 9: its exact bytes)
            object.__setattr__(self, "cwd", _exact_text(self.cwd))


@dataclass(frozen=True)
class CheckpointRow:
    id: int
    created_at: float
    label: str | None
    origin: str  # manual | step | guard
    session: str | None
    step: int | None
    state: str  # ok | pending (a step checkpoint its shell has not confirmed)


@dataclass(frozen=True)
class TreeRow:
    root: str
    manifest: str
    taken_ns: int
    entries: int


@dataclass(frozen=True)
class StepRow:
    session: str
    number: int
    command: str
    cwd_before: str | None
    cwd_after: str | None
    started_at: float
    ended_at: float | None
    exit_code: int | None
    pipestatus: str | None
    env_id: int | None
    # Its command may be only the first simple command of the line it ran
    # (bash with history off): it must not run again as if it were the line.
    partial: bool = False

    def __post_init__(self) -> None:
        # (schema 9: bytes that are not UTF-8, as a column that holds them exact
        # gives them; a partial step's command, as bytes after a NUL, which no
        # command holds: see _step_cols)
        for name in ("command", "cwd_before", "cwd_after"):
            value = getattr(self, name)
            if isinstance(value, bytes):
                if name == "command" and value[:1] == b"\x00":
                    object.__setattr__(self, "partial", True)
                    value = value[1:]
                object.__setattr__(self, name, _exact_text(value))


def _exact_text(data: bytes) -> str:
    """Bytes as text, each byte that is not UTF-8 kept as a surrogate
    (surrogateescape, as environment values are): encoded back, they are exact."""
    return data.decode("utf-8", "surrogateescape")


def exact_bytes(text: str | None) -> bytes | None:
    """What a *_bytes column holds for `text`: its exact bytes where it is not
    UTF-8 (holds surrogates), else None."""
    if text is None or text.isascii():
        return None
    try:
        text.encode("utf-8")
        return None
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogateescape")


def text_form(text: str) -> str:
    """`text` as UTF-8 can hold it: each byte that is not UTF-8 written \\xHH, as
    rw shows it. What a text column, search and its index hold."""
    raw = exact_bytes(text)
    return text if raw is None else raw.decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class OutputRow:
    """A step's output as stored: the bytes the terminal got (redacted, capped)
    and their text (None for a replay's output stored before v5: made from the
    bytes when read)."""

    raw: bytes
    text: str | None
    size: int  # bytes the step printed
    omitted: int = 0  # of them, left out by the cap
    complete: bool = True  # the step's end was seen (not cut off by its shell's end)
    # When its parts were printed: (offset in the output as printed, before the
    # cap and redaction; wall time), in order. Empty where not recorded (replays).
    timing: tuple[tuple[int, float], ...] = ()
    # The text is the bytes decoded (plain_text): stored once, as the bytes.
    plain: bool = False


def _session_cols(exact: bool) -> str:
    """A SessionRow's columns (`exact`: schema 9's exact bytes where stored)."""
    return (
        "s.id, s.name, s.shell, s.shell_version, s.host, s.user, s.tty, s.pid, "
        + ("coalesce(s.cwd_bytes, s.cwd), " if exact else "s.cwd, ")
        + "s.started_at, s.ended_at, s.parent_id, s.branch_point, s.origin, s.env_id, "
        # steps are numbered 1..N without gaps, so the count is an index lookup
        "coalesce((SELECT max(number) FROM steps WHERE session = s.id), 0)"
    )


_CHECKPOINT_COLS = "id, created_at, label, origin, session, step, state"


def _step_cols(t: str, exact: bool) -> str:
    """A StepRow's columns of steps `t` (t: "" or "s."; `exact`: schema 9's
    exact bytes where stored)."""
    cols = [f"{t}{c}" for c in ("command", "cwd_before", "cwd_after")]
    if exact:
        cols = [f"coalesce({c}_bytes, {c})" for c in cols]
        # (A partial step's command as bytes after a NUL: StepRow reads the
        # flag from it, so every query of steps has it, in the same columns.)
        cols[0] = f"CASE WHEN {t}partial THEN CAST(X'00' || {cols[0]} AS BLOB) ELSE {cols[0]} END"
    return (
        f"{t}session, {t}number, {', '.join(cols)}, {t}started_at, {t}ended_at,"
        f" {t}exit_code, {t}pipestatus, {t}env_id"
    )


# Search ids (schema 6): a step's is the millisecond it started << 16, plus 1
# to 65535 (steps that started in the same millisecond).
SEARCH_IDS_PER_MS = 1 << 16
MAX_SEARCH_ID = (1 << 63) - 1
INDEX_BATCH_BYTES = 256 * 1024  # of compressed outputs indexed in one batch
INDEX_TRANSACTION = 2.0  # seconds of batches at most in one transaction
WAL_PAGES = 8192  # the daemon's write-ahead log copied at most this long (see defer_checkpoints)
WAL_KEEP = 4 << 20  # bytes of the log's file kept once copied


def search_id_floor(ts: float) -> int:
    """The search ids of steps started at `ts` or later are above this."""
    return max(0, int(ts * 1000)) * SEARCH_IDS_PER_MS


def plain_text(raw: bytes) -> str:
    """The text of output whose bytes hold no escape, CR (but before LF) or
    backspace (termtext.is_plain): the bytes decoded, CR LF as LF."""
    return raw.decode("utf-8", "replace").replace("\r\n", "\n")


# An output's bytes, where its text is not stored apart (NULL or X'': schema 7).
_RAW_IF_NO_TEXT = "CASE WHEN o.text IS NULL OR o.text = X'' THEN o.raw END"


ZSTD_MAGIC = b"\x28\xb5\x2f\xfd"  # (a zlib stream's first byte is 0x78)
ZSTD_LEVEL = 1
ZLIB_LEVEL = 2  # three times as fast as 6 over output, a third larger
_codecs = threading.local()  # (a zstd context is not to be shared by threads)


def _zstd() -> tuple:
    """This thread's zstd (compressor, decompressor)."""
    pair = getattr(_codecs, "zstd", None)
    if pair is None:
        pair = _codecs.zstd = (
            zstandard.ZstdCompressor(level=ZSTD_LEVEL),
            zstandard.ZstdDecompressor(),
        )
    return pair


def pack(data: bytes) -> bytes:
    """An output's blob (bytes, text or timing) as stored: zstd where the
    zstandard package is there, else zlib (see _SCHEMA_V8). The same data
    always makes the same blob, which outputs_alike relies on."""
    if zstandard is not None:
        return _zstd()[0].compress(data)
    return zlib.compress(data, ZLIB_LEVEL)


def unpack(blob: bytes) -> bytes:
    """The data of an output's blob, zstd or zlib."""
    if blob[:4] != ZSTD_MAGIC:
        return zlib.decompress(blob)
    if zstandard is None:
        raise StoreError(
            "an output in the store is compressed with zstd: install the zstandard"
            " package (pip install zstandard) to read it"
        )
    return _zstd()[1].decompress(blob)


def _stored_text(text: bytes, raw: bytes | None) -> str:
    """An output's text from its columns text (not NULL) and _RAW_IF_NO_TEXT."""
    return unpack(text).decode() if text else plain_text(unpack(raw or b""))


def _text_or_raw(cols: tuple | list) -> tuple[str | None, bytes | None]:
    """An output's (text, None), or (None, bytes) where no text was stored, or
    (None, None): no output (cols: text and _RAW_IF_NO_TEXT)."""
    if not cols or (cols[0] is None and cols[1] is None):
        return None, None
    if cols[0] is not None:
        return _stored_text(cols[0], cols[1]), None
    return None, unpack(cols[1])


@dataclass(frozen=True)
class SearchFilter:
    """Which steps a search looks at (None: any)."""

    session: str | None = None
    cwd: str | None = None  # this directory or below it
    failed: bool = False
    since: float | None = None
    until: float | None = None
    first_id: int = 1  # search ids (see search_id_floor), from since/until/session
    last_id: int = MAX_SEARCH_ID

    def sql(self, by_time: bool) -> tuple[str, list]:
        """SQL conditions on steps `s` (and their values); `by_time`: since and
        until as times (where no search ids say when steps started)."""
        cond = ""
        args: list[object] = []
        if self.session is not None:
            cond += " AND s.session = ?"
            args.append(self.session)
        if self.cwd is not None:
            under = self.cwd.rstrip("/") + "/"
            cond += " AND (s.cwd_before = ? OR (s.cwd_before >= ? AND s.cwd_before < ?))"
            # ("0" follows "/"; the text forms, as the column holds them)
            args += [text_form(self.cwd), text_form(under), text_form(under[:-1] + "0")]
        if self.failed:
            cond += " AND s.exit_code IS NOT NULL AND s.exit_code != 0"
        if by_time and self.since is not None:
            cond += " AND s.started_at >= ?"
            args.append(self.since)
        if by_time and self.until is not None:
            cond += " AND s.started_at < ?"
            args.append(self.until)
        return cond, args


_OUTPUT_COLS = "raw, text, size, omitted, complete, timing"
_OUTPUT_COLS_V3 = "output, NULL, -1, 0, 1, NULL"  # (size -1: unknown, the bytes' length)
_TIMING = struct.Struct("<Qd")


def _output_row(
    raw: bytes, text: bytes | None, size: int, omitted: int, complete: int, timing: bytes | None
) -> OutputRow:
    times = tuple(_TIMING.iter_unpack(unpack(timing))) if timing else ()
    data = unpack(raw)
    if text == b"":  # (schema 7: the bytes' own)
        return OutputRow(data, plain_text(data), size, omitted, bool(complete), times, True)
    return OutputRow(
        data, None if text is None else unpack(text).decode(),
        size, omitted, bool(complete), times,
    )  # fmt: skip


@dataclass(frozen=True)
class OutputBlobs:
    """A step's output as its row holds it (output_blobs): made apart from the
    store, in an ingest worker too, and stored by Store.set_output."""

    raw: bytes
    text: bytes | None  # X'': the bytes' own (schema 7); None: not made
    size: int
    omitted: int
    complete: bool
    timing: bytes | None


def output_blobs(out: OutputRow) -> OutputBlobs:
    """The columns of `out`'s row: its bytes, text and timing compressed."""
    if out.plain:
        text: bytes | None = b""  # (the bytes' own: see _SCHEMA_V7)
    else:
        text = None if out.text is None else pack(out.text.encode())
    timing = b"".join(_TIMING.pack(o, t) for o, t in out.timing)
    return OutputBlobs(
        pack(out.raw), text, out.size, out.omitted, out.complete, pack(timing) if timing else None
    )


def env_blob(env: dict[str, str]) -> tuple[bytes, bytes]:
    """(hash, compressed data) of an environment, for deduplicated storage."""
    raw = json.dumps(env, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(raw).digest(), zlib.compress(raw, 6)


def private_db_file(path: Path, create: bool = True) -> None:
    """Make the SQLite file `path` 0600 in a private directory, creating it when
    `create`, whatever the umask: SQLite gives its -wal and -shm the database
    file's mode, so they are 0600 too (those of an older rw are made so)."""
    if create:
        ensure_private_dir(path.parent)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | (os.O_CREAT if create else 0), 0o600)
    except FileNotFoundError:
        return
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.fchmod(fd, 0o600)
    finally:
        os.close(fd)
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            st = side.lstat()
        except FileNotFoundError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o077 and st.st_uid == os.geteuid():
            os.chmod(side, 0o600)


class Store:
    def __init__(self, path: Path, readonly: bool = False):
        self.path = path
        try:
            private_db_file(path, create=not readonly)
            if readonly:
                uri = f"file:{path}?mode=ro"
                self.db = sqlite3.connect(uri, uri=True, timeout=10, isolation_level=None)
            else:
                self.db = sqlite3.connect(path, timeout=10, isolation_level=None)
                self.db.execute("PRAGMA journal_mode=WAL")
                self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            self._migrate(readonly)
        except (sqlite3.DatabaseError, OSError) as e:
            raise StoreError(f"store {path}: {e}") from None

    @classmethod
    def open_for_reading(cls, path: Path) -> Store | None:
        """The store for queries, or None when nothing was ever recorded."""
        if not path.exists():
            return None
        return cls(path, readonly=True)

    def close(self) -> None:
        self.db.close()

    def _migrate(self, readonly: bool) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        # A store opened for reading is read as it is (the daemon migrates it).
        self._output_cols = _OUTPUT_COLS if version >= 5 or not readonly else _OUTPUT_COLS_V3
        exact = version >= 9 or not readonly
        self._session_cols = _session_cols(exact)
        self._step_cols, self._step_cols_s = _step_cols("", exact), _step_cols("s.", exact)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"store {self.path} has schema {version}; this rw knows up to "
                f"{SCHEMA_VERSION}: upgrade rw"
            )
        if version == SCHEMA_VERSION or readonly:
            return
        with self.transaction():
            for v in range(version + 1, SCHEMA_VERSION + 1):
                for stmt in MIGRATIONS[v].split(";"):
                    if stmt.strip():
                        self.db.execute(stmt)
            if version < 5 <= SCHEMA_VERSION:
                # (v4 kept outputs compressed, size unknown to SQL: it is read here.)
                rows = self.db.execute("SELECT session, number, raw FROM step_outputs")
                sizes = [(len(unpack(raw)), sid, n) for sid, n, raw in rows.fetchall()]
                self.db.executemany(
                    "UPDATE step_outputs SET size=? WHERE session=? AND number=?", sizes
                )
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def defer_checkpoints(self) -> None:
        """The daemon's connection: SQLite copies the write-ahead log into the
        database (a checkpoint: the copy and its fsyncs) only once it holds
        WAL_PAGES, not every 1000 pages, so that a backlog's ingest does not
        wait for it; it is done when the daemon is idle (`copy_log`). Once
        copied, the log's file is cut back to WAL_KEEP by the next write."""
        self.db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")
        self.db.execute(f"PRAGMA journal_size_limit={WAL_KEEP}")

    def copy_log(self) -> None:
        """Copy the write-ahead log into the database where it has grown beyond
        WAL_KEEP (readers still reading it are not waited for)."""
        try:
            size = os.stat(f"{self.path}-wal").st_size
        except OSError:
            return
        if size > WAL_KEEP:
            self.db.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A write transaction; StoreBusy when another writer keeps the lock
        beyond the busy timeout."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as e:
            if is_busy(e):
                raise StoreBusy() from None
            raise
        try:
            yield
        except BaseException:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            raise
        try:
            self.db.execute("COMMIT")
        except sqlite3.OperationalError as e:
            if self.db.in_transaction:
                self.db.execute("ROLLBACK")
            if is_busy(e):
                raise StoreBusy() from None
            raise

    @contextmanager
    def savepoint(self) -> Iterator[None]:
        """Inside a transaction: what the block wrote is undone, alone, if it raises."""
        self.db.execute("SAVEPOINT rw_part")
        try:
            yield
        except BaseException:
            if self.db.in_transaction:  # (sqlite may have rolled it all back itself)
                self.db.execute("ROLLBACK TO rw_part")
                self.db.execute("RELEASE rw_part")
            raise
        self.db.execute("RELEASE rw_part")

    # --- ingest (the daemon is the one writer) ------------------------------

    def upsert_session(
        self,
        sid: str,
        *,
        parent_id: str | None,
        shell: str,
        shell_version: str,
        pid: int | None,
        tty: str | None,
        started_at: float,
        cwd: str,
        host: str,
        user: str,
        origin: str = "shell",
        env_id: int | None = None,
        branch_point: int | None = None,
        name: str | None = None,
    ) -> bool:
        """Insert a session; False when it already exists (then only a missing pid
        and tty are filled in: a shell adopting a branch made beforehand). A session
        with a branch point starts with copies of its parent's steps up to it."""
        if not is_session_id(sid):
            raise ValueError(f"not a session id: {sid[:40]!r}")
        if self.session_exists(sid):
            self.db.execute(
                "UPDATE sessions SET pid=coalesce(pid, ?), tty=coalesce(tty, ?) WHERE id=?",
                (pid, tty, sid),
            )
            return False
        cur = self.db.execute(
            "INSERT INTO sessions (id, parent_id, shell, shell_version, pid, tty, started_at,"
            " cwd, cwd_bytes, host, user, origin, env_id, branch_point, name)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (sid, parent_id, shell, shell_version, pid, tty, started_at, text_form(cwd),
             exact_bytes(cwd), host, user, origin, env_id, branch_point, name),
        )  # fmt: skip
        if cur.rowcount and parent_id and branch_point:
            # Copied steps get negative seqs, apart from the seqs a shell will send.
            self.db.execute(
                "INSERT INTO steps (session, number, seq, command, cwd_before, cwd_after,"
                " started_at, ended_at, exit_code, pipestatus, env_id, command_bytes,"
                " cwd_before_bytes, cwd_after_bytes, partial)"
                " SELECT ?, number, -number, command, cwd_before, cwd_after, started_at,"
                " ended_at, exit_code, pipestatus, env_id, command_bytes, cwd_before_bytes,"
                " cwd_after_bytes, partial"
                " FROM steps WHERE session=? AND number<=?",
                (sid, parent_id, branch_point),
            )
        return cur.rowcount > 0

    def create_branch(self, parent: str, step: int, name: str | None) -> tuple[str, str]:
        """A new session holding steps 1..`step` of `parent`, origin "branch";
        (its id, its name). The daemon makes these for hooked shells."""
        row = self.get_session(parent)
        if row is None:
            raise NotFound(f"no session {parent!r}")
        if not 1 <= step <= row.steps:
            raise RwError(f"session {parent} has steps 1 to {row.steps}, not {step}")
        sid = new_session_id()
        name = name or f"{row.name or parent[:12]}-branch-{step}"
        with self.transaction():
            self.upsert_session(
                sid,
                parent_id=parent,
                shell=row.shell or "",
                shell_version=row.shell_version or "",
                pid=None,
                tty=None,
                started_at=time.time(),
                cwd=row.cwd or "",
                host=row.host or "",
                user=row.user or "",
                origin="branch",
                env_id=row.env_id,
                branch_point=step,
                name=name,
            )
        return sid, name

    def schema_version(self) -> int:
        return self.db.execute("PRAGMA user_version").fetchone()[0]

    def session_exists(self, sid: str) -> bool:
        return self.db.execute("SELECT 1 FROM sessions WHERE id=?", (sid,)).fetchone() is not None

    def set_session_name(self, sid: str, name: str) -> bool:
        cur = self.db.execute("UPDATE sessions SET name=? WHERE id=?", (name, sid))
        return cur.rowcount > 0

    def end_session(self, sid: str, ended_at: float) -> None:
        """Mark a session ended; a step still open (the shell's last, `exit`) ends with it,
        its exit code unknown."""
        self.db.execute(
            "UPDATE sessions SET ended_at=? WHERE id=? AND ended_at IS NULL", (ended_at, sid)
        )
        self.db.execute(
            "UPDATE steps SET ended_at=max(started_at, ?) WHERE session=? AND ended_at IS NULL",
            (ended_at, sid),
        )

    def next_step_number(self, sid: str) -> int:
        row = self.db.execute("SELECT max(number) FROM steps WHERE session=?", (sid,)).fetchone()
        return (row[0] or 0) + 1

    def step_is_open(self, sid: str, seq: int) -> bool | None:
        """True if the step began and has not ended, False if it ended, None if unknown."""
        q = "SELECT ended_at IS NULL FROM steps WHERE session=? AND seq=?"
        row = self.db.execute(q, (sid, seq)).fetchone()
        return None if row is None else bool(row[0])

    def begin_step(
        self,
        sid: str,
        number: int,
        seq: int,
        command: str,
        cwd: str,
        started_at: float,
        partial: bool = False,
    ) -> bool:
        """Insert a step; False when its (session, seq) is already stored.
        `partial`: its command may be only the first of its line."""
        cur = self.db.execute(
            "INSERT INTO steps (session, number, seq, command, cwd_before, started_at,"
            " command_bytes, cwd_before_bytes, partial)"
            " VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (session, seq) DO NOTHING",
            (
                sid,
                number,
                seq,
                text_form(command),
                text_form(cwd),
                started_at,
                exact_bytes(command),
                exact_bytes(cwd),
                int(partial),
            ),  # fmt: skip
        )
        return cur.rowcount > 0

    def end_step(
        self,
        sid: str,
        seq: int,
        *,
        ended_at: float,
        exit_code: int | None,
        pipestatus: str,
        cwd: str,
        env_id: int | None,
    ) -> bool:
        cur = self.db.execute(
            "UPDATE steps SET ended_at=?, exit_code=?, pipestatus=?, cwd_after=?,"
            " cwd_after_bytes=?, env_id=? WHERE session=? AND seq=? AND ended_at IS NULL",
            (ended_at, exit_code, pipestatus, text_form(cwd), exact_bytes(cwd), env_id, sid, seq),
        )
        return cur.rowcount > 0

    def env_id(self, digest: bytes) -> int | None:
        row = self.db.execute("SELECT id FROM envs WHERE hash=?", (digest,)).fetchone()
        return row[0] if row else None

    def add_env(self, digest: bytes, data: bytes) -> int:
        existing = self.env_id(digest)
        if existing is not None:
            return existing
        cur = self.db.execute("INSERT INTO envs (hash, data) VALUES (?,?)", (digest, data))
        return int(cur.lastrowid or 0)

    def spool_offset(self, path: str) -> int:
        row = self.db.execute("SELECT offset FROM spool_offsets WHERE path=?", (path,)).fetchone()
        return row[0] if row else 0

    def set_spool_offset(self, path: str, offset: int) -> None:
        self.db.execute(
            "INSERT INTO spool_offsets (path, offset) VALUES (?,?)"
            " ON CONFLICT (path) DO UPDATE SET offset=excluded.offset",
            (path, offset),
        )

    def forget_spool(self, path: str) -> None:
        self.db.execute("DELETE FROM spool_offsets WHERE path=?", (path,))

    def add_counter(self, key: str, n: int) -> None:
        if n:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = value + excluded.value",
                (key, n),
            )

    def counter(self, key: str) -> int:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return int(row[0]) if row else 0

    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str | None) -> None:
        """Keep `value` under `key` (None removes it)."""
        if value is None:
            self.db.execute("DELETE FROM meta WHERE key=?", (key,))
        else:
            self.db.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    def open_sessions(self) -> list[tuple[str, int | None, str | None]]:
        """(id, pid, host) of sessions not yet marked ended that a shell records
        (a branch too: `rw branch --exec` opens a shell to record into it)."""
        q = (
            "SELECT id, pid, host FROM sessions WHERE ended_at IS NULL"
            " AND origin IN ('shell', 'branch')"
        )
        return list(self.db.execute(q))

    def last_activity(self, sid: str) -> float | None:
        row = self.db.execute(
            "SELECT max(coalesce(ended_at, started_at)) FROM steps WHERE session=?", (sid,)
        ).fetchone()
        return row[0]

    # --- queries ---------------------------------------------------------------

    def get_session(self, sid: str) -> SessionRow | None:
        row = self.db.execute(f"SELECT {self._session_cols} FROM sessions s WHERE s.id=?", (sid,))
        r = row.fetchone()
        return SessionRow(*r) if r else None

    def sessions(self, limit: int | None = None) -> list[SessionRow]:
        q = f"SELECT {self._session_cols} FROM sessions s ORDER BY s.started_at DESC, s.rowid DESC"
        if limit:
            q += f" LIMIT {int(limit)}"
        return [SessionRow(*r) for r in self.db.execute(q)]

    def session_ids_named(self, name: str) -> list[str]:
        """Sessions named `name`, the best match first: recorded ones (most recent
        first) before imported ones, whose names and times came from a file. An
        imported one is left out when `name` is also the start of a recorded id."""
        q = (
            "SELECT id FROM sessions s WHERE name=? AND (origin != 'import' OR NOT EXISTS"
            " (SELECT 1 FROM sessions r WHERE r.origin != 'import' AND r.id >= ? AND r.id < ?))"
            " ORDER BY origin = 'import', started_at DESC, rowid DESC"
        )
        return [r[0] for r in self.db.execute(q, (name, name, name + "\U0010ffff"))]

    def session_ids_with_prefix(self, prefix: str) -> list[str]:
        q = "SELECT id FROM sessions WHERE id >= ? AND id < ? ORDER BY id LIMIT 5"
        return [r[0] for r in self.db.execute(q, (prefix, prefix + "\U0010ffff"))]

    def latest_session_id(self, exclude: str | None = None) -> str | None:
        """The most recent session recorded here (`last`): imported ones only by
        name or id, since a file says when they started."""
        row = self.db.execute(
            "SELECT id FROM sessions WHERE id IS NOT ? AND origin != 'import'"
            " ORDER BY started_at DESC, rowid DESC LIMIT 1",
            (exclude,),
        ).fetchone()
        return row[0] if row else None

    def steps(self, sid: str, *, failed: bool = False, limit: int | None = None) -> list[StepRow]:
        where = "session=?"
        if failed:
            where += " AND exit_code IS NOT NULL AND exit_code != 0"
        q = f"SELECT {self._step_cols} FROM steps WHERE {where} ORDER BY number DESC"
        if limit:
            q += f" LIMIT {int(limit)}"
        rows = [StepRow(*r) for r in self.db.execute(q, (sid,))]
        rows.reverse()
        return rows

    def step(self, sid: str, number: int) -> StepRow | None:
        if not -(2**63) <= number < 2**63:
            return None  # (no row has it: SQLite would overflow)
        q = f"SELECT {self._step_cols} FROM steps WHERE session=? AND number=?"
        r = self.db.execute(q, (sid, number)).fetchone()
        return StepRow(*r) if r else None

    def env_before(self, sid: str, number: int) -> int | None:
        """The environment id in effect just before step `number` (None when unknown)."""
        row = self.db.execute(
            "SELECT env_id FROM steps WHERE session=? AND number<? AND env_id IS NOT NULL"
            " ORDER BY number DESC LIMIT 1",
            (sid, number),
        ).fetchone()
        if row:
            return row[0]
        session = self.get_session(sid)
        return session.env_id if session else None

    def env(self, env_id: int) -> dict[str, str]:
        row = self.db.execute("SELECT data FROM envs WHERE id=?", (env_id,)).fetchone()
        if not row:
            return {}
        return json.loads(zlib.decompress(row[0]))

    def step_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM steps").fetchone()[0]

    def integrity(self) -> list[str]:
        """Problems SQLite finds in the file (empty when healthy)."""
        try:
            rows = [r[0] for r in self.db.execute("PRAGMA quick_check")]
            self.db.execute("SELECT count(*) FROM sessions").fetchone()
        except sqlite3.DatabaseError as e:
            return [str(e)]
        return [] if rows == ["ok"] else rows

    def bulk_insert_steps(self, rows: Iterable[tuple]) -> None:
        """Insert prepared step rows (session, number, seq, command, cwd_before,
        cwd_after, started_at, ended_at, exit_code, pipestatus, env_id[, partial]);
        used by benchmarks and imports."""
        self.db.executemany(
            "INSERT INTO steps (session, number, seq, command, cwd_before, cwd_after,"
            " started_at, ended_at, exit_code, pipestatus, env_id, command_bytes,"
            " cwd_before_bytes, cwd_after_bytes, partial)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (
                (*r[:3], *(None if v is None else text_form(v) for v in r[3:6]), *r[6:11],
                 *(exact_bytes(v) for v in r[3:6]), int(bool(r[11:12] and r[11])))
                for r in rows
            ),
        )  # fmt: skip

    def remove_steps(self, sid: str) -> None:
        """Delete the steps and outputs of `sid` (an import that did not finish),
        and their words in the search index."""
        numbers = self.db.execute("SELECT number FROM step_outputs WHERE session=?", (sid,))
        self._unindex_outputs([(sid, n) for (n,) in numbers.fetchall()])
        indexed = self.db.execute(
            "SELECT search_id, command FROM steps WHERE session=? AND search_id > 0", (sid,)
        )
        self.db.executemany(
            "INSERT INTO search_commands (search_commands, rowid, command) VALUES ('delete',?,?)",
            indexed.fetchall(),
        )
        self.db.execute("DELETE FROM step_outputs WHERE session=?", (sid,))
        self.db.execute("DELETE FROM search_pending WHERE session=?", (sid,))
        self.db.execute("DELETE FROM steps WHERE session=?", (sid,))

    def insert_session(self, s: SessionRow) -> None:
        """Insert a session row as given (imports; its `steps` count is ignored).
        Its steps go in with bulk_insert_steps, before it."""
        if not is_session_id(s.id):
            raise ValueError(f"not a session id: {s.id[:40]!r}")
        self.db.execute(
            "INSERT INTO sessions (id, name, shell, shell_version, host, user, tty, pid, cwd,"
            " started_at, ended_at, parent_id, branch_point, origin, env_id, cwd_bytes)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (s.id, s.name, s.shell, s.shell_version, s.host, s.user, s.tty, s.pid,
             None if s.cwd is None else text_form(s.cwd), s.started_at, s.ended_at,
             s.parent_id, s.branch_point, s.origin, s.env_id, exact_bytes(s.cwd)),
        )  # fmt: skip

    # --- outputs and breakpoints ------------------------------------------------

    def set_output(self, sid: str, number: int, out: OutputRow | OutputBlobs) -> None:
        """Store a step's output (`out` made into blobs here, or before: output_blobs)."""
        self._unindex_outputs([(sid, number)])  # (an output replaced: its old words go)
        b = out if isinstance(out, OutputBlobs) else output_blobs(out)
        self.db.execute(
            "INSERT OR REPLACE INTO step_outputs"
            " (session, number, raw, text, size, omitted, complete, timing)"
            " VALUES (?,?,?,?,?,?,?,?)",
            (sid, number, b.raw, b.text, b.size, b.omitted, int(b.complete), b.timing),
        )
        self.db.execute(
            "INSERT OR IGNORE INTO search_pending (session, number) VALUES (?,?)", (sid, number)
        )

    def add_terminal_size(self, sid: str, at: float, columns: int, rows: int) -> None:
        """A recorded terminal's size from `at` on (at its start, and each resize)."""
        self.db.execute(
            "INSERT OR IGNORE INTO terminal_sizes (session, at, columns, rows) VALUES (?,?,?,?)",
            (sid, at, columns, rows),
        )

    def terminal_sizes(self, sid: str) -> list[tuple[float, int, int]]:
        """(from when, columns, rows) of a recorded session's terminal, in order."""
        q = "SELECT at, columns, rows FROM terminal_sizes WHERE session=? ORDER BY at"
        return [tuple(r) for r in self.db.execute(q, (sid,))]

    def step_output(self, sid: str, number: int) -> OutputRow | None:
        q = f"SELECT {self._output_cols} FROM step_outputs WHERE session=? AND number=?"
        row = self.db.execute(q, (sid, number)).fetchone()
        return _output_row(*row) if row else None

    def step_outputs(self, sid: str, first: int, last: int) -> dict[int, OutputRow]:
        q = (
            f"SELECT number, {self._output_cols} FROM step_outputs"
            " WHERE session=? AND number BETWEEN ? AND ?"
        )
        return {r[0]: _output_row(*r[1:]) for r in self.db.execute(q, (sid, first, last))}

    def output(self, sid: str, number: int) -> bytes | None:
        """The bytes of a step's output (see step_output for the rest)."""
        out = self.step_output(sid, number)
        return None if out is None else out.raw

    def outputs(self, sid: str, first: int, last: int) -> dict[int, bytes]:
        return {n: o.raw for n, o in self.step_outputs(sid, first, last).items()}

    def outputs_alike(
        self, sid_a: str, sid_b: str, pairs: list[tuple[int, int]]
    ) -> list[tuple[bool, bool, bool]]:
        """For each (step of `sid_a`, step of `sid_b`) in `pairs`: whether each has
        a stored output, and whether the two are stored alike (bytes and text;
        outputs stored unalike may still be the same: another codec). SQLite
        compares them as stored: nothing is decompressed nor copied out."""
        raw, text = ("raw", "text") if self._output_cols == _OUTPUT_COLS else ("output", "NULL")
        found: list[tuple[bool, bool, bool]] = []
        for at in range(0, len(pairs), 300):  # (3 parameters a pair, fewer than 999)
            chunk = pairs[at : at + 300]
            values = ",".join("(?,?,?)" for _ in chunk)
            q = (
                f"WITH p(i, a, b) AS (VALUES {values})"
                " SELECT oa.number IS NOT NULL, ob.number IS NOT NULL,"
                f" coalesce(oa.{raw} = ob.{raw} AND oa.{text} IS ob.{text}, 0)"
                " FROM p"
                " LEFT JOIN step_outputs oa ON oa.session = ? AND oa.number = p.a"
                " LEFT JOIN step_outputs ob ON ob.session = ? AND ob.number = p.b"
                " ORDER BY p.i"
            )
            args = [x for i, (na, nb) in enumerate(chunk) for x in (i, na, nb)]
            rows = self.db.execute(q, (*args, sid_a, sid_b))
            found += [(bool(x), bool(y), bool(z)) for x, y, z in rows]
        return found

    def has_output(self, sid: str, number: int) -> bool:
        q = "SELECT 1 FROM step_outputs WHERE session=? AND number=?"
        return self.db.execute(q, (sid, number)).fetchone() is not None

    def step_of_seq(self, sid: str, seq: int) -> tuple[int | None, bool]:
        """(the number of the step `seq` of `sid`, or None; whether the store has a
        later step of the session or the session has ended: then a step not stored
        never will be)."""
        row = self.db.execute(
            "SELECT number FROM steps WHERE session=? AND seq=?", (sid, seq)
        ).fetchone()
        if row is not None:
            return row[0], True
        later = self.db.execute(
            "SELECT 1 FROM steps WHERE session=? AND seq>? LIMIT 1", (sid, seq)
        ).fetchone()
        ended = self.db.execute(
            "SELECT ended_at IS NOT NULL FROM sessions WHERE id=?", (sid,)
        ).fetchone()
        return None, later is not None or bool(ended and ended[0])

    def output_usage(self) -> tuple[int, int]:
        """(steps with output, bytes their outputs take, compressed)."""
        q = (
            "SELECT count(*), coalesce(sum(length(raw) + coalesce(length(text), 0)"
            " + coalesce(length(timing), 0)), 0)"
        )
        return self.db.execute(q + " FROM step_outputs").fetchone()

    def oldest_outputs(self) -> Iterator[tuple[str, int, int]]:
        """(session, number, bytes taken) of every step's stored output, oldest step
        first (not what is kept in an output slot without a step: a guarded run's
        report)."""
        yield from self.db.execute(
            "SELECT o.session, o.number,"
            " length(o.raw) + coalesce(length(o.text), 0) + coalesce(length(o.timing), 0)"
            " FROM step_outputs o JOIN steps s ON s.session = o.session AND s.number = o.number"
            " ORDER BY s.started_at, o.session, o.number"
        ).fetchall()

    def remove_outputs(self, keys: Iterable[tuple[str, int]]) -> None:
        keys = list(keys)
        self._unindex_outputs(keys)
        self.db.executemany("DELETE FROM step_outputs WHERE session=? AND number=?", keys)
        self.db.executemany("DELETE FROM search_pending WHERE session=? AND number=?", keys)

    def add_breakpoint(
        self, sid: str, kind: str, step: int | None, pattern: str | None, target: str | None
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO breakpoints (session, kind, step, pattern, target) VALUES (?,?,?,?,?)",
            (sid, kind, step, pattern, target),
        )
        return int(cur.lastrowid or 0)

    def breakpoints(self, sid: str) -> list[tuple[int, str, int | None, str | None, str | None]]:
        q = "SELECT id, kind, step, pattern, target FROM breakpoints WHERE session=? ORDER BY id"
        return list(self.db.execute(q, (sid,)))

    def remove_breakpoint(self, sid: str, bp_id: int) -> bool:
        cur = self.db.execute("DELETE FROM breakpoints WHERE session=? AND id=?", (sid, bp_id))
        return cur.rowcount > 0

    # --- the search index (schema 6) ---------------------------------------------

    def _unindex_outputs(self, keys: Iterable[tuple[str, int]]) -> None:
        """Take the words of these outputs out of the index (a contentless index
        forgets a row only when given the words it was given: the stored text)."""
        q = (
            f"SELECT s.search_id, o.text, {_RAW_IF_NO_TEXT} FROM step_outputs o JOIN steps s"
            " ON s.session = o.session AND s.number = o.number"
            " WHERE o.session=? AND o.number=? AND s.search_id > 0 AND NOT EXISTS"
            " (SELECT 1 FROM search_pending p WHERE p.session = o.session AND p.number = o.number)"
        )
        for key in keys:
            row = self.db.execute(q, key).fetchone()
            if row is not None and row[1] is not None:
                self.db.execute(
                    "INSERT INTO search_outputs (search_outputs, rowid, output)"
                    " VALUES ('delete',?,?)",
                    (row[0], _stored_text(row[1], row[2])),
                )

    def _new_search_id(self, started_at: float, taken: dict[int, int]) -> int:
        """A search id for a step started at `started_at`; `taken`: the last id
        given in each millisecond by this batch (not in the table yet)."""
        base = search_id_floor(started_at) + 1
        while True:
            top = taken.get(base)
            if top is None:
                top = self.db.execute(
                    "SELECT max(search_id) FROM steps WHERE search_id BETWEEN ? AND ?",
                    (base, base + SEARCH_IDS_PER_MS - 2),
                ).fetchone()[0]
            ident = base if top is None else top + 1
            if ident <= base + SEARCH_IDS_PER_MS - 2:
                taken[base] = ident
                return ident
            base += SEARCH_IDS_PER_MS  # (that millisecond is full: the next one's)

    def index_pending(self, text_of: Callable[[bytes, str], str], seconds: float) -> bool:
        """Put what is not in the search index yet into it, batch by batch, for
        about `seconds` (in transactions of at most INDEX_TRANSACTION seconds);
        whether nothing is left. `text_of` makes an output's text from its bytes
        where none was stored (replays' outputs from before schema 5); the text
        made is stored with it."""
        deadline = time.monotonic() + seconds
        while True:
            with self.transaction():
                until = min(deadline, time.monotonic() + INDEX_TRANSACTION)
                while True:
                    if not self._index_batch(text_of):
                        return True
                    if time.monotonic() >= until:
                        break
            if time.monotonic() >= deadline:
                return False

    def _index_batch(self, text_of: Callable[[bytes, str], str]) -> int:
        steps = self.db.execute(
            "SELECT session, number, seq, command, started_at FROM steps"
            " WHERE search_id IS NULL LIMIT 1000"
        ).fetchall()
        taken: dict[int, int] = {}
        ids = [
            (0 if seq < 0 else self._new_search_id(started_at, taken), sid, number)
            for sid, number, seq, _, started_at in steps
        ]  # (a branch's copy of its parent's step: 0)
        self.db.executemany("UPDATE steps SET search_id=? WHERE session=? AND number=?", ids)
        self.db.executemany(
            "INSERT INTO search_commands (rowid, command) VALUES (?,?)",
            [(ident, step[3]) for (ident, _, _), step in zip(ids, steps) if ident],
        )
        pending = self.db.execute(
            "SELECT p.session, p.number, coalesce(nullif(length(o.text), 0), length(o.raw), 0),"
            " s.search_id, s.command FROM search_pending p"
            " LEFT JOIN step_outputs o ON o.session = p.session AND o.number = p.number"
            " LEFT JOIN steps s ON s.session = p.session AND s.number = p.number"
            " WHERE s.search_id IS NOT NULL OR s.session IS NULL LIMIT 50"
        ).fetchall()
        outputs, size = [], 0
        for sid, number, length, ident, command in pending:
            outputs.append((sid, number, ident, command))
            size += length
            if size > INDEX_BATCH_BYTES:
                break  # (a batch stays short: the daemon does it between other work)
        for sid, number, ident, command in outputs:
            self.db.execute(
                "DELETE FROM search_pending WHERE session=? AND number=?", (sid, number)
            )
            row = self.db.execute(
                f"SELECT o.text, {_RAW_IF_NO_TEXT} FROM step_outputs o"
                " WHERE o.session=? AND o.number=?",
                (sid, number),
            ).fetchone()
            if not ident or row is None:
                continue  # no step (a guarded run's report), a branch's copy, or gone
            text, raw = row
            if text is None:  # (made once, and kept: the index's words must be the text's)
                words = text_of(unpack(raw), command)
                self.db.execute(
                    "UPDATE step_outputs SET text=? WHERE session=? AND number=?",
                    (pack(words.encode()), sid, number),
                )
            else:
                words = _stored_text(text, raw)
            self.db.execute(
                "INSERT INTO search_outputs (rowid, output) VALUES (?,?)", (ident, words)
            )
        return len(steps) + len(outputs)

    def search_backlog(self) -> tuple[int, int]:
        """(steps, outputs) not in the search index yet."""
        steps = self.db.execute("SELECT count(*) FROM steps WHERE search_id IS NULL")
        outputs = self.db.execute(
            "SELECT count(*) FROM search_pending p JOIN steps s"
            " ON s.session = p.session AND s.number = p.number"
        )
        return steps.fetchone()[0], outputs.fetchone()[0]

    def session_search_ids(self, sid: str) -> tuple[int, int] | None:
        """The range of search ids of a session's indexed steps (None: none are)."""
        ends = [
            self.db.execute(  # (one each: min and max together would read every row)
                f"SELECT {end}(search_id) FROM steps WHERE session=? AND search_id > 0", (sid,)
            ).fetchone()[0]
            for end in ("min", "max")
        ]
        return None if ends[0] is None else (ends[0], ends[1])

    def _index_match(self, table: str, words: Iterable[tuple[str, bool]]) -> str:
        """The FTS5 query for rows of `table` holding every word, those marked
        as prefixes as the words of the index that start so: named one by one
        when they are few (FTS5 reads a prefix's rows all at once before the
        first; named words are read only as far as needed)."""
        terms = []
        for word, prefix in words:
            quoted = f'"{word}"'
            if prefix and word.isascii():
                vocab = f"temp.{table}_words"
                self.db.execute(  # (in temp: also on a store opened for reading)
                    f"CREATE VIRTUAL TABLE IF NOT EXISTS {vocab}"
                    f" USING fts5vocab(main, {table}, row)"
                )
                low = word.lower()
                named = [t for (t,) in self.db.execute(
                    f"SELECT term FROM {vocab} WHERE term >= ? AND term < ? LIMIT 33",
                    (low, low + "\U0010ffff"),
                )]  # fmt: skip
                if len(named) <= 32:  # (words of letters and digits: no quote inside)
                    quoted = "(" + " OR ".join(f'"{t}"' for t in named) + ")" if named else ""
                else:
                    quoted += "*"
            elif prefix:
                quoted += "*"
            if not quoted:
                return ""  # (no word of the index starts so: nothing can match)
            terms.append(quoted)
        return " AND ".join(terms)

    def search_index(
        self, where: str, words: Iterable[tuple[str, bool]], query: SearchFilter
    ) -> Iterator[tuple[int, StepRow, str | None]]:
        """Indexed steps whose command (`where` "command") or output text
        ("output") has every word of `words` ((word, whether as a prefix)), and
        that pass `query`, newest first, lazily: (search id, step, its output's
        text for "output")."""
        table, extra = {
            "command": ("search_commands", ""),
            "output": (
                "search_outputs",
                " JOIN step_outputs o ON o.session = s.session AND o.number = s.number",
            ),
        }[where]
        match = self._index_match(table, words)
        if not match:
            return
        cond, args = query.sql(False)
        q = (
            f"SELECT f.rowid, {self._step_cols_s}{', o.text, ' + _RAW_IF_NO_TEXT if extra else ''}"
            f" FROM {table} f CROSS JOIN steps s ON s.search_id = f.rowid{extra}"
            f" WHERE {table} MATCH ? AND f.rowid BETWEEN ? AND ?{cond} ORDER BY f.rowid DESC"
        )
        params = [match, query.first_id, query.last_id, *args]
        for r in self.db.execute(q, params):
            text = _stored_text(r[11], r[12]) if extra else None
            yield r[0], StepRow(*r[1:11]), text

    def search_scan(
        self, query: SearchFilter, with_output: bool
    ) -> Iterator[tuple[int, StepRow, str | None, bytes | None]]:
        """Indexed steps that pass `query`, newest first, lazily, with their
        output's text (or, where none was stored, bytes) when `with_output`:
        (search id, step, text, bytes)."""
        cond, args = query.sql(False)
        q = (
            f"SELECT s.search_id, {self._step_cols_s}"
            + (", o.text, " + _RAW_IF_NO_TEXT if with_output else "")
            + " FROM steps s"
            + (
                " LEFT JOIN step_outputs o ON o.session = s.session AND o.number = s.number"
                if with_output
                else ""
            )
            + f" WHERE s.search_id BETWEEN ? AND ?{cond} ORDER BY s.search_id DESC"
        )
        for r in self.db.execute(q, [query.first_id, query.last_id, *args]):
            yield (r[0], StepRow(*r[1:11]), *_text_or_raw(r[11:13] if with_output else ()))

    def search_unindexed(
        self, query: SearchFilter, with_output: bool
    ) -> list[tuple[StepRow, str | None, bytes | None]]:
        """Steps, and outputs, that pass `query` but are not indexed yet (what the
        daemon has not got to): (step, text, bytes) as search_scan; a step with
        an indexed command and an unindexed output comes with the output alone."""
        found: list[tuple[StepRow, str | None, bytes | None]] = []
        cond, args = query.sql(True)
        steps = self.db.execute(
            f"SELECT {self._step_cols_s}"
            + (", o.text, " + _RAW_IF_NO_TEXT if with_output else "")
            + " FROM steps s"
            + (
                " LEFT JOIN step_outputs o ON o.session = s.session AND o.number = s.number"
                if with_output
                else ""
            )
            + f" WHERE s.search_id IS NULL{cond}",
            args,
        )
        for r in steps:
            found.append((StepRow(*r[:10]), *_text_or_raw(r[10:12] if with_output else ())))
        if with_output:
            outputs = self.db.execute(
                f"SELECT {self._step_cols_s}, o.text, {_RAW_IF_NO_TEXT}"
                " FROM search_pending p"
                " CROSS JOIN steps s ON s.session = p.session AND s.number = p.number"
                " JOIN step_outputs o ON o.session = p.session AND o.number = p.number"
                f" WHERE s.search_id > 0{cond}",
                args,
            )
            for r in outputs:
                found.append((StepRow(*r[:10]), *_text_or_raw(r[10:12])))
        return found

    # --- checkpoints and watches ------------------------------------------------

    def add_checkpoint(
        self,
        *,
        created_at: float,
        origin: str,
        trees: Iterable[TreeRow],
        probes: Iterable[tuple[str, bytes]] = (),
        label: str | None = None,
        session: str | None = None,
        step: int | None = None,
        state: str = "ok",
    ) -> int:
        cur = self.db.execute(
            "INSERT INTO checkpoints (created_at, label, origin, session, step, state)"
            " VALUES (?,?,?,?,?,?)",
            (created_at, label, origin, session, step, state),
        )
        cid = int(cur.lastrowid or 0)
        self.db.executemany(
            "INSERT INTO checkpoint_trees (checkpoint, root, manifest, taken_ns, entries)"
            " VALUES (?,?,?,?,?)",
            [(cid, t.root, t.manifest, t.taken_ns, t.entries) for t in trees],
        )
        self.db.executemany(
            "INSERT INTO checkpoint_probes (checkpoint, probe, data) VALUES (?,?,?)",
            [(cid, name, data) for name, data in probes],
        )
        return cid

    def set_checkpoint_state(self, cid: int, state: str) -> None:
        self.db.execute("UPDATE checkpoints SET state=? WHERE id=?", (state, cid))

    def checkpoint(self, cid: int) -> CheckpointRow | None:
        if not -(2**63) <= cid < 2**63:
            return None  # (no row has it: SQLite would overflow)
        row = self.db.execute(f"SELECT {_CHECKPOINT_COLS} FROM checkpoints WHERE id=?", (cid,))
        r = row.fetchone()
        return CheckpointRow(*r) if r else None

    def checkpoints(
        self, *, session: str | None = None, state: str | None = "ok"
    ) -> list[CheckpointRow]:
        q = f"SELECT {_CHECKPOINT_COLS} FROM checkpoints WHERE 1"
        args: list = []
        if session is not None:
            q += " AND session=?"
            args.append(session)
        if state is not None:
            q += " AND state=?"
            args.append(state)
        return [CheckpointRow(*r) for r in self.db.execute(q + " ORDER BY id", args)]

    def step_checkpoint(self, sid: str, step: int) -> int | None:
        """The confirmed checkpoint taken just before step `step` of the session."""
        q = "SELECT id FROM checkpoints WHERE session=? AND step=? AND state='ok' ORDER BY id DESC"
        row = self.db.execute(q, (sid, step)).fetchone()
        return row[0] if row else None

    def confirm_step_checkpoint(self, sid: str, seq: int) -> bool:
        """The shell waited for the pending checkpoint of its step `seq`: it is valid."""
        cur = self.db.execute(
            "UPDATE checkpoints SET state='ok' WHERE state='pending' AND session=?"
            " AND step=(SELECT number FROM steps WHERE session=? AND seq=?)",
            (sid, sid, seq),
        )
        return cur.rowcount > 0

    def checkpoint_trees(self, cid: int) -> list[TreeRow]:
        q = "SELECT root, manifest, taken_ns, entries FROM checkpoint_trees WHERE checkpoint=?"
        return [TreeRow(*r) for r in self.db.execute(q + " ORDER BY root", (cid,))]

    def latest_tree(self, root: str) -> TreeRow | None:
        q = (
            "SELECT t.root, t.manifest, t.taken_ns, t.entries FROM checkpoint_trees t"
            " JOIN checkpoints c ON c.id = t.checkpoint"
            " WHERE t.root=? AND c.state='ok' ORDER BY t.checkpoint DESC LIMIT 1"
        )
        row = self.db.execute(q, (root,)).fetchone()
        return TreeRow(*row) if row else None

    def checkpoint_probes(self, cid: int) -> dict[str, bytes]:
        q = "SELECT probe, data FROM checkpoint_probes WHERE checkpoint=?"
        return dict(self.db.execute(q, (cid,)).fetchall())

    def remove_checkpoints(self, ids: Iterable[int]) -> int:
        rows = [(i,) for i in ids]
        for table, col in (
            ("checkpoint_trees", "checkpoint"),
            ("checkpoint_probes", "checkpoint"),
            ("checkpoints", "id"),
        ):
            self.db.executemany(f"DELETE FROM {table} WHERE {col}=?", rows)
        return len(rows)

    def manifests_in_use(self) -> set[str]:
        return {r[0] for r in self.db.execute("SELECT DISTINCT manifest FROM checkpoint_trees")}

    def all_probe_data(self) -> Iterator[tuple[str, bytes]]:
        yield from self.db.execute("SELECT probe, data FROM checkpoint_probes")

    def add_watch(self, path: str, excludes: str, added_at: float) -> bool:
        cur = self.db.execute(
            "INSERT INTO watches (path, excludes, added_at) VALUES (?,?,?)"
            " ON CONFLICT (path) DO UPDATE SET excludes=excluded.excludes",
            (path, excludes, added_at),
        )
        return cur.rowcount > 0

    def remove_watch(self, path: str) -> bool:
        return self.db.execute("DELETE FROM watches WHERE path=?", (path,)).rowcount > 0

    def watches(self) -> list[tuple[str, str]]:
        return list(self.db.execute("SELECT path, excludes FROM watches ORDER BY path"))

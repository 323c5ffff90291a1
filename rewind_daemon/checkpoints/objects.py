"""The content-addressed object store of checkpoints: zlib-compressed blobs
named by the SHA-256 of their content, shared by every checkpoint.

Small objects (most files of a source tree or /etc) live in one SQLite file,
`objects.db`, so that a first checkpoint of 100,000 files is one transaction
rather than 100,000 file creations. Large objects are files of their own,
each written to a temporary file, made durable with the rest of its batch by
one filesystem sync, and only then renamed to its name: a named object is
always complete, and a crash leaves at most temporary files, swept later.
"""

from __future__ import annotations

import hashlib
import os
import sqlite3
import stat
import zlib
from collections import deque
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from concurrent.futures import Future, ThreadPoolExecutor

from ..errors import RwError, StoreError
from ..fsops import syncfs
from ..store import private_db_file

CHUNK = 1024 * 1024
PACKED_MAX = 256 * 1024  # compressed objects up to this size live in objects.db
_LEVEL = 1  # fast: checkpoints sit in front of the user's commands
# Small objects are compressed by worker threads (zlib lets go of the GIL)
# while the caller reads the next files, in jobs of this many bytes or objects.
_JOB_BYTES = 256 * 1024
_JOB_OBJECTS = 64
_SAMPLE = 16 * 1024
_WORKERS = min(3, (os.cpu_count() or 1) - 1)
# O_NONBLOCK: a file swapped for a FIFO since it was stat'ed must not stall the read.
_READ_FLAGS = (
    os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOATIME", 0)
)


class ObjectError(RwError):
    """An object is missing or its content does not match its name."""

    exit_code = 3


class FileChanged(RwError):
    """A file changed while it was being read."""


class ObjectStore:
    def __init__(self, root: Path, readonly: bool = False):
        self.root = root
        self.readonly = readonly
        self._db: sqlite3.Connection | None = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            path = self.root / "objects.db"
            try:
                if self.readonly and path.exists():
                    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
                elif self.readonly:
                    db = sqlite3.connect(":memory:", isolation_level=None)
                else:
                    private_db_file(path)
                    db = sqlite3.connect(path, timeout=30, isolation_level=None)
                    # For a new store: most objects (compressed small files) then
                    # fit in their b-tree page instead of spilling into overflow
                    # pages, which makes it a quarter smaller and faster to fill.
                    db.execute("PRAGMA page_size=16384")
                    # rw gc gives the pages of removed objects back to the disk.
                    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    db.execute("PRAGMA journal_mode=WAL")
                    # The checkpoints that name these objects are committed after
                    # them: an object must be on disk first.
                    db.execute("PRAGMA synchronous=FULL")
                db.execute("PRAGMA busy_timeout=30000")
                if not (self.readonly and path.exists()):
                    db.execute(
                        "CREATE TABLE IF NOT EXISTS objects "
                        "(digest BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID"
                    )
                self._db = db
            except sqlite3.DatabaseError as e:
                raise StoreError(f"object store {path}: {e}") from None
        return self._db

    def twin(self) -> ObjectStore:
        """Another handle on this store, for another thread (a connection is
        not shared between threads)."""
        return ObjectStore(self.root, self.readonly)

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def path(self, digest: str) -> Path:
        return self.root / digest[:2] / digest[2:]

    def has(self, digest: str) -> bool:
        row = self.db.execute(
            "SELECT 1 FROM objects WHERE digest = ?", (bytes.fromhex(digest),)
        ).fetchone()
        return row is not None or os.path.exists(self.path(digest))

    def digests(self) -> Iterator[str]:
        for (d,) in self.db.execute("SELECT digest FROM objects"):
            yield d.hex()
        if self.root.is_dir():
            for sub in os.scandir(self.root):
                if len(sub.name) == 2 and sub.is_dir():
                    for obj in os.scandir(sub.path):
                        yield sub.name + obj.name

    def _raw(self, digest: str) -> bytes:
        row = self.db.execute(
            "SELECT data FROM objects WHERE digest = ?", (bytes.fromhex(digest),)
        ).fetchone()
        if row is not None:
            return row[0]
        return self.path(digest).read_bytes()

    def read(self, digest: str, raw: bytes | None = None) -> bytes:
        """The content of an object, checked against its name (`raw`: its
        stored bytes, when the caller already has them, see packed())."""
        try:
            data = zlib.decompress(self._raw(digest) if raw is None else raw)
        except FileNotFoundError:
            raise ObjectError(f"object {digest[:12]} is missing from the store") from None
        except (OSError, zlib.error, sqlite3.DatabaseError) as e:
            raise ObjectError(f"object {digest[:12]} is unreadable: {e}") from None
        if hashlib.sha256(data).hexdigest() != digest:
            raise ObjectError(f"object {digest[:12]} is corrupt (content does not match)")
        return data

    def packed(self, digests: list[str]) -> dict[str, bytes]:
        """The stored (compressed) bytes of those of `digests` packed in the
        database, in one query per 500; pass them to read() one at a time.
        (Large objects are files: read() reads them itself.)"""
        out: dict[str, bytes] = {}
        keys = list({bytes.fromhex(d) for d in digests})
        try:
            for i in range(0, len(keys), 500):  # (SQLite's limit on parameters)
                chunk = keys[i : i + 500]
                marks = ",".join("?" * len(chunk))
                q = f"SELECT digest, data FROM objects WHERE digest IN ({marks})"
                out.update((d.hex(), data) for d, data in self.db.execute(q, chunk))
        except sqlite3.DatabaseError:
            return {}  # read() then says, object by object, what is wrong
        return out

    def verify(self, digest: str) -> str | None:
        """None if the object is intact, else what is wrong with it."""
        try:
            self.read(digest)
        except ObjectError as e:
            return str(e)
        return None

    def sizes(self) -> dict[str, int]:
        """Stored (compressed) size of every object."""
        out = {d.hex(): n for d, n in self.db.execute("SELECT digest, length(data) FROM objects")}
        for digest in self.digests():
            if digest not in out:
                try:
                    out[digest] = self.path(digest).stat().st_size
                except FileNotFoundError:
                    pass
        return out

    def remove(self, digests: list[str]) -> None:
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            self.db.executemany(
                "DELETE FROM objects WHERE digest = ?", [(bytes.fromhex(d),) for d in digests]
            )
        for d in digests:
            try:
                self.path(d).unlink()
            except FileNotFoundError:
                pass

    def disk_usage(self) -> int:
        """Bytes the store takes on disk: its database (with its WAL) and loose objects."""
        total = 0
        for directory, _, files in os.walk(self.root):
            for name in files:
                try:
                    total += os.lstat(os.path.join(directory, name)).st_blocks * 512
                except FileNotFoundError:
                    pass
        return total

    def compact(self) -> None:
        """Give the space of removed objects back to the filesystem: the database's
        free pages (an incremental vacuum; a full VACUUM once, for a store made
        before it had one), its write-ahead log, and empty fan-out directories.
        A connection reading meanwhile (the daemon's) only delays the log's
        truncation to a later checkpoint."""
        db = self.db
        try:
            if db.execute("PRAGMA freelist_count").fetchone()[0]:
                if db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2:
                    # (executescript steps it to the end; execute would free one page)
                    db.executescript("PRAGMA incremental_vacuum;")
                else:
                    db.execute("PRAGMA auto_vacuum=INCREMENTAL")
                    db.execute("VACUUM")
            db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.OperationalError:
            pass  # busy for longer than the timeout: the next rw gc tries again
        for sub in os.scandir(self.root):
            if len(sub.name) == 2 and sub.is_dir(follow_symlinks=False):
                try:
                    os.rmdir(sub.path)
                except OSError:
                    pass  # not empty

    def batch(self) -> Batch:
        return Batch(self)


class Batch:
    """Objects written together: committed on a clean exit of the `with` block,
    discarded on an exception. Small files are compressed by worker threads
    while the caller goes on reading; commit waits for them."""

    def __init__(self, store: ObjectStore):
        self.store = store
        self.tmp_dir = store.root / "tmp"
        self.packed: dict[str, bytes] = {}
        self.loose: dict[str, Path] = {}
        self.written_bytes = 0
        self._job: list[tuple[str, bytes]] = []  # content not compressed yet
        self._job_bytes = 0
        self._queued: set[str] = set()  # digests in _job or in _jobs
        self._jobs: deque[Future[list[tuple[str, bytes]]]] = deque()
        self._pool: ThreadPoolExecutor | None = None

    def __enter__(self) -> Batch:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()

    def known(self, digest: str) -> bool:
        # Packed objects are deduplicated by INSERT OR IGNORE at commit, which
        # is cheaper than asking the database about each one first.
        return digest in self.packed or digest in self.loose or digest in self._queued

    def put_bytes(self, data: bytes) -> str:
        digest = hashlib.sha256(data).hexdigest()
        if not self.known(digest):
            self._add(digest, [_deflate(data)])
        return digest

    def put_file(
        self,
        path: str,
        expect: os.stat_result | None = None,
        dir_fd: int | None = None,
        changing: bool = False,
    ) -> tuple[str, int]:
        """Store a regular file's content (`path` relative to `dir_fd` if given,
        never through a symlink); returns (digest, size read).

        With `expect`, raises FileChanged if the file is not the one that was
        stat'ed (another size, mtime or inode) or changes while it is read;
        with `changing`, what was read is kept even if it changed meanwhile.
        """
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode) or (expect is not None and _moved(expect, before)):
                raise FileChanged(path)
            if before.st_size < CHUNK and not changing:
                data = _read_all(fd, before.st_size)
                if _moved(before, os.fstat(fd)):
                    raise FileChanged(path)
                digest = hashlib.sha256(data).hexdigest()
                if not self.known(digest):
                    self._compress_later(digest, data)
                return digest, len(data)
            h = hashlib.sha256()
            comp = None
            parts: list[bytes] = []
            size = 0
            while chunk := os.read(fd, CHUNK):
                size += len(chunk)
                h.update(chunk)
                if comp is None:
                    comp = zlib.compressobj(_level(chunk))
                parts.append(comp.compress(chunk))
            if _moved(before, os.fstat(fd)) and not changing:
                raise FileChanged(path)
        finally:
            os.close(fd)
        digest = h.hexdigest()
        if not self.known(digest):
            parts.append(comp.flush() if comp is not None else _deflate(b""))
            self._add(digest, parts)
        return digest, size

    def _compress_later(self, digest: str, data: bytes) -> None:
        if _WORKERS < 1:
            self._add(digest, [_deflate(data)])
            return
        self._queued.add(digest)
        self._job.append((digest, data))
        self._job_bytes += len(data)
        if self._job_bytes >= _JOB_BYTES or len(self._job) >= _JOB_OBJECTS:
            job, self._job, self._job_bytes = self._job, [], 0
            while self._jobs and self._jobs[0].done():
                self._collect(self._jobs.popleft().result())
            if len(self._jobs) >= 2 * _WORKERS:
                self._collect(_deflate_all(job))  # the workers are behind: help
                return
            if self._pool is None:
                from concurrent.futures import ThreadPoolExecutor  # (slow to import)

                self._pool = ThreadPoolExecutor(_WORKERS, thread_name_prefix="rw-deflate")
            self._jobs.append(self._pool.submit(_deflate_all, job))

    def _collect(self, done: list[tuple[str, bytes]]) -> None:
        for digest, compressed in done:
            self._queued.discard(digest)
            self._add(digest, [compressed])

    def _finish_jobs(self, keep: bool) -> None:
        """Wait for the workers; keep what they compressed, or drop it."""
        job, self._job, self._job_bytes = self._job, [], 0
        try:
            if keep:
                while self._jobs:
                    self._collect(self._jobs.popleft().result())
                self._collect(_deflate_all(job))
        finally:
            if self._pool is not None:
                self._pool.shutdown(cancel_futures=True)
                self._pool = None
            self._jobs.clear()
            self._queued.clear()

    def _add(self, digest: str, parts: list[bytes]) -> None:
        n = sum(len(p) for p in parts)
        self.written_bytes += n
        if n <= PACKED_MAX:
            self.packed[digest] = b"".join(parts)
            return
        if os.path.exists(self.store.path(digest)):
            return
        self.tmp_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        tmp = self.tmp_dir / f"{digest}.{os.getpid()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with open(fd, "wb") as f:
                for p in parts:
                    f.write(p)
        except BaseException:
            tmp.unlink(missing_ok=True)  # (a disk full half-way: nothing of it is kept)
            raise
        self.loose[digest] = tmp

    def commit(self) -> None:
        self._finish_jobs(keep=True)
        if self.loose:
            fd = os.open(self.tmp_dir, os.O_RDONLY)
            try:
                syncfs(fd)  # every temporary file's data is on disk ...
                for digest, tmp in self.loose.items():
                    final = self.store.path(digest)
                    final.parent.mkdir(mode=0o700, exist_ok=True)
                    os.replace(tmp, final)  # ... before it gets its name
                syncfs(fd)  # and the names are durable too
            finally:
                os.close(fd)
            self.loose.clear()
        if self.packed:
            db = self.store.db
            with db:
                db.execute("BEGIN IMMEDIATE")
                # In key order: the b-tree is then appended to, not split all over.
                db.executemany(
                    "INSERT OR IGNORE INTO objects (digest, data) VALUES (?, ?)",
                    sorted((bytes.fromhex(d), data) for d, data in self.packed.items()),
                )
            self.packed.clear()

    def abort(self) -> None:
        self._finish_jobs(keep=False)
        for tmp in self.loose.values():
            try:
                tmp.unlink()
            except FileNotFoundError:
                pass
        self.loose.clear()
        self.packed.clear()


def _read_all(fd: int, size: int) -> bytes:
    """A file's content, expected to be `size` bytes: read in one call when
    it is, to the end when the file says more than its size (as /proc does)."""
    data = os.read(fd, size + 1)
    if len(data) <= size:
        return data
    parts = [data]
    while chunk := os.read(fd, CHUNK):
        parts.append(chunk)
    return b"".join(parts)


def _deflate(data: bytes) -> bytes:
    """zlib with a window and hash table no larger than the data needs.
    zlib's default 256 KiB of state, allocated and cleared anew for each
    object, costs more than compressing a small file; the result is within
    a fraction of a percent of the same size."""
    wbits = min(15, max(10, len(data).bit_length()))
    comp = zlib.compressobj(_level(data), zlib.DEFLATED, wbits, wbits - 6)
    return comp.compress(data) + comp.flush()


def _level(data: bytes) -> int:
    """_LEVEL, or 0 (stored as is) for data that a sample says is already
    compressed (archives, images): deflating it costs ten times as much as
    storing it, for nothing."""
    if len(data) < _SAMPLE * 4:
        return _LEVEL
    middle = len(data) // 2
    sample = data[middle : middle + _SAMPLE]
    return 0 if len(zlib.compress(sample, _LEVEL)) > 0.9 * _SAMPLE else _LEVEL


def _deflate_all(job: list[tuple[str, bytes]]) -> list[tuple[str, bytes]]:
    return [(digest, _deflate(data)) for digest, data in job]


def _moved(a: os.stat_result, b: os.stat_result) -> bool:
    return (a.st_size, a.st_mtime_ns, a.st_ino, a.st_dev) != (
        b.st_size,
        b.st_mtime_ns,
        b.st_ino,
        b.st_dev,
    )


def sweep_temporary(store: ObjectStore) -> int:
    """Remove temporary files left by a crash; returns how many."""
    tmp = store.root / "tmp"
    n = 0
    if tmp.is_dir():
        for e in os.scandir(tmp):
            pid = e.name.rpartition(".")[2]
            if pid.isdigit() and os.path.exists(f"/proc/{pid}"):
                continue  # a batch still being written
            try:
                os.unlink(e.path)
                n += 1
            except OSError:
                pass
    return n

"""Snapshots of watched trees: a stat index plus content digests, and the diff
and restore between a snapshot and the tree as it is now.

A snapshot records every entry under a root (path, type, mode, owner, size,
mtime_ns, ctime_ns, inode, symlink target, content digest; empty directories
included). Taking the next one costs one stat pass: an entry whose stat
fields are unchanged keeps its digest, unless its timestamps were too close to
when it was hashed to be trusted (a "racy" entry, re-hashed).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from .errors import RwError
from .fsops import Inotify, syncfs
from .objects import FileChanged, ObjectError, ObjectStore

FORMAT = 1
DEFAULT_SIZE_CAP = 64 * 1024 * 1024
# An entry hashed less than this long after its last change may change again
# within the same timestamp tick without its stat fields showing it (FAT has
# 2 s ticks): it is hashed again next time.
RACY_NS = 2_000_000_000
ROOT = "."
# A tree with at least this many entries in the previous snapshot is compared
# in two processes: a stat pass in Python is mostly interpreter time, and a
# forked child lends it a second core (threads would share one, for the GIL).
PARALLEL_MIN = 4000
_REPORT_MAX = 50_000  # changes beyond which the child's report is not worth sending

_KINDS = {
    stat.S_IFREG: "file",
    stat.S_IFDIR: "dir",
    stat.S_IFLNK: "symlink",
    stat.S_IFIFO: "fifo",
    stat.S_IFSOCK: "socket",
    stat.S_IFCHR: "chardev",
    stat.S_IFBLK: "blockdev",
}
SPECIAL = frozenset({"fifo", "socket", "chardev", "blockdev"})
_IFMT = 0o170000
_IFREG, _IFDIR, _IFLNK = stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK
_IFCHR, _IFBLK = stat.S_IFCHR, stat.S_IFBLK
_FILE, _SYMLINK = "file", "symlink"
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC


class Entry(NamedTuple):
    kind: str
    mode: int  # permission bits (stat.S_IMODE)
    uid: int
    gid: int
    size: int
    mtime_ns: int
    ctime_ns: int
    ino: int
    data: str | None  # file: content digest; symlink: target; device: "major,minor"
    note: str | None  # why a file's content is not kept: "too large", "unreadable"


_ROW = 1 + len(Entry._fields)  # a manifest row: path, then the entry
_NO_ENTRY = Entry("", 0, 0, 0, 0, 0, 0, 0, None, None)
_new_tuple = tuple.__new__


class SnapshotUnstable(RwError):
    """The tree kept changing while it was being read."""


class Sink(Protocol):
    def put_file(self, path: str, expect: os.stat_result | None = None) -> tuple[str, int]: ...


class DigestOnly:
    """Hashes files without keeping their content (for comparing with now)."""

    def put_file(self, path: str, expect: os.stat_result | None = None) -> tuple[str, int]:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
        try:
            h = hashlib.sha256()
            size = 0
            while chunk := os.read(fd, 1024 * 1024):
                size += len(chunk)
                h.update(chunk)
        finally:
            os.close(fd)
        return h.hexdigest(), size


class _Differs(DigestOnly):
    """For planning a restore: a file whose size is not the one the target
    recorded is rewritten whatever its content, so it is not read."""

    DIFFERS = "(size differs from the checkpoint)"

    def __init__(self, target: Snapshot):
        self.entries = target.entries
        self.cut = len(target.root.rstrip("/")) + 1

    def put_file(self, path: str, expect: os.stat_result | None = None) -> tuple[str, int]:
        e = self.entries.get(path[self.cut :])
        if expect is not None and e is not None and e.kind == _FILE and e.size != expect.st_size:
            return self.DIFFERS, expect.st_size
        return super().put_file(path, expect)


class Excludes:
    """Gitignore-style patterns: `name` matches at any depth, `a/b` and `/a`
    from the root, a trailing `/` only directories, `*` `?` `[..]` within a
    name, `**` across directories, and `!pat` re-includes; the last match wins."""

    def __init__(self, patterns: Iterable[str]):
        self.patterns = tuple(patterns)
        self.rules: list[tuple[re.Pattern[str], bool, bool, bool]] = []
        for pat in self.patterns:
            p = pat.strip()
            if not p or p.startswith("#"):
                continue
            negate = p.startswith("!")
            p = p.lstrip("!")
            dir_only = p.endswith("/")
            p = p.rstrip("/")
            anchored = "/" in p
            p = p.lstrip("/")
            if p:
                self.rules.append((re.compile(_glob_regex(p)), anchored, dir_only, negate))
        # Most entries match no pattern: one regex for the names and one for
        # the paths tell that at once, instead of one regex per pattern.
        self._any: dict[bool, tuple[re.Pattern[str] | None, re.Pattern[str] | None]] = {}
        for is_dir in (False, True):
            excluding = [r for r in self.rules if not r[3] and (is_dir or not r[2])]
            self._any[is_dir] = (
                _union([rx for rx, anchored, _, _ in excluding if not anchored]),
                _union([rx for rx, anchored, _, _ in excluding if anchored]),
            )

    def __bool__(self) -> bool:
        return bool(self.rules)

    def excluded(self, rel: str, name: str, is_dir: bool) -> bool:
        by_name, by_path = self._any[is_dir]
        if not (by_name and by_name.fullmatch(name)) and not (by_path and by_path.fullmatch(rel)):
            return False  # (a `!pattern` alone never excludes)
        hit = False
        for rx, anchored, dir_only, negate in self.rules:
            if dir_only and not is_dir:
                continue
            if rx.fullmatch(rel if anchored else name):
                hit = not negate
        return hit


def _union(rxs: list[re.Pattern[str]]) -> re.Pattern[str] | None:
    return re.compile("|".join(f"(?:{rx.pattern})" for rx in rxs)) if rxs else None


def _glob_regex(pat: str) -> str:
    out, i = [], 0
    while i < len(pat):
        c = pat[i]
        if pat.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
            continue
        if pat.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        if c == "*":
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = pat.find("]", i + 1)
            if j < 0:
                out.append(re.escape(c))
            else:
                body = pat[i + 1 : j]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body}]")
                i = j
        else:
            out.append(re.escape(c))
        i += 1
    return "".join(out)


@dataclass
class Snapshot:
    root: str
    taken_ns: int
    entries: dict[str, Entry]
    excludes: tuple[str, ...] = ()
    size_cap: int = DEFAULT_SIZE_CAP
    manifest: str | None = None  # digest of the stored manifest, once stored
    unchanged: bool = False  # every entry is as in the snapshot it was taken against
    _tops: dict[str, int] | None = field(default=None, repr=False, compare=False)

    def top_counts(self) -> dict[str, int]:
        """Entries per top-level name (the name itself and all below it)."""
        if self._tops is None:
            tops: dict[str, int] = {}
            for rel in self.entries:
                top = rel.partition("/")[0]
                tops[top] = tops.get(top, 0) + 1
            self._tops = tops
        return self._tops

    @property
    def specials(self) -> list[tuple[str, str]]:
        return [(p, e.kind) for p, e in self.entries.items() if e.kind in SPECIAL]

    @property
    def not_kept(self) -> list[tuple[str, str]]:
        return [(p, e.note) for p, e in self.entries.items() if e.note]

    def manifest_bytes(self) -> bytes:
        entries = self.entries
        doc = {
            "format": FORMAT,
            "root": self.root,
            "excludes": list(self.excludes),
            "size_cap": self.size_cap,
            "entries": [(p, *entries[p]) for p in sorted(entries)],
        }
        return json.dumps(doc, separators=(",", ":")).encode()

    @classmethod
    def from_manifest(cls, data: bytes, taken_ns: int, digest: str | None = None) -> Snapshot:
        try:
            doc = json.loads(data)
            rows = doc["entries"]
            if any(len(row) != _ROW for row in rows):
                raise ValueError("an entry has the wrong number of fields")
            # tuple.__new__ rather than Entry(*row): a third of the time.
            entries = {row[0]: _new_tuple(Entry, row[1:]) for row in rows}
            return cls(
                doc["root"],
                taken_ns,
                entries,
                tuple(doc.get("excludes", ())),
                int(doc.get("size_cap", DEFAULT_SIZE_CAP)),
                digest,
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ObjectError(f"manifest {digest or ''} is not a snapshot: {e}") from None


def load(objects: ObjectStore, digest: str, taken_ns: int) -> Snapshot:
    return Snapshot.from_manifest(objects.read(digest), taken_ns, digest)


def _entry(st: os.stat_result, data: str | None = None, note: str | None = None) -> Entry:
    return _new_tuple(
        Entry,
        (
            _KINDS.get(st.st_mode & _IFMT, "unknown"),
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
            data,
            note,
        ),
    )


def take(
    root: str,
    sink: Sink,
    previous: Snapshot | None = None,
    excludes: Iterable[str] = (),
    size_cap: int = DEFAULT_SIZE_CAP,
    skip: Iterable[str] = (),
    on_dir=None,
) -> Snapshot:
    """Snapshot the tree at `root` (absolute), storing new content in `sink`.

    `previous` lends digests to entries whose stat fields are unchanged;
    `skip` lists absolute directories never entered (rw's own data);
    `on_dir(path)` is called before each directory is listed (the daemon adds
    its inotify watch there, so no change after the listing goes unseen).
    """
    taken_ns = time.time_ns()
    rules = Excludes(excludes)
    prev: dict[str, Entry] = {}
    trust_before = 0
    if (
        previous is not None
        and previous.root == root
        and previous.excludes == rules.patterns
        and previous.size_cap == size_cap
    ):
        prev = previous.entries
        trust_before = previous.taken_ns - RACY_NS
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return Snapshot(root, taken_ns, {}, rules.patterns, size_cap, unchanged=not prev)
    entries: dict[str, Entry] = {}
    p = prev.get(ROOT)
    changed = False
    if stat.S_ISDIR(st.st_mode):
        entries[ROOT] = _entry(st)
        split = None
        if on_dir is None and previous is not None and len(prev) >= PARALLEL_MIN:
            split = _split_walk(root, entries, previous, trust_before, sink, size_cap, rules, skip)
        if split is not None:
            changed, entries = split
        else:
            entries = {ROOT: _entry(st)}
            changed = _walk(root, entries, prev, trust_before, sink, size_cap, rules, skip, on_dir)
    elif p is not None and _unchanged(p, st, trust_before):
        entries[ROOT] = p
    else:
        entries[ROOT] = _read(root, st, sink, size_cap)
    if entries[ROOT] != p or len(entries) != len(prev):
        changed = True
    snap = Snapshot(root, taken_ns, entries, rules.patterns, size_cap)
    if not changed and previous is not None:
        snap.unchanged = True
        snap.manifest = previous.manifest
    return snap


def _walk(
    root: str,
    entries: dict[str, Entry],
    prev: dict[str, Entry],
    trust_before: int,
    sink: Sink,
    size_cap: int,
    rules: Excludes,
    skip: Iterable[str],
    on_dir,
    defer: frozenset[str] = frozenset(),
) -> bool:
    """Add everything below the directory `root` to `entries`; True if any
    entry differs from `prev`'s. (The directories named in `defer`, at the
    top level, are recorded but not entered.)

    This loop runs once per entry of the tree, and a checkpoint where nothing
    changed is nothing but this loop: it is written for speed. Directories
    are listed through a descriptor, so each entry costs one fstatat of a
    name rather than a lookup of its whole path.
    """
    prev_get = prev.get
    skip_dirs = frozenset(skip)
    has_rules = bool(rules)
    changed = False
    stack = [(ROOT, root)]
    while stack:
        rel_dir, abs_dir = stack.pop()
        prefix = "" if rel_dir == ROOT else rel_dir + "/"
        base = abs_dir if abs_dir.endswith("/") else abs_dir + "/"
        if on_dir is not None:
            on_dir(abs_dir)
        try:
            fd = os.open(abs_dir, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            continue
        except PermissionError:
            entries[rel_dir] = entries[rel_dir]._replace(note="unreadable")
            continue
        except OSError as err:
            if err.errno == errno.ELOOP:
                continue  # replaced by a symlink since it was listed
            raise
        try:
            with os.scandir(fd) as it:
                for de in it:
                    name = de.name
                    rel = prefix + name
                    if has_rules and rules.excluded(rel, name, de.is_dir(follow_symlinks=False)):
                        continue
                    try:
                        st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        continue  # gone since the listing
                    mode = st.st_mode
                    fmt = mode & _IFMT
                    if fmt == _IFREG or fmt == _IFLNK:
                        p = prev_get(rel)
                        if (
                            p is not None
                            and p[6] == st.st_ctime_ns
                            and p[5] == st.st_mtime_ns
                            and p[4] == st.st_size
                            and p[7] == st.st_ino
                            and p[1] == mode & 0o7777
                            and p[2] == st.st_uid
                            and p[3] == st.st_gid
                            and p[8] is not None
                            and p[5] < trust_before
                            and p[6] < trust_before
                            and p[0] == (_FILE if fmt == _IFREG else _SYMLINK)
                        ):
                            entries[rel] = p
                            continue
                        e = _read(base + name, st, sink, size_cap)
                    elif fmt == _IFDIR:
                        path = base + name
                        if path in skip_dirs:
                            continue
                        e = _entry(st)
                        if rel not in defer:
                            stack.append((rel, path))
                        p = prev_get(rel)
                    else:
                        if fmt == _IFCHR or fmt == _IFBLK:
                            e = _entry(st, f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
                        else:
                            e = _entry(st)
                        p = prev_get(rel)
                    if p != e:
                        changed = True
                    entries[rel] = e
        finally:
            os.close(fd)
    return changed


def _split_walk(
    root: str,
    entries: dict[str, Entry],
    previous: Snapshot,
    trust_before: int,
    sink: Sink,
    size_cap: int,
    rules: Excludes,
    skip: Iterable[str],
) -> tuple[bool, dict[str, Entry]] | None:
    """_walk, with the top-level directories holding about half the previous
    entries compared by a forked child, which reports only what differs.
    Returns (changed, all the entries), `entries` holding the parent's part.

    None when this cannot be done here or the child saw entries created or
    deleted (its report would not be enough): the caller walks it all.
    """
    if threading.active_count() > 1 or not hasattr(os, "fork"):
        return None  # forking a threaded process is not safe
    prev = previous.entries
    tops = previous.top_counts()
    dirs = sorted(
        ((n, t) for t, n in tops.items() if t != ROOT and prev.get(t, _NO_ENTRY).kind == "dir"),
        reverse=True,
    )
    half, given, theirs = len(prev) // 2, 0, []
    for n, t in dirs:
        if given + n <= half * 1.1:
            theirs.append(t)
            given += n
    if given < len(prev) * 0.3:
        return None  # one directory holds most of the tree: no even split
    _reap()
    r, w = os.pipe()
    try:
        pid = os.fork()
    except OSError:
        os.close(r)
        os.close(w)
        return None
    if pid == 0:  # the child: compare, report, and leave without any clean-up
        status = 1
        try:
            os.close(r)
            # A sink that only hashes can hash here too; one that stores cannot.
            reader = (sink, size_cap) if isinstance(sink, DigestOnly) else None
            found = _compare_below(root, theirs, prev, trust_before, rules, frozenset(skip), reader)
            data = json.dumps(found).encode()
            while data:
                data = data[os.write(w, data) :]
            os.close(w)  # the parent reads on at once; tearing down this process takes a while
            status = 0
        finally:
            os._exit(status)
    os.close(w)
    try:
        changed = _walk(
            root, entries, prev, trust_before, sink, size_cap, rules, skip, None, frozenset(theirs)
        )
        chunks = []
        while chunk := os.read(r, 1 << 16):
            chunks.append(chunk)
    finally:
        os.close(r)
        try:
            if os.waitpid(pid, os.WNOHANG)[0] == 0:
                _children.append(pid)  # still exiting: reaped next time
        except ChildProcessError:
            pass  # SIGCHLD is ignored here: the kernel reaps it
    try:
        found = json.loads(b"".join(chunks))
    except ValueError:
        return None  # the child failed
    below_theirs = given - len(theirs)  # their entries, less the directories themselves
    if (
        found is None
        or found["seen"] != below_theirs
        or len(entries) != len(prev) - below_theirs
        or not entries.keys() <= prev.keys()
    ):
        return None  # entries created or deleted
    mine, entries = entries, dict(prev)
    entries.update(mine)
    for row in found["read"]:  # what the child read itself
        e = _new_tuple(Entry, row[1:])
        if e != prev[row[0]]:
            changed = True
        entries[row[0]] = e
    # What the child saw differ (or could not trust: racy entries) is read here.
    for rel in found["changed"]:
        path = os.path.join(root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        p = prev[rel]
        if stat.S_ISDIR(st.st_mode) and p.kind != "dir":
            return None  # a file replaced by a directory: its contents are new
        e = _reread(path, st, p, trust_before, sink, size_cap)
        if e != p:
            changed = True
        entries[rel] = e
    return changed, entries


_children: list[int] = []


def _reap() -> None:
    """Collect the split walk's children that were still exiting."""
    for pid in list(_children):
        try:
            done = os.waitpid(pid, os.WNOHANG)[0] != 0
        except ChildProcessError:
            done = True
        if done:
            _children.remove(pid)


def _compare_below(
    root: str,
    tops: list[str],
    prev: dict[str, Entry],
    trust_before: int,
    rules: Excludes,
    skip_dirs: frozenset[str],
    reader: tuple[Sink, int] | None,
) -> dict | None:
    """(In the forked child.) What differs from `prev` below the top-level
    directories `tops`: {"seen": entries seen, "changed": [paths], "read":
    [[path, *entry]]}, or None when an entry is new (or there are too many
    changes to be worth a report). With a `reader` (a sink that only hashes,
    and the size cap) the files and symlinks that differ are read here and
    reported in "read"; without, they are left in "changed" for the parent."""
    prev_get = prev.get
    has_rules = bool(rules)
    changed: list[str] = []
    read: list[list] = []
    seen = 0
    stack = [(t, os.path.join(root, t)) for t in tops]
    while stack:
        rel_dir, abs_dir = stack.pop()
        prefix = rel_dir + "/"
        base = abs_dir + "/"
        try:
            fd = os.open(abs_dir, _DIR_FLAGS)
        except OSError:
            return None
        try:
            with os.scandir(fd) as it:
                for de in it:
                    name = de.name
                    rel = prefix + name
                    if has_rules and rules.excluded(rel, name, de.is_dir(follow_symlinks=False)):
                        continue
                    try:
                        st = de.stat(follow_symlinks=False)
                    except FileNotFoundError:
                        return None
                    mode = st.st_mode
                    fmt = mode & _IFMT
                    if fmt == _IFDIR and base + name in skip_dirs:
                        continue
                    p = prev_get(rel)
                    if p is None:
                        return None
                    seen += 1
                    if fmt == _IFREG or fmt == _IFLNK:
                        if (
                            p[6] == st.st_ctime_ns
                            and p[5] == st.st_mtime_ns
                            and p[4] == st.st_size
                            and p[7] == st.st_ino
                            and p[1] == mode & 0o7777
                            and p[2] == st.st_uid
                            and p[3] == st.st_gid
                            and p[8] is not None
                            and p[5] < trust_before
                            and p[6] < trust_before
                            and p[0] == (_FILE if fmt == _IFREG else _SYMLINK)
                        ):
                            continue
                        if reader is not None:
                            read.append([rel, *_read(base + name, st, reader[0], reader[1])])
                            if len(read) > _REPORT_MAX:
                                return None
                            continue
                    elif fmt == _IFDIR:
                        stack.append((rel, base + name))
                        if p == _entry(st):
                            continue
                    elif fmt != _IFCHR and fmt != _IFBLK and p == _entry(st):
                        continue
                    changed.append(rel)
                    if len(changed) > _REPORT_MAX:
                        return None
        finally:
            os.close(fd)
    return {"seen": seen, "changed": changed, "read": read}


def _unchanged(p: Entry, st: os.stat_result, trust_before: int) -> bool:
    """Whether `p`, recorded earlier, still stands for the file or symlink
    stat'ed as `st`. (_walk and _compare_below have this inlined: their loops
    are the whole cost of a no-change checkpoint, and calling this from the
    split walk's child cost it about 5 ms of 28 at 10,000 files.)"""
    fmt = st.st_mode & _IFMT
    return (
        p[1:8]
        == (
            st.st_mode & 0o7777,
            st.st_uid,
            st.st_gid,
            st.st_size,
            st.st_mtime_ns,
            st.st_ctime_ns,
            st.st_ino,
        )
        and p.data is not None
        and p.mtime_ns < trust_before
        and p.ctime_ns < trust_before
        and p.kind == (_FILE if fmt == _IFREG else _SYMLINK)
    )


def _reread(
    path: str, st: os.stat_result, p: Entry | None, trust_before: int, sink: Sink, size_cap: int
) -> Entry:
    """The entry for `path`, stat'ed as `st`, with `p` recorded for it earlier
    (the walks' loops have this inlined)."""
    fmt = st.st_mode & _IFMT
    if fmt == _IFREG or fmt == _IFLNK:
        if p is not None and _unchanged(p, st, trust_before):
            return p
        return _read(path, st, sink, size_cap)
    if fmt == _IFCHR or fmt == _IFBLK:
        return _entry(st, f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
    return _entry(st)


def _read(path: str, st: os.stat_result, sink: Sink, size_cap: int) -> Entry:
    if stat.S_ISLNK(st.st_mode):
        return _entry(st, os.readlink(path))
    if st.st_size > size_cap:
        return _entry(st, None, "too large")
    for _ in range(3):
        try:
            digest, _size = sink.put_file(path, st)
            return _entry(st, digest)
        except FileChanged:
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                break
            if not stat.S_ISREG(st.st_mode):
                return _entry(st)
        except PermissionError:
            return _entry(st, None, "unreadable")
    raise SnapshotUnstable(f"{path} kept changing while rw read it; try again")


def store(snap: Snapshot, batch) -> str:
    """Write the manifest (unless unchanged) and return its digest."""
    if snap.manifest is None:
        snap.manifest = batch.put_bytes(snap.manifest_bytes())
    return snap.manifest


# --- comparing ---------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """One difference between two snapshots, said as what happened going from
    the first to the second."""

    path: str
    what: str  # created | deleted | modified | mode | owner | replaced | touched
    detail: str = ""

    def describe(self, root: str) -> str:
        full = full_path(root, self.path)
        return f"{self.what:<9} {full}{'  ' + self.detail if self.detail else ''}"


def diff(a: Snapshot, b: Snapshot) -> list[Change]:
    """What changed from `a` to `b` (directory mtimes are not changes), by path."""
    out: list[Change] = []
    theirs = b.entries
    missing = 0
    for path, x in a.entries.items():
        y = theirs.get(path)
        if x is y or x == y:
            continue  # (snapshots taken one after the other share unchanged entries)
        if y is None:
            missing += 1
            out.append(Change(path, "deleted", x.kind if x.kind != "file" else ""))
        else:
            _compare(path, x, y, out)
    if len(theirs) != len(a.entries) - missing:
        ours = a.entries
        for path, y in theirs.items():
            if path not in ours:
                out.append(Change(path, "created", y.kind if y.kind != "file" else ""))
    out.sort(key=lambda c: c.path)  # stable: one path's changes stay in their order
    return out


def _compare(path: str, x: Entry, y: Entry, out: list[Change]) -> None:
    if x.kind != y.kind:
        out.append(Change(path, "replaced", f"{x.kind} -> {y.kind}"))
        return
    if _content_differs(x, y):
        detail = f"-> {y.data}" if x.kind == "symlink" else ""
        out.append(Change(path, "modified", detail))
    elif x.kind in ("file", "symlink") and x.mtime_ns != y.mtime_ns:
        out.append(Change(path, "touched", "mtime"))
    if x.mode != y.mode and x.kind != "symlink":
        out.append(Change(path, "mode", f"{x.mode:04o} -> {y.mode:04o}"))
    if (x.uid, x.gid) != (y.uid, y.gid):
        out.append(Change(path, "owner", f"{x.uid}:{x.gid} -> {y.uid}:{y.gid}"))


def _content_differs(x: Entry, y: Entry) -> bool:
    if x.kind == "file":
        if x.data is None or y.data is None:
            return (x.size, x.mtime_ns) != (y.size, y.mtime_ns)
        return x.data != y.data
    return x.data != y.data


# --- restoring ---------------------------------------------------------------


@dataclass
class RestoreResult:
    applied: list[Change] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    reread: bool = True  # verified by reading the whole tree again (not through inotify)


def restore(target: Snapshot, objects: ObjectStore, skip: Iterable[str] = ()) -> RestoreResult:
    """Make the tree at target.root what `target` recorded, then verify it."""
    watched = _Watched.start(target)
    try:
        return _restore(target, objects, skip, watched)
    finally:
        if watched is not None:
            watched.close()


def _restore(
    target: Snapshot, objects: ObjectStore, skip: Iterable[str], watched: _Watched | None
) -> RestoreResult:
    root = target.root
    now = take(root, _Differs(target), target, target.excludes, target.size_cap, skip)
    changes = diff(now, target)
    result = RestoreResult()
    failed: dict[str, str] = {}
    tick = watched.read if watched is not None else None

    def full(rel: str) -> str:
        return full_path(root, rel)

    # 1. Remove what the checkpoint did not have: files first (in several
    # threads: freeing an inode is kernel work), then directories, deepest first.
    doomed = [c.path for c in changes if c.what in ("deleted", "replaced")]
    gone = [rel for rel in doomed if now.entries[rel].kind != "dir"]
    failed.update(_spread(lambda part: _remove(part, full), gone, tick))
    emptied = [rel for rel in doomed if now.entries[rel].kind == "dir"]
    for rel in sorted(emptied, key=_depth, reverse=True):
        try:
            os.rmdir(full(rel))
        except FileNotFoundError:
            pass
        except OSError as err:
            failed[rel] = f"cannot remove: {err.strerror}"
    # 2. Create and rewrite, parents first. New file contents are written
    # under temporary names, synced, and only then given their names, so that
    # a crash leaves each file either as it was or as restored. Directories
    # and the rest are made here; file contents by _write_all, in threads.
    wanted = sorted({c.path for c in changes if c.what != "deleted"}, key=lambda p: (_depth(p), p))
    rewrite: list[tuple[str, Entry]] = []
    made_dirs: list[str] = []
    for rel in wanted:
        e = target.entries[rel]
        cur = now.entries.get(rel)
        if cur is not None and cur.kind != e.kind:
            cur = None  # removed in step 1
        try:
            if e.kind == _FILE and (cur is None or _content_differs(cur, e)):
                if e.data is None:
                    raise RwError(f"not restorable: its content was not kept ({e.note})")
                rewrite.append((rel, e))
                continue
            _put(full(rel), e, cur)
            if e.kind == "dir" and cur is None:
                made_dirs.append(rel)
                if watched is not None:
                    watched.watch(rel)
        except (OSError, RwError) as err:
            failed[rel] = getattr(err, "strerror", None) or str(err)
    written: list[tuple[str, str, int]] = []  # (rel, temporary, device)
    made: list[str] = []  # every temporary file, for an interrupted restore to remove
    try:
        for rel, outcome in _spread(lambda p: _write_all(p, full, objects, made), rewrite, tick):
            if isinstance(outcome, str):
                failed[rel] = outcome
            else:
                written.append((rel, *outcome))
        devices = {dev: tmp for _rel, tmp, dev in reversed(written)}  # device -> a file on it
        unsynced = _sync(devices)
        failed.update(_spread(lambda part: _swap_all(part, full, unsynced), written, tick))
    except BaseException:
        for tmp in made:
            _discard(tmp)  # (a new file not swapped in yet, or an old one swapped out)
        raise
    # 3. Directory modes, owners and mtimes last, deepest first: creating and
    # deleting entries above moved their mtimes.
    dirs = [p for p, e in target.entries.items() if e.kind == "dir" and p not in failed]
    for rel in sorted(dirs, key=_depth, reverse=True):
        try:
            _attrs(full(rel), target.entries[rel])
        except OSError as err:
            failed[rel] = f"cannot set attributes: {err.strerror}"
    # The new names are on disk too before they are checked, and before rw
    # says the restore is done.
    if _sync({dev: os.path.dirname(tmp) for dev, tmp in devices.items()}):
        failed.setdefault(ROOT, "the restored names could not be written to disk")
    # 4. Verify: a snapshot taken again must match the checkpoint. What was
    # written above has a new ctime (and mostly a new inode), so it is read
    # again; entries untouched keep the trust they had in step 1. Where inotify
    # watched the tree throughout, only what restore touched and what inotify
    # reported is looked at again: the rest is as step 1 read it.
    touched = [c.path for c in changes]
    left = None
    if watched is not None:
        left = watched.verify(target, now, touched, made_dirs, skip)
    result.reread = left is None
    if left is None:
        after = take(root, DigestOnly(), target, target.excludes, target.size_cap, skip)
        left = diff(after, target)
    for c in left:
        if c.path not in failed:
            failed[c.path] = f"still {c.what} after restore {c.detail}".rstrip()
    result.failed = sorted(failed.items())
    result.applied = [c for c in changes if c.path not in failed]
    return result


class _Watched:
    """What happens in a tree while it is restored, as inotify reports it.

    Every directory the checkpoint has is watched before restore reads the
    tree, and every directory restore makes as soon as it is made, so any
    change after an entry was read is reported: the verifying pass then reads
    again only what restore touched and what was reported, and trusts its
    first reading of the rest (as the daemon trusts its snapshots between
    events). Not seen, here as there: a file written through a hard link from
    outside the tree, or through a shared memory map. Where the watches cannot
    be relied on (the event queue overflowed, a watched directory was moved or
    deleted, a directory appeared that restore did not make, a watch could not
    be added) verify() says so, and the whole tree is read again."""

    MASK = (
        Inotify.MODIFY | Inotify.ATTRIB | Inotify.MOVED_FROM | Inotify.MOVED_TO | Inotify.CREATE
        | Inotify.DELETE | Inotify.DELETE_SELF | Inotify.MOVE_SELF
        | Inotify.ONLYDIR | Inotify.DONT_FOLLOW
    )  # fmt: skip
    LOST = (
        Inotify.Q_OVERFLOW | Inotify.IGNORED | Inotify.UNMOUNT
        | Inotify.DELETE_SELF | Inotify.MOVE_SELF
    )  # fmt: skip

    def __init__(self, root: str, inotify: Inotify):
        self.root = root
        self.inotify = inotify
        self.dirs: dict[int, str] = {}  # watch descriptor -> directory
        self.dirty: set[str] = set()  # paths inotify named
        self.new_dirs: set[str] = set()  # directories that appeared
        self.lost = False

    @classmethod
    def start(cls, target: Snapshot) -> _Watched | None:
        if target.entries.get(ROOT, _NO_ENTRY).kind != "dir":
            return None  # a file: read again at no cost
        try:
            watched = cls(target.root, Inotify())
        except OSError:
            return None
        for rel, e in target.entries.items():
            if e.kind == "dir":
                watched.watch(rel)
                if watched.lost:
                    watched.close()
                    return None
        return watched

    def watch(self, rel: str) -> None:
        path = full_path(self.root, rel)
        try:
            wd = self.inotify.add(path, self.MASK)
        except (FileNotFoundError, NotADirectoryError):
            return  # not a directory now: restore makes it, and watches it then
        except OSError:
            self.lost = True  # (the limit on watches, most likely)
            return
        if self.dirs.setdefault(wd, rel) != rel:
            self.lost = True  # one directory under two names (a bind mount)

    def read(self) -> None:
        """Take in the events waiting (often, so that the queue never overflows)."""
        try:
            events = self.inotify.read()
        except OSError:
            self.lost = True
            return
        for (wd, name), mask in events.items():
            rel = self.dirs.get(wd)
            if mask & self.LOST or rel is None:
                self.lost = True
            elif not name:
                self.dirty.add(rel)
            else:
                path = name if rel == ROOT else f"{rel}/{name}"
                self.dirty.add(path)
                if mask & Inotify.ISDIR and mask & (Inotify.CREATE | Inotify.MOVED_TO):
                    self.new_dirs.add(path)

    def verify(
        self,
        target: Snapshot,
        now: Snapshot,
        touched: list[str],
        made_dirs: list[str],
        skip: Iterable[str],
    ) -> list[Change] | None:
        """What still differs from `target`, or None if the watches cannot
        tell (read the whole tree again)."""
        self.read()
        made = set(made_dirs)
        if self.lost or not self.new_dirs <= made:
            return None
        check = set(touched) | self.dirty
        check.difference_update(_tmp_name(rel) for rel in touched)  # (restore's own, gone)
        for rel in made_dirs:  # (in case something came in before its watch did)
            try:
                check.update(f"{rel}/{name}" for name in os.listdir(os.path.join(self.root, rel)))
            except OSError:
                check.add(rel)
        rules = Excludes(target.excludes)
        skip_dirs = frozenset(skip)
        trust_before = target.taken_ns - RACY_NS
        sink = DigestOnly()
        found: dict[str, Entry] = {}
        for rel in check:
            path = full_path(self.root, rel)
            try:
                st = os.lstat(path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            is_dir = stat.S_ISDIR(st.st_mode)
            if rel != ROOT and (
                path in skip_dirs or rules.excluded(rel, rel.rpartition("/")[2], is_dir)
            ):
                continue
            was = now.entries.get(rel)
            if is_dir and rel not in made and (was is None or was.kind != "dir"):
                return None  # a directory where there was none: its contents are unseen
            p = target.entries.get(rel)
            found[rel] = _reread(path, st, p, trust_before, sink, target.size_cap)
        expected = {rel: target.entries[rel] for rel in check if rel in target.entries}
        return diff(Snapshot(self.root, 0, found), Snapshot(self.root, 0, expected))

    def close(self) -> None:
        self.inotify.close()


class _Prefetched:
    """The content of the files a restore writes, fetched from the store a
    batch at a time in the order it will ask for them (one query per batch,
    not one per file), kept compressed until asked for."""

    BATCH = 256

    def __init__(self, digests: list[str], objects: ObjectStore):
        self.queue = digests
        self.at = 0
        self.objects = objects
        self.batch: dict[str, bytes] = {}

    def read(self, digest: str) -> bytes:
        if digest not in self.batch and self.at < len(self.queue):
            chunk = self.queue[self.at : self.at + self.BATCH]
            if digest in chunk:
                self.at += len(chunk)
                self.batch = self.objects.packed(chunk)
        return self.objects.read(digest, self.batch.get(digest))


def full_path(root: str, rel: str) -> str:
    """The path of the entry `rel` of the tree at `root`."""
    return root if rel == ROOT else os.path.join(root, rel)


def _depth(rel: str) -> int:
    return -1 if rel == ROOT else rel.count("/")


def _put(path: str, e: Entry, cur: Entry | None) -> None:
    """Make `path` what `e` records, but for a file's content (_write_all)."""
    if e.kind == "dir":
        if cur is None:
            os.mkdir(path, 0o700)
        return  # attributes in step 3
    if cur is None or (e.kind != _FILE and _content_differs(cur, e)):
        if e.kind == "symlink":
            assert e.data is not None
            tmp = _tmp_name(path)
            os.symlink(e.data, tmp)
            os.replace(tmp, path)
        elif e.kind == "fifo":
            os.mkfifo(path, 0o600)
        elif e.kind in ("chardev", "blockdev"):
            major, minor = (int(x) for x in (e.data or "0,0").split(","))
            fmt = stat.S_IFCHR if e.kind == "chardev" else stat.S_IFBLK
            os.mknod(path, fmt | 0o600, os.makedev(major, minor))
        else:
            raise RwError(f"a {e.kind} cannot be restored")
    _attrs(path, e)


# Restores spread their file work over this many threads: creating, renaming
# and freeing inodes is kernel work, done outside the GIL, and much of it
# waits. (On two cores, restoring 1,000 files, medians of 8 alternating runs:
# 1 thread 484 ms, 2 422, 3 408, 4 391; then 4 429, 6 449, 8 456.)
WORKERS = 4
_SPREAD_MIN = 32  # items below which a thread is not worth starting
_TICK = 64  # items between two calls of _spread's tick


def _spread(work, items: list, tick=None) -> list:
    """Run the generator work(part) over WORKERS stripes of `items` at once;
    what they yield, but None, in no particular order. `tick()` is called in
    the caller's thread every _TICK items of its own stripe."""
    n = min(WORKERS, len(items) // _SPREAD_MIN)
    results: list[list] = [[] for _ in range(max(n, 1))]
    errors: list[BaseException] = []

    def run(i: int, part: list) -> None:
        try:
            out = results[i]
            for k, r in enumerate(work(part), 1):
                if r is not None:
                    out.append(r)
                if tick is not None and i == 0 and k % _TICK == 0:
                    tick()
        except BaseException as err:  # (re-raised below, in the caller's thread)
            errors.append(err)

    if n < 2:
        run(0, items)
    else:
        threads = [
            threading.Thread(target=run, args=(i, items[i::n]), daemon=True) for i in range(1, n)
        ]
        for t in threads:
            t.start()
        run(0, items[0::n])
        for t in threads:
            t.join()
    if errors:
        raise errors[0]
    return [r for part in results for r in part]


def _remove(rels: list[str], full) -> Iterator[tuple[str, str] | None]:
    """Unlink each; yields (rel, why) for those that could not be."""
    for rel in rels:
        try:
            os.unlink(full(rel))
        except FileNotFoundError:
            pass
        except OSError as err:
            yield rel, f"cannot remove: {err.strerror}"
            continue
        yield None


def _write_all(
    part: list[tuple[str, Entry]], full, objects: ObjectStore, made: list[str]
) -> Iterator[tuple[str, object]]:
    """Write each file's content under a temporary name beside it (listed in
    `made`); yields (rel, (temporary, device)), or (rel, why not).
    (A thread of its own has a connection of its own to the store.)"""
    mine = threading.current_thread() is threading.main_thread()
    if not mine:
        objects = objects.twin()
    try:
        contents = _Prefetched([e.data or "" for _rel, e in part], objects)
        for rel, e in part:
            try:
                tmp, dev = _write_temp(full(rel), contents.read(e.data or ""), e)
                made.append(tmp)
            except (OSError, ObjectError) as err:
                yield rel, getattr(err, "strerror", None) or str(err)
            else:
                yield rel, (tmp, dev)
    finally:
        if not mine:
            objects.close()


def _swap_all(
    part: list[tuple[str, str, int]], full, unsynced: set[int]
) -> Iterator[tuple[str, str] | None]:
    """Swap each temporary file in; yields (rel, why) for those that were not."""
    for rel, tmp, dev in part:
        if dev in unsynced:
            _discard(tmp)
            yield rel, "not restored: its new content could not be written to disk"
            continue
        try:
            _swap_in(tmp, full(rel))
        except OSError as err:
            yield rel, err.strerror or str(err)
            continue
        yield None


def _attrs(where: str | int, e: Entry) -> os.stat_result:
    """Owner, mode and mtime as `e` recorded, set on a path (a symlink itself,
    not what it points to) or on an open file; its stat from before."""
    follow = isinstance(where, int)  # (True is the only choice for a descriptor)
    st = os.stat(where, follow_symlinks=follow)
    if (st.st_uid, st.st_gid) != (e.uid, e.gid):
        os.chown(where, e.uid, e.gid, follow_symlinks=follow)
    if e.kind != "symlink" and stat.S_IMODE(st.st_mode) != e.mode:
        os.chmod(where, e.mode)
    if st.st_mtime_ns != e.mtime_ns:
        os.utime(where, ns=(st.st_atime_ns, e.mtime_ns), follow_symlinks=follow)
    return st


def _tmp_name(path: str) -> str:
    head, sep, name = path.rpartition("/")
    return f"{head}{sep}.{name}.rw-{os.getpid()}"


def _write_temp(path: str, data: bytes, e: Entry) -> tuple[str, int]:
    """Write `data` under a temporary name beside `path`, with the attributes
    `e` records; (the temporary name, its device)."""
    tmp = _tmp_name(path)
    # Created with its permission bits (umask permitting), so that chmod is
    # rarely needed; the rest of its attributes follow.
    fd = os.open(tmp, _CREATE_FLAGS, e.mode & 0o777)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            dev = _attrs(fd, e).st_dev
        finally:
            os.close(fd)
    except BaseException:
        _discard(tmp)
        raise
    return tmp, dev


def _swap_in(tmp: str, path: str) -> None:
    """Give the temporary file `tmp` the name `path`, in place of what has it.
    (Its content is on disk already, so ext4 has nothing to flush here.)"""
    try:
        os.replace(tmp, path)
    except BaseException:
        _discard(tmp)
        raise


def _discard(tmp: str) -> None:
    try:
        os.unlink(tmp)
    except (FileNotFoundError, IsADirectoryError):
        pass


def _sync(where: dict[int, str]) -> set[int]:
    """syncfs each filesystem (device -> a path on it); the devices it failed for."""
    failed = set()
    for dev, path in where.items():
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                syncfs(fd)
            finally:
                os.close(fd)
        except OSError:
            failed.add(dev)
    return failed

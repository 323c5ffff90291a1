"""Snapshots of watched trees: a stat index plus content digests, and the diff
and restore between a snapshot and the tree as it is now.

A snapshot records every entry under a root (path, type, mode, owner, size,
mtime_ns, ctime_ns, inode, symlink target, content digest; empty directories
included). Taking the next one costs one stat pass: an entry whose stat
fields are unchanged keeps its digest, unless its timestamps were too close to
when it was hashed to be trusted (a "racy" entry, re-hashed).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import re
import stat
import threading
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple, Protocol

from ..errors import EXIT_INCOMPLETE, EXIT_USAGE, RwError
from ..fsops import Inotify, syncfs
from ..progress import no_progress
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
# The note of a directory on another filesystem than the root's (a mount
# point): recorded, never entered, and never restored into.
MOUNT_POINT = "another filesystem mounted here, not entered"
# The note of a file that changed every time it was read (a log being
# written): its content is what the last reading got, which may be torn.
CHANGING = "kept changing while rw read it: recorded as last read"

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
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
_READ_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
# A restore's temporary name for NAME: `.NAME.rw-PID` (see _tmp_name).
_LEFTOVER = re.compile(r"\.(.+)\.rw-([1-9][0-9]*)", re.DOTALL)


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


class RootMoved(RwError):
    """A tree's root is not where, or not what, its checkpoint recorded: a
    symlink on its way, another directory in its place, a mount over it."""

    exit_code = EXIT_INCOMPLETE


class Sink(Protocol):
    def put_file(
        self,
        path: str,
        expect: os.stat_result | None = None,
        dir_fd: int | None = None,
        changing: bool = False,
    ) -> tuple[str, int]: ...


class DigestOnly:
    """Hashes files without keeping their content (for comparing with now)."""

    def put_file(
        self,
        path: str,
        expect: os.stat_result | None = None,
        dir_fd: int | None = None,
        changing: bool = False,
    ) -> tuple[str, int]:
        # O_NONBLOCK: a file swapped for a FIFO since it was stat'ed must not stall the read.
        fd = os.open(path, _READ_FLAGS, dir_fd=dir_fd)
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or (
                expect is not None and st.st_ino != expect.st_ino and not changing
            ):
                raise FileChanged(path)
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

    def differs(self, path: str, st: os.stat_result) -> bool:
        """Whether the file at `path` (absolute) is known to differ without reading it."""
        e = self.entries.get(path[self.cut :])
        return e is not None and e.kind == _FILE and e.size != st.st_size


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
    # Hard links inside the tree: groups (sorted, each of 2 or more) of files
    # that are one inode. Recorded since manifests carry them; none in older ones.
    links: tuple[tuple[str, ...], ...] = ()
    # Where the root was when taken: its path with no symlink in it, and its
    # device (every directory entered is on it: a mount inside is not entered).
    # Recorded since manifests carry them; None in older ones.
    real_root: str | None = None
    dev: int | None = None
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
        return [(p, e.note) for p, e in self.entries.items() if e.note and e.data is None]

    @property
    def changing(self) -> list[str]:
        """Files recorded as last read: they changed every time they were read."""
        return [p for p, e in self.entries.items() if e.note == CHANGING]

    def manifest_bytes(self) -> bytes:
        entries = self.entries
        doc = {
            "format": FORMAT,
            "root": self.root,
            "excludes": list(self.excludes),
            "size_cap": self.size_cap,
            "entries": [(p, *entries[p]) for p in sorted(entries)],
        }
        if self.links:  # (absent otherwise: a tree without links keeps its manifest)
            doc["links"] = [list(group) for group in self.links]
        if self.dev is not None:
            doc["real_root"], doc["dev"] = self.real_root, self.dev
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
            _check_names(entries, digest)
            links = tuple(tuple(group) for group in doc.get("links", ()))
            for group in links:
                if len(group) < 2 or any(entries.get(m, _NO_ENTRY).kind != _FILE for m in group):
                    raise ValueError("a group of hard links names something that is not a file")
            return cls(
                doc["root"],
                taken_ns,
                entries,
                tuple(doc.get("excludes", ())),
                int(doc.get("size_cap", DEFAULT_SIZE_CAP)),
                digest,
                links=links,
                real_root=doc.get("real_root"),
                dev=None if doc.get("dev") is None else int(doc["dev"]),
            )
        except (ValueError, KeyError, TypeError) as e:
            raise ObjectError(f"manifest {digest or ''} is not a snapshot: {e}") from None


class UnsafeManifest(ObjectError):
    """A manifest names an entry outside its tree (`..`, absolute, NUL...)."""

    exit_code = EXIT_USAGE


def _check_names(entries: dict[str, Entry], digest: str | None) -> None:
    """Refuse a name that could lead a restore out of its tree: each is a
    relative path of plain components (no `..`, `.`, empty part or NUL)."""
    names = [n for n in entries if n != ROOT]
    # One pass in C over all the names, "/" around each: a bad one shows as
    # "//" (absolute, empty part, trailing "/"), "/./", "/../" or a NUL.
    joined = "/\n/".join(names)
    if "\0" not in joined and not any(bad in f"/{joined}/" for bad in ("//", "/./", "/../")):
        return
    for name in names:  # (only to say which)
        parts = name.split("/")
        if "\0" in name or any(part in ("", ".", "..") for part in parts):
            raise UnsafeManifest(
                f"manifest {digest or ''} is refused: it names {name!r}, outside its tree"
            )


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
    progress=None,
) -> Snapshot:
    """Snapshot the tree at `root` (absolute), storing new content in `sink`.

    `previous` lends digests to entries whose stat fields are unchanged;
    `skip` lists absolute directories never entered (rw's own data);
    `on_dir(path)` is called before each directory is listed (the daemon adds
    its inotify watch there, so no change after the listing goes unseen);
    `progress(entries)` after each directory is read (in one process only).
    Below `root`, every directory is opened from its parent's descriptor and
    no symlink is followed: whatever happens to the tree meanwhile, nothing
    outside it is read.
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
    gone = Snapshot(root, taken_ns, {}, rules.patterns, size_cap, unchanged=not prev)
    try:
        st = os.lstat(root)
    except FileNotFoundError:
        return gone
    entries: dict[str, Entry] = {}
    p = prev.get(ROOT)
    changed = False
    if stat.S_ISDIR(st.st_mode):
        if on_dir is not None:
            on_dir(root)
        try:
            fd = os.open(root, _DIR_FLAGS)
        except (FileNotFoundError, NotADirectoryError):
            return gone
        except PermissionError:
            fd = -1
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise SnapshotUnstable(f"{root} kept changing while rw read it; try again") from err
            raise
        try:
            if fd >= 0 and os.fstat(fd).st_ino != st.st_ino:
                raise SnapshotUnstable(f"{root} kept changing while rw read it; try again")
            entries[ROOT] = _entry(st, None, None if fd >= 0 else "unreadable")
            split = None
            if fd >= 0 and on_dir is None and previous is not None and len(prev) >= PARALLEL_MIN:
                split = _split_walk(
                    fd, root, entries, previous, trust_before, sink, size_cap, rules, skip
                )
            if split is not None:
                changed, entries = split
            elif fd >= 0:
                entries = {ROOT: _entry(st)}
                changed = _walk(
                    fd, root, entries, prev, trust_before, sink, size_cap, rules, skip, on_dir,
                    progress=progress,
                )  # fmt: skip
        finally:
            if fd >= 0:
                os.close(fd)
    elif p is not None and _unchanged(p, st, trust_before):
        entries[ROOT] = p
    else:
        e = _read(None, root, root, st, sink, size_cap)
        if e is None:
            return gone
        entries[ROOT] = e
    if entries[ROOT] != p or len(entries) != len(prev):
        changed = True
    real_root = real_path(root)
    if previous is not None and (previous.real_root, previous.dev) != (real_root, st.st_dev):
        changed = True
    snap = Snapshot(
        root, taken_ns, entries, rules.patterns, size_cap, real_root=real_root, dev=st.st_dev
    )
    if not changed and previous is not None:
        snap.unchanged = True
        snap.manifest = previous.manifest
        # (a link made or broken changes the inode's ctime, so an entry differs)
        snap.links = previous.links
    else:
        snap.links = _link_groups(root, entries)
    return snap


def _link_groups(root: str, entries: dict[str, Entry]) -> tuple[tuple[str, ...], ...]:
    """The files of `entries` that are one inode, in groups. Files with the same
    inode number are one only on the same filesystem (a mount inside the tree
    numbers its own), so each candidate is looked at again: few trees have any."""
    inos = [e[7] for e in entries.values() if e[0] == _FILE]
    if len(set(inos)) == len(inos):
        return ()  # (the common case, found in C)
    first: dict[int, str] = {}
    shared: dict[int, list[str]] = {}
    for rel, e in entries.items():
        if e[0] == _FILE:
            other = first.setdefault(e[7], rel)
            if other != rel:
                shared.setdefault(e[7], [other]).append(rel)
    groups = []
    for ino, rels in shared.items():
        by_inode: dict[tuple[int, int], list[str]] = {}
        for rel in rels:
            try:
                st = os.lstat(full_path(root, rel))
            except OSError:
                continue
            if st.st_ino == ino and st.st_nlink > 1 and stat.S_ISREG(st.st_mode):
                by_inode.setdefault((st.st_dev, st.st_ino), []).append(rel)
        groups += [tuple(sorted(g)) for g in by_inode.values() if len(g) > 1]
    return tuple(sorted(groups))


def _walk(
    root_fd: int,
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
    progress=None,
) -> bool:
    """Add everything below the directory `root` (open as `root_fd`) to
    `entries`; True if any entry differs from `prev`'s. (The directories
    named in `defer`, at the top level, are recorded but not entered.)

    This loop runs once per entry of the tree, and a checkpoint where nothing
    changed is nothing but this loop: it is written for speed. Directories
    are listed through a descriptor, so each entry costs one fstatat of a
    name rather than a lookup of its whole path; each is opened from its
    parent's (which stays open until its subdirectories are done), without
    following a symlink, and must be the inode the listing saw.
    """
    prev_get = prev.get
    skip_dirs = frozenset(skip)
    has_rules = bool(rules)
    changed = False
    dev = os.fstat(root_fd).st_dev
    dirs = _directories(root_fd, root, None, on_dir)
    try:
        for fd, prefix, base, subdirs in dirs:
            if fd < 0:
                if fd == -2:
                    rel = prefix[:-1]
                    entries[rel] = entries[rel]._replace(note="unreadable")
                continue
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
                        e = _read(fd, name, base + name, st, sink, size_cap)
                        if e is None:
                            continue  # gone since the listing
                    elif fmt == _IFDIR:
                        if base + name in skip_dirs:
                            continue
                        if st.st_dev != dev:
                            e = _entry(st, None, MOUNT_POINT)
                        else:
                            e = _entry(st)
                            if rel not in defer:
                                subdirs.append((name, st.st_ino))
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
            if progress is not None:
                progress(len(entries))
    finally:
        dirs.close()
    return changed


def _directories(
    root_fd: int, root: str, tops: list[tuple[str, int]] | None, on_dir=None
) -> Generator[tuple[int, str, str, list[tuple[str, int]]], None, None]:
    """The directories of the tree at `root` (open as `root_fd`), depth first,
    as (descriptor, rel prefix, absolute prefix, subdirs): the caller lists
    the descriptor and appends to `subdirs` the (name, inode) of each
    subdirectory to enter next. The root comes first, unless `tops` names the
    subdirectories of it to start from. Each directory is opened from its
    parent's (which stays open until its subdirectories are done) by
    _open_subdir; one that could not be opened comes with its code instead
    of a descriptor (-1: gone or replaced since its listing; -2: not
    readable); `on_dir(path)` is called just before each is opened.
    Descriptors are closed as the walk leaves them, and all of them when the
    generator is closed (the root's never)."""
    open_dirs: list[tuple[int, str, str, list[tuple[str, int]]]] = []
    base = root if root.endswith("/") else root + "/"
    fd, prefix = root_fd, ""
    if tops is not None:
        open_dirs.append((root_fd, "", base, list(tops)))
        fd = -3  # the root is not listed
    try:
        while True:
            if fd >= 0:
                subdirs: list[tuple[str, int]] = []
                open_dirs.append((fd, prefix, base, subdirs))
                yield fd, prefix, base, subdirs
            elif fd != -3:
                yield fd, prefix, base, []
            while open_dirs and not open_dirs[-1][3]:
                done = open_dirs.pop()[0]
                if done != root_fd:
                    os.close(done)
            if not open_dirs:
                return
            parent, pre, bas, subdirs = open_dirs[-1]
            name, ino = subdirs.pop()
            prefix, base = pre + name + "/", bas + name + "/"
            if on_dir is not None:
                on_dir(bas + name)
            fd = _open_subdir(parent, name, ino)
    finally:
        for f, *_ in open_dirs:
            if f != root_fd:
                os.close(f)


def _open_subdir(parent: int, name: str, ino: int) -> int:
    """The directory `name` in `parent` opened, if it is still the inode `ino`
    the listing saw and not a symlink; else -1 (gone or replaced since: its
    entry stands as listed), or -2 (not readable)."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except (FileNotFoundError, NotADirectoryError):
        return -1
    except PermissionError:
        return -2
    except OSError as err:
        if err.errno == errno.ELOOP:
            return -1  # replaced by a symlink since it was listed
        raise
    if os.fstat(fd).st_ino != ino:
        os.close(fd)
        return -1
    return fd


def _split_walk(
    root_fd: int,
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
            found = _compare_below(
                root_fd, root, theirs, prev, trust_before, rules, frozenset(skip), reader
            )
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
            root_fd, root, entries, prev, trust_before, sink, size_cap, rules, skip, None,
            frozenset(theirs),
        )  # fmt: skip
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
    tree = _Dirs(root, root_fd)
    try:
        for rel in found["changed"]:
            try:
                with tree.parent_of(rel) as (at, name):
                    st = os.stat(name, dir_fd=at, follow_symlinks=False)
                    p = prev[rel]
                    if stat.S_ISDIR(st.st_mode) and p.kind != "dir":
                        return None  # a file replaced by a directory: its contents are new
                    path = os.path.join(root, rel)
                    got = _reread(at, name, path, st, p, trust_before, sink, size_cap)
            except OSError:
                return None  # gone, or a directory on the way replaced
            if got is None:
                return None
            if got != p:
                changed = True
            entries[rel] = got
    finally:
        tree.close()
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
    root_fd: int,
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
    reported in "read"; without, they are left in "changed" for the parent.
    Directories are opened as _walk opens them."""
    prev_get = prev.get
    has_rules = bool(rules)
    changed: list[str] = []
    read: list[list] = []
    seen = 0
    dev = os.fstat(root_fd).st_dev
    dirs = _directories(root_fd, root, [(t, prev[t].ino) for t in tops])
    try:
        for fd, prefix, base, subdirs in dirs:
            if fd < 0:
                return None
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
                            e = _read(fd, name, base + name, st, reader[0], reader[1])
                            if e is None:
                                return None
                            read.append([rel, *e])
                            if len(read) > _REPORT_MAX:
                                return None
                            continue
                    elif fmt == _IFDIR:
                        if st.st_dev != dev:
                            return None  # a mount point: the parent's walk notes it
                        subdirs.append((name, st.st_ino))
                        if p == _entry(st):
                            continue
                    elif fmt != _IFCHR and fmt != _IFBLK and p == _entry(st):
                        continue
                    changed.append(rel)
                    if len(changed) > _REPORT_MAX:
                        return None
    finally:
        dirs.close()
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
    dir_fd: int | None,
    name: str,
    path: str,
    st: os.stat_result,
    p: Entry | None,
    trust_before: int,
    sink: Sink,
    size_cap: int,
) -> Entry | None:
    """The entry for `name` in `dir_fd` (`path`, absolute, to say which),
    stat'ed as `st`, with `p` recorded for it earlier (the walks' loops have
    this inlined); None if it is gone."""
    fmt = st.st_mode & _IFMT
    if fmt == _IFREG or fmt == _IFLNK:
        if p is not None and _unchanged(p, st, trust_before):
            return p
        return _read(dir_fd, name, path, st, sink, size_cap)
    if fmt == _IFCHR or fmt == _IFBLK:
        return _entry(st, f"{os.major(st.st_rdev)},{os.minor(st.st_rdev)}")
    return _entry(st)


def _read(
    dir_fd: int | None, name: str, path: str, st: os.stat_result, sink: Sink, size_cap: int
) -> Entry | None:
    """The entry for the file or symlink `name` in `dir_fd` (`path`, absolute,
    to say which), stat'ed as `st`, its content put in `sink`; None if it is
    gone (removed since it was listed)."""
    differs = getattr(sink, "differs", None)
    try:
        for _ in range(3):
            try:
                if stat.S_ISLNK(st.st_mode):
                    return _entry(st, os.readlink(name, dir_fd=dir_fd))
                if not stat.S_ISREG(st.st_mode):
                    return _entry(st)  # (a file no more: replaced since it was listed)
                if st.st_size > size_cap:
                    return _entry(st, None, "too large")
                if differs is not None and differs(path, st):
                    return _entry(st, _Differs.DIFFERS)
                digest, _size = sink.put_file(name, st, dir_fd)
                return _entry(st, digest)
            except FileChanged:
                pass
            except PermissionError:
                return _entry(st, None, "unreadable")
            except OSError as err:
                # (A symlink now, or readlink of what is no longer one.)
                if err.errno not in (errno.ELOOP, errno.EINVAL):
                    raise
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and st.st_size <= size_cap:
            # Written to all the time (a busy log): what the last reading got,
            # said so; the rest of the tree is not held back for it.
            digest, size = sink.put_file(name, None, dir_fd, changing=True)
            return _entry(st, digest, CHANGING)._replace(size=size)
    except FileNotFoundError:
        return None
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
    what: str  # created deleted modified mode owner replaced touched linked unlinked
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
    if a.links or b.links:
        out += _link_changes(a, b)
    out.sort(key=lambda c: c.path)  # stable: one path's changes stay in their order
    return out


def _link_changes(a: Snapshot, b: Snapshot) -> list[Change]:
    """Files present on both sides whose group of hard links is another in `b`."""
    in_a = {m: g for g in a.links for m in g}
    in_b = {m: g for g in b.links for m in g}
    out = []
    for path in sorted(set(in_a) | set(in_b)):
        x, y = in_a.get(path), in_b.get(path)
        if x == y or path not in a.entries or path not in b.entries:
            continue
        if y is None:
            out.append(Change(path, "unlinked"))
        else:
            out.append(Change(path, "linked", "with " + next(m for m in y if m != path)))
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
    swept: list[str] = field(default_factory=list)  # killed restores' temporary files removed


def real_path(root: str) -> str:
    """`root` with no symlink above it (a root that is a symlink is the symlink)."""
    head, name = os.path.split(root.rstrip("/") or "/")
    return os.path.join(os.path.realpath(head or "/"), name)


def open_nofollow(path: str) -> int:
    """The directory at the absolute `path`, opened one component at a time
    from `/` without following a symlink (ELOOP or ENOTDIR if one is on the way)."""
    fd = os.open("/", _DIR_FLAGS)
    try:
        for part in path.split("/"):
            if part:
                at, fd = fd, -1
                try:
                    fd = os.open(part, _DIR_FLAGS, dir_fd=at)
                finally:
                    os.close(at)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        raise
    return fd


def _mount_id(fd: int) -> int | None:
    """The id of the mount the open file `fd` is on (None if /proc cannot say):
    unlike the device, it tells a bind mount from the directory it hides."""
    try:
        with open(f"/proc/self/fdinfo/{fd}", "rb") as f:
            for line in f:
                if line.startswith(b"mnt_id:"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_root(target: Snapshot, name: str = "the checkpoint") -> None:
    """Refuse (RootMoved) to restore `target` if its root is not where it was
    taken: its path now leads through a symlink, or to another directory or
    filesystem than the one recorded. (A root that is gone is recreated.)"""
    if target.dev is None:
        return  # an older manifest: nothing recorded to compare with
    root, real = target.root, target.real_root or target.root
    then = target.entries.get(ROOT, _NO_ENTRY)
    hint = "nothing restored; if that is meant, move it aside and restore again"
    if real_path(root) != real and os.path.lexists(root):
        raise RootMoved(
            f"{root} now leads to {real_path(root)}, not to {real} as when "
            f"{name} was taken (a symlink on its way): {hint}"
        )
    head, leaf = os.path.split(real)
    try:
        fd = open_nofollow(head)
    except FileNotFoundError:
        return  # (the restore makes nothing above its root: it fails there, and says so)
    except OSError as err:
        if err.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise RwError(f"cannot restore {root}: {err.strerror}", EXIT_INCOMPLETE) from None
        raise RootMoved(
            f"{root}: a directory on its way is a symlink (or not a directory) now: {hint}"
        ) from None
    try:
        st = os.stat(leaf, dir_fd=fd, follow_symlinks=False)
        same = st.st_dev == target.dev
        if same and then.kind == "dir" and st.st_ino != then.ino:
            # Another directory in its place: one its owner made anew there
            # (rm -rf DIR; mkdir DIR) is the tree; one of another owner, or
            # one mounted there, is not. (A file's inode changes whenever an
            # editor saves it: only its device is compared.)
            same = stat.S_ISDIR(st.st_mode) and st.st_uid == then.uid and _not_mounted(fd, leaf)
    except FileNotFoundError:
        return
    finally:
        os.close(fd)
    if not same:
        raise RootMoved(
            f"{root} is not the {then.kind or 'entry'} {name} was taken of (replaced, "
            f"moved, or another filesystem mounted there since): {hint}"
        )


def _not_mounted(parent: int, name: str) -> bool:
    """Whether the directory `name` in `parent` is on its parent's mount."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent)
    except OSError:
        return False
    try:
        return _mount_id(fd) == _mount_id(parent)
    finally:
        os.close(fd)


def restore(
    target: Snapshot,
    objects: ObjectStore,
    skip: Iterable[str] = (),
    progress=None,
    journals: str | None = None,
) -> RestoreResult:
    """Make the tree at target.root what `target` recorded, then verify it.

    Every change goes through descriptors of the tree's directories (_Dirs):
    a directory that is no longer the one the plan saw (swapped for a symlink
    or for another directory meanwhile) is reported for what lies below it,
    never followed, so nothing outside the tree is ever written; the root is
    reached without following a symlink, and no mount inside is entered.
    `progress(what, done, total)` is told how far it is (see progress.py).
    `journals`: rw's private directory where a restore lists the temporary
    files it is about to make (see _Journal); without, a restore killed
    half-way leaves them for good."""
    check_root(target)
    tree = _Dirs(target.real_root or target.root, dev=target.dev)
    watched = _Watched.start(target, tree)
    journal = _Journal(journals) if journals is not None else None
    try:
        return _restore(target, objects, skip, watched, tree, progress or no_progress, journal)
    finally:
        if journal is not None:
            journal.end()
        if watched is not None:
            watched.close()
        tree.close()


def _restore(
    target: Snapshot,
    objects: ObjectStore,
    skip: Iterable[str],
    watched: _Watched | None,
    tree: _Dirs,
    progress,
    journal: _Journal | None = None,
) -> RestoreResult:
    root = target.root
    total = len(target.entries)
    now = take(
        root, _Differs(target), target, target.excludes, target.size_cap, skip,
        progress=lambda n: progress(f"restore {root}, entries read", n, total),
    )  # fmt: skip
    if tree.expect({rel: e.ino for rel, e in now.entries.items() if e.kind == "dir"}):
        if watched is not None:
            watched.lost = True  # it watches a directory replaced before the plan saw it
    # What was a mount point when the checkpoint was taken holds nothing of
    # it: whatever is there now (unmounted since) is left as it is.
    for rel in [rel for rel, e in target.entries.items() if e.note == MOUNT_POINT]:
        for below in [r for r in now.entries if r.startswith(rel + "/")]:
            del now.entries[below]
        if now.entries.get(rel, _NO_ENTRY).kind == "dir":
            now.entries[rel] = target.entries[rel]
    result = RestoreResult()
    if journal is not None:
        result.swept = _sweep(journal.where, tree, target, now)
    changes = diff(now, target)
    failed: dict[str, str] = {}
    tick = watched.read if watched is not None else None
    # Hard links: a group of the checkpoint with any change is made whole again,
    # its first file written (when it must be) and the others linked to it. A
    # file linked now where the checkpoint had it on its own gets its own inode.
    changed = {c.path for c in changes}
    relink = [g for g in target.links if not changed.isdisjoint(g)]
    followers = {m: g[0] for g in relink for m in g[1:]}
    now_groups = {m: g for g in now.links for m in g}
    own_inode = {c.path for c in changes if c.what == "unlinked"}
    groups = {m: g for g in target.links for m in g}
    own_inode.update(g[0] for g in relink if not set(now_groups.get(g[0], ())) <= set(g))

    # 1. Remove what the checkpoint did not have: files first (in several
    # threads: freeing an inode is kernel work), then directories, deepest first.
    doomed = [c.path for c in changes if c.what in ("deleted", "replaced")]
    gone = [rel for rel in doomed if now.entries[rel].kind != "dir"]
    removing = f"restore {root}, files removed"
    failed.update(
        _spread(
            lambda part: _remove(part, tree), gone, tick, lambda n: progress(removing, n, len(gone))
        )
    )
    emptied = [rel for rel in doomed if now.entries[rel].kind == "dir"]
    for rel in sorted(emptied, key=_depth, reverse=True):
        try:
            tree.forget(rel)
            with tree.parent_of(rel) as (fd, name):
                os.rmdir(name, dir_fd=fd)
        except FileNotFoundError:
            pass
        except OSError as err:
            failed[rel] = f"cannot remove: {err.strerror}"
    # 2. Create and rewrite, parents first. New file contents are written
    # under temporary names, synced, and only then given their names, so that
    # a crash leaves each file either as it was or as restored. Directories
    # and the rest are made here; file contents by _write_all, in threads.
    wanted = sorted({c.path for c in changes if c.what != "deleted"}, key=lambda p: (_depth(p), p))
    if journal is not None:
        journal.write(tree, wanted)
    rewrite: list[tuple[str, Entry]] = []
    made_dirs: list[str] = []
    for rel in wanted:
        if rel in followers:
            continue  # linked to its group's first file after the writes
        e = target.entries[rel]
        cur = now.entries.get(rel)
        if cur is not None and cur.kind != e.kind:
            cur = None  # removed in step 1
        try:
            if e.kind == _FILE and (cur is None or _content_differs(cur, e) or rel in own_inode):
                if e.data is None:
                    raise RwError(f"not restorable: its content was not kept ({e.note})")
                rewrite.append((rel, e))
                continue
            try:
                _put(tree, rel, e, cur, len(groups.get(rel, (rel,))))
            except _LinkedOutside:
                # Changed in place, it would change a file outside the tree
                # too: it gets an inode of its own, as a file written anew.
                if e.data is None:
                    raise RwError(
                        "not restored: it is a hard link of a file outside the tree, "
                        f"and its content was not kept ({e.note})"
                    ) from None
                rewrite.append((rel, e))
                continue
            if e.kind == "dir" and cur is None:
                made_dirs.append(rel)
                if watched is not None:
                    watched.watch(rel)
        except (OSError, RwError) as err:
            failed[rel] = getattr(err, "strerror", None) or str(err)
    written: list[tuple[str, str, int]] = []  # (rel, temporary name, device)
    made: list[tuple[str, str]] = []  # every temporary file, for an interrupted restore to remove
    devices: dict[int, str] = {}  # device -> a file written on it
    try:
        writing = f"restore {root}, files written"
        for rel, outcome in _spread(
            lambda p: _write_all(p, tree, objects, made),
            rewrite,
            tick,
            lambda n: progress(writing, n, len(rewrite)),
        ):
            if isinstance(outcome, str):
                failed[rel] = outcome
            else:
                written.append((rel, *outcome))
        devices = {dev: rel for rel, _tmp, dev in reversed(written)}
        unsynced = _sync(devices, tree)
        failed.update(_spread(lambda part: _swap_all(part, tree, unsynced), written, tick))
        failed.update(_link_all(followers, tree, failed, made, devices))
    except BaseException:
        for rel, tmp in made:
            _discard(tree, rel, tmp)  # (a new file not swapped in yet, or an old one swapped out)
        raise
    # 3. Directory modes, owners and mtimes last, deepest first: creating and
    # deleting entries above moved their mtimes.
    dirs = [
        p
        for p, e in target.entries.items()
        if e.kind == "dir" and p not in failed and e.note != MOUNT_POINT
    ]
    for rel in sorted(dirs, key=_depth, reverse=True):
        try:
            with tree.dir(rel) as fd:
                _attrs(fd, target.entries[rel])
        except OSError as err:
            failed[rel] = f"cannot set attributes: {err.strerror}"
    # The new names are on disk too before they are checked, and before rw
    # says the restore is done.
    if _sync(devices, tree):
        failed.setdefault(ROOT, "the restored names could not be written to disk")
    # 4. Verify: a snapshot taken again must match the checkpoint. What was
    # written above has a new ctime (and mostly a new inode), so it is read
    # again; entries untouched keep the trust they had in step 1. Where inotify
    # watched the tree throughout, only what restore touched and what inotify
    # reported is looked at again: the rest is as step 1 read it.
    touched = [c.path for c in changes]
    left = None
    if watched is not None:
        left = watched.verify(target, now, touched, made_dirs, skip, tree)
    result.reread = left is None
    if left is None:
        after = take(
            root, DigestOnly(), target, target.excludes, target.size_cap, skip,
            progress=lambda n: progress(f"restore {root}, entries verified", n, total),
        )  # fmt: skip
        left = diff(after, target)
    if relink or own_inode:
        for rel, why in _links_left(tree, target, relink, own_inode):
            failed.setdefault(rel, why)
    for c in left:
        if c.path not in failed:
            failed[c.path] = _still(c)
    result.failed = sorted(failed.items())
    result.applied = [c for c in changes if c.path not in failed]
    return result


def _still(c: Change) -> str:
    """What a change the verifying pass found means: what the restore did not do."""
    if c.what == "linked":
        return f"not a hard link of {c.detail.removeprefix('with ')} after restore"
    if c.what == "unlinked":
        return "still a hard link of another file after restore"
    return f"still {c.what} after restore {c.detail}".rstrip()


def _link_all(
    followers: dict[str, str],
    tree: _Dirs,
    failed: dict[str, str],
    made: list[tuple[str, str]],
    devices: dict[int, str],
) -> dict[str, str]:
    """Make each follower a hard link of its group's first file: linked under a
    temporary name beside it, then renamed over it, all through the tree's
    directories and never through a symlink; {rel: why} for those that were not."""
    out = {}
    for rel, first in sorted(followers.items(), key=lambda kv: (_depth(kv[0]), kv[0])):
        if first in failed:
            out[rel] = f"not linked: {first} was not restored"
            continue
        try:
            with tree.parent_of(first) as (src, src_name), tree.parent_of(rel) as (at, name):
                have = os.stat(src_name, dir_fd=src, follow_symlinks=False)
                if not stat.S_ISREG(have.st_mode):
                    raise OSError(errno.ESTALE, f"{first} is not a file now: not linked to it")
                try:
                    cur = os.stat(name, dir_fd=at, follow_symlinks=False)
                    if (cur.st_dev, cur.st_ino) == (have.st_dev, have.st_ino):
                        continue  # linked already
                except FileNotFoundError:
                    pass
                tmp = _tmp_name(name)
                try:
                    os.link(src_name, tmp, src_dir_fd=src, dst_dir_fd=at, follow_symlinks=False)
                except FileExistsError:  # (left by a killed restore of this pid)
                    os.unlink(tmp, dir_fd=at)
                    os.link(src_name, tmp, src_dir_fd=src, dst_dir_fd=at, follow_symlinks=False)
                made.append((rel, tmp))
            _swap_in(tree, rel, tmp)
            devices.setdefault(have.st_dev, rel)
        except OSError as err:
            out[rel] = err.strerror or str(err)
    return out


def _links_left(
    tree: _Dirs, target: Snapshot, relink: list[tuple[str, ...]], own_inode: set[str]
) -> list[tuple[str, str]]:
    """(rel, why) for each file whose hard links are not as `target` recorded:
    a group's files not one inode, or a file meant to be on its own that shares
    its inode with another file of the tree that should not."""
    inode: dict[str, tuple[int, int] | None] = {}

    def of(rel: str) -> tuple[int, int] | None:
        if rel not in inode:
            try:
                with tree.parent_of(rel) as (at, name):
                    st = os.stat(name, dir_fd=at, follow_symlinks=False)
                inode[rel] = (st.st_dev, st.st_ino) if stat.S_ISREG(st.st_mode) else None
            except OSError:
                inode[rel] = None
        return inode[rel]

    out = []
    for group in relink:
        broken = [rel for rel in group[1:] if of(rel) is None or of(rel) != of(group[0])]
        out += [(rel, f"not a hard link of {group[0]} after restore") for rel in broken]
        if broken:
            out.append((group[0], f"not a hard link of {broken[0]} after restore"))
    groups = {m: g for g in target.links for m in g}
    checked = [m for g in relink for m in g] + sorted(own_inode)
    for rel in sorted(own_inode):
        mates = [m for m in checked if m != rel and m not in groups.get(rel, ())]
        shared = [m for m in mates if of(m) is not None and of(m) == of(rel)]
        if shared:
            out.append((rel, f"still a hard link of {shared[0]} after restore"))
    return out


class _Journal:
    """The temporary files a restore is about to make, listed in a file of
    rw's private state (synced) before any is made, and removed once the
    restore is over: a restore killed half-way leaves the list, and the next
    restore of the tree (or rw doctor) removes what it names, and nothing
    else, however much a user's file looks like one. The list is locked while
    its restore runs: one that can be locked is a dead restore's."""

    def __init__(self, where: str):
        self.where = where
        os.makedirs(where, mode=0o700, exist_ok=True)
        self.path = os.path.join(where, f"{os.getpid()}.{time.time_ns()}.json")
        flags = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        self.fd = os.open(self.path, flags, 0o600)
        fcntl.flock(self.fd, fcntl.LOCK_EX)

    def write(self, tree: _Dirs, rels: list[str]) -> None:
        """The temporary names the restore may make for `rels` (a few more
        than it will: it is written once, before the first)."""
        temps = []
        for rel in rels:
            parent, name = tree.split(rel)
            temps.append([parent, _tmp_name(name)])
        doc = {"root": os.path.join(tree.head, tree.root_name), "temps": temps}
        data = json.dumps(doc).encode()
        while data:
            data = data[os.write(self.fd, data) :]
        os.fsync(self.fd)

    def end(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)


def _dead_journals(where: str) -> Iterator[tuple[str, dict]]:
    """(path, content) of each journal in `where` whose restore is gone."""
    try:
        names = sorted(os.listdir(where))
    except FileNotFoundError:
        return
    for name in names:
        path = os.path.join(where, name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # its restore is running
            with os.fdopen(os.dup(fd), "rb") as f:
                raw = f.read()
        finally:
            os.close(fd)
        try:
            doc = json.loads(raw) if raw else {"root": "", "temps": []}
            if not isinstance(doc["root"], str) or not isinstance(doc["temps"], list):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            doc = {"root": "", "temps": []}  # killed before it listed anything
        yield path, doc


def _sweep_journal(tree: _Dirs, doc: dict, keep: dict[str, Entry] | None) -> list[str]:
    """Remove the temporary files a dead restore's journal names (files or
    symlinks, never a name in `keep`, the checkpoint being restored); the
    paths removed (absolute)."""
    swept = []
    for item in doc["temps"]:
        try:
            parent, name = str(item[0]), str(item[1])
        except (IndexError, TypeError):
            continue
        if "/" in name or not _LEFTOVER.fullmatch(name) or (parent and _bad_rel(parent)):
            continue
        rel = name if parent == ROOT else (f"{parent}/{name}" if parent else None)
        if keep is not None and rel is not None and rel in keep:
            continue  # (a name the checkpoint has is not a temporary)
        try:
            with tree.dir(parent) as fd:
                st = os.stat(name, dir_fd=fd, follow_symlinks=False)
                if not (stat.S_ISREG(st.st_mode) or stat.S_ISLNK(st.st_mode)):
                    continue
                os.unlink(name, dir_fd=fd)
        except OSError:
            continue
        where = (
            tree.head if not parent else full_path(os.path.join(tree.head, tree.root_name), parent)
        )
        swept.append(os.path.join(where, name))
    return swept


def _bad_rel(rel: str) -> bool:
    return rel != ROOT and ("\0" in rel or any(p in ("", ".", "..") for p in rel.split("/")))


def _sweep(where: str, tree: _Dirs, target: Snapshot, now: Snapshot) -> list[str]:
    """Remove from the tree, and from `now`, the temporary files of restores
    of this tree killed before they could clean up (as their journals in
    `where` list them); the paths removed (absolute)."""
    root = os.path.join(tree.head, tree.root_name)
    swept = []
    for path, doc in _dead_journals(where):
        if doc["root"] != root:
            continue  # another tree's: its restore (or rw doctor) sweeps it
        swept += _sweep_journal(tree, doc, target.entries)
        with contextlib.suppress(OSError):
            os.unlink(path)
    cut = len(root) + 1
    for path in swept:
        now.entries.pop(path[cut:], None)
    return swept


def sweep_leftovers(where: str) -> list[str]:
    """Remove the temporary files that restores killed before they could clean
    up left, as their journals in `where` list them (and the journals); their
    paths. (A restore does this for its tree; `rw doctor` for all.)"""
    found = []
    for path, doc in _dead_journals(where):
        if doc["root"]:
            tree = _Dirs(doc["root"])
            try:
                found += _sweep_journal(tree, doc, None)
            finally:
                tree.close()
        with contextlib.suppress(OSError):
            os.unlink(path)
    return sorted(found)


class _Dirs:
    """The directories of one tree, kept open by relative path as they are
    needed: each opened from its parent's descriptor (the root from its
    parent's, opened by the path given), never through a symlink, and checked
    to be the inode the plan saw there (or, for one restore made, the inode it
    had when first opened). Whatever happens to the tree meanwhile (a
    directory swapped for a symlink to elsewhere, or for another directory),
    nothing done through them lands outside it: a directory that is not the
    one expected raises an OSError that says so, and is never followed.

    Thread-safe. At most MAX_OPEN stay open: those not in use, least
    recently used first, are closed, and opened again the same way if needed."""

    MAX_OPEN = 256
    PARENT = ""  # the key of the root's parent (no entry of the tree has it)

    def __init__(self, root: str, root_fd: int | None = None, dev: int | None = None):
        head, self.root_name = os.path.split(root.rstrip("/") or "/")
        self.head = head or "/"
        self.inos: dict[str, int] = {}  # rel -> the inode expected there
        self.fds: dict[str, list[int]] = {}  # rel -> [descriptor, users]
        self.borrowed = root_fd  # the caller's, never closed here
        self.dev = dev  # the device every directory must be on, when known
        self.mount: int | None = None  # the root's mount: no other is entered
        if root_fd is not None:
            self.fds[ROOT] = [root_fd, 1]
            self.mount = _mount_id(root_fd)
        self.lock = threading.RLock()

    def expect(self, inos: dict[str, int]) -> bool:
        """The inodes the plan saw; True if a directory opened before was
        another (it is closed, and will be opened again only if it is the
        plan's)."""
        replaced = False
        with self.lock:
            for rel, ino in inos.items():
                if self.inos.setdefault(rel, ino) != ino:
                    self.inos[rel] = ino
                    replaced = True
                    slot = self.fds.pop(rel, None)
                    if slot is not None:
                        os.close(slot[0])
        return replaced

    def split(self, rel: str) -> tuple[str, str]:
        """(The directory holding `rel`, its name there.)"""
        if rel == ROOT:
            return self.PARENT, self.root_name
        head, _, name = rel.rpartition("/")
        return head or ROOT, name

    def hold(self, rel: str) -> int:
        """The directory `rel`, open, until release(rel)."""
        with self.lock:
            slot = self.fds.pop(rel, None)
            if slot is None:
                slot = [self._open(rel), 0]
            self.fds[rel] = slot  # (last: the most recently used)
            slot[1] += 1
            if len(self.fds) > self.MAX_OPEN:
                self._trim()
            return slot[0]

    def release(self, rel: str) -> None:
        with self.lock:
            self.fds[rel][1] -= 1

    @contextlib.contextmanager
    def dir(self, rel: str) -> Iterator[int]:
        fd = self.hold(rel)
        try:
            yield fd
        finally:
            self.release(rel)

    @contextlib.contextmanager
    def parent_of(self, rel: str) -> Iterator[tuple[int, str]]:
        """(The open directory holding `rel`, its name there.)"""
        parent, name = self.split(rel)
        fd = self.hold(parent)
        try:
            yield fd, name
        finally:
            self.release(parent)

    def forget(self, rel: str) -> None:
        """`rel` is being removed (or is done with): close it if unused."""
        with self.lock:
            self.inos.pop(rel, None)
            slot = self.fds.get(rel)
            if slot is not None and slot[1] == 0:
                del self.fds[rel]
                os.close(slot[0])

    def close(self) -> None:
        with self.lock:
            for fd, _users in self.fds.values():
                if fd != self.borrowed:
                    os.close(fd)
            self.fds.clear()

    def _open(self, rel: str) -> int:
        if rel == self.PARENT:
            try:
                return open_nofollow(self.head)
            except OSError as err:
                if err.errno in (errno.ELOOP, errno.ENOTDIR):
                    raise self._not_as_planned(rel) from None
                raise
        parent, name = self.split(rel)
        at = self.hold(parent)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=at)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise self._not_as_planned(rel) from None
            raise
        finally:
            self.release(parent)
        st = os.fstat(fd)
        if self.inos.setdefault(rel, st.st_ino) != st.st_ino:
            os.close(fd)
            raise self._not_as_planned(rel)
        mount = _mount_id(fd)
        if rel == ROOT:
            self.mount = mount
        elif (self.dev is not None and st.st_dev != self.dev) or mount != self.mount:
            os.close(fd)
            raise OSError(errno.EXDEV, f"{rel} is a mount point now: left alone, not entered")
        return fd

    def _trim(self) -> None:
        for rel, (fd, users) in list(self.fds.items()):
            if len(self.fds) <= self.MAX_OPEN * 3 // 4:
                break
            if users == 0 and rel != self.PARENT:
                del self.fds[rel]
                os.close(fd)

    @staticmethod
    def _not_as_planned(rel: str) -> OSError:
        where = {ROOT: "the tree's root", _Dirs.PARENT: "the tree's parent"}.get(rel, rel)
        return OSError(
            errno.ESTALE,
            f"{where} is not the directory the restore planned on (replaced meanwhile, "
            "or a symlink now): not followed",
        )


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

    # Added through /proc/self/fd/N, a link to follow: no DONT_FOLLOW.
    MASK = (
        Inotify.MODIFY | Inotify.ATTRIB | Inotify.MOVED_FROM | Inotify.MOVED_TO | Inotify.CREATE
        | Inotify.DELETE | Inotify.DELETE_SELF | Inotify.MOVE_SELF | Inotify.ONLYDIR
    )  # fmt: skip
    LOST = (
        Inotify.Q_OVERFLOW | Inotify.IGNORED | Inotify.UNMOUNT
        | Inotify.DELETE_SELF | Inotify.MOVE_SELF
    )  # fmt: skip

    def __init__(self, root: str, inotify: Inotify, tree: _Dirs):
        self.root = root
        self.inotify = inotify
        self.tree = tree
        self.dirs: dict[int, str] = {}  # watch descriptor -> directory
        self.dirty: set[str] = set()  # paths inotify named
        self.new_dirs: set[str] = set()  # directories that appeared
        self.lost = False

    @classmethod
    def start(cls, target: Snapshot, tree: _Dirs) -> _Watched | None:
        if target.entries.get(ROOT, _NO_ENTRY).kind != "dir":
            return None  # a file: read again at no cost
        try:
            watched = cls(target.root, Inotify(), tree)
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
        """Watch the directory `rel`, the very one `tree` opens (never a
        symlink's target)."""
        try:
            with self.tree.dir(rel) as fd:
                wd = self.inotify.add(f"/proc/self/fd/{fd}", self.MASK)
        except (FileNotFoundError, NotADirectoryError):
            return  # not a directory now: restore makes it, and watches it then
        except OSError as err:
            if err.errno == errno.ESTALE:
                return  # a symlink now: restore replaces it, and watches the directory then
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
        tree: _Dirs,
    ) -> list[Change] | None:
        """What still differs from `target`, or None if the watches cannot
        tell (read the whole tree again). Read through `tree`'s directories."""
        self.read()
        made = set(made_dirs)
        if self.lost or not self.new_dirs <= made:
            return None
        check = set(touched) | self.dirty
        check.difference_update(_tmp_name(rel) for rel in touched)  # (restore's own, gone)
        for rel in made_dirs:  # (in case something came in before its watch did)
            try:
                with tree.dir(rel) as fd:
                    check.update(
                        name if rel == ROOT else f"{rel}/{name}" for name in os.listdir(fd)
                    )
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
                with tree.parent_of(rel) as (at, name):
                    st = os.stat(name, dir_fd=at, follow_symlinks=False)
                    is_dir = stat.S_ISDIR(st.st_mode)
                    if rel != ROOT and (
                        path in skip_dirs or rules.excluded(rel, rel.rpartition("/")[2], is_dir)
                    ):
                        continue
                    was = now.entries.get(rel)
                    if is_dir and rel not in made and (was is None or was.kind != "dir"):
                        return None  # a directory where there was none: its contents are unseen
                    p = target.entries.get(rel)
                    e = _reread(at, name, path, st, p, trust_before, sink, target.size_cap)
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError:
                return None  # a directory on the way is not the one it was
            if e is not None:
                found[rel] = e
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


class _LinkedOutside(Exception):
    """A file has more hard links than the tree holds: changing it in place
    would change a file outside the tree."""


def _put(tree: _Dirs, rel: str, e: Entry, cur: Entry | None, links: int = 1) -> None:
    """Make `rel` what `e` records, but for a file's content (_write_all);
    `links`, how many names the tree gives the file (_LinkedOutside if it
    has more)."""
    with tree.parent_of(rel) as (at, name):
        if e.kind == "dir":
            if cur is None:
                os.mkdir(name, 0o700, dir_fd=at)
                tree.hold(rel)  # (its inode, from now on the one expected there)
                tree.release(rel)
            return  # attributes in step 3
        ino = cur.ino if cur is not None else None
        if cur is None or (e.kind != _FILE and _content_differs(cur, e)):
            ino = None
            if e.kind == "symlink":
                assert e.data is not None
                tmp = _tmp_name(name)
                try:
                    os.symlink(e.data, tmp, dir_fd=at)
                except FileExistsError:  # (left by a killed restore of this pid)
                    os.unlink(tmp, dir_fd=at)
                    os.symlink(e.data, tmp, dir_fd=at)
                os.replace(tmp, name, src_dir_fd=at, dst_dir_fd=at)
            elif e.kind == "fifo":
                os.mkfifo(name, 0o600, dir_fd=at)
            elif e.kind in ("chardev", "blockdev"):
                major, minor = (int(x) for x in (e.data or "0,0").split(","))
                fmt = stat.S_IFCHR if e.kind == "chardev" else stat.S_IFBLK
                os.mknod(name, fmt | 0o600, os.makedev(major, minor), dir_fd=at)
            else:
                raise RwError(f"a {e.kind} cannot be restored")
        _attrs_at(at, name, e, ino, links)


# Restores spread their file work over this many threads: creating, renaming
# and freeing inodes is kernel work, done outside the GIL, and much of it
# waits. (On two cores, restoring 1,000 files, medians of 8 alternating runs:
# 1 thread 484 ms, 2 422, 3 408, 4 391; then 4 429, 6 449, 8 456.)
WORKERS = 4
_SPREAD_MIN = 32  # items below which a thread is not worth starting
_TICK = 64  # items between two calls of _spread's tick


def _spread(work, items: list, tick=None, progress=None) -> list:
    """Run the generator work(part) over WORKERS stripes of `items` at once;
    what they yield, but None, in no particular order. `tick()` is called in
    the caller's thread every _TICK items of its own stripe, and so is
    `progress(about how many items are done)`."""
    n = min(WORKERS, len(items) // _SPREAD_MIN)
    results: list[list] = [[] for _ in range(max(n, 1))]
    errors: list[BaseException] = []

    def run(i: int, part: list) -> None:
        try:
            out = results[i]
            for k, r in enumerate(work(part), 1):
                if r is not None:
                    out.append(r)
                if i == 0 and k % _TICK == 0:
                    if tick is not None:
                        tick()
                    if progress is not None:
                        progress(min(k * max(n, 1), len(items)))
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


def _remove(rels: list[str], tree: _Dirs) -> Iterator[tuple[str, str] | None]:
    """Unlink each; yields (rel, why) for those that could not be."""
    for rel in rels:
        try:
            with tree.parent_of(rel) as (at, name):
                os.unlink(name, dir_fd=at)
        except FileNotFoundError:
            pass
        except OSError as err:
            yield rel, f"cannot remove: {err.strerror}"
            continue
        yield None


def _write_all(
    part: list[tuple[str, Entry]], tree: _Dirs, objects: ObjectStore, made: list[tuple[str, str]]
) -> Iterator[tuple[str, object]]:
    """Write each file's content under a temporary name beside it (listed in
    `made`); yields (rel, (temporary name, device)), or (rel, why not).
    (A thread of its own has a connection of its own to the store.)"""
    mine = threading.current_thread() is threading.main_thread()
    if not mine:
        objects = objects.twin()
    try:
        contents = _Prefetched([e.data or "" for _rel, e in part], objects)
        for rel, e in part:
            try:
                tmp, dev = _write_temp(tree, rel, contents.read(e.data or ""), e)
                made.append((rel, tmp))
            except (OSError, ObjectError) as err:
                yield rel, getattr(err, "strerror", None) or str(err)
            else:
                yield rel, (tmp, dev)
    finally:
        if not mine:
            objects.close()


def _swap_all(
    part: list[tuple[str, str, int]], tree: _Dirs, unsynced: set[int]
) -> Iterator[tuple[str, str] | None]:
    """Swap each temporary file in; yields (rel, why) for those that were not."""
    for rel, tmp, dev in part:
        if dev in unsynced:
            _discard(tree, rel, tmp)
            yield rel, "not restored: its new content could not be written to disk"
            continue
        try:
            _swap_in(tree, rel, tmp)
        except OSError as err:
            yield rel, err.strerror or str(err)
            continue
        yield None


def _attrs(fd: int, e: Entry) -> os.stat_result:
    """Owner, mode and mtime as `e` recorded, set on an open file or
    directory; its stat from before."""
    st = os.fstat(fd)
    _set_attrs(fd, st, e)
    return st


def _attrs_at(at: int, name: str, e: Entry, ino: int | None, links: int = 1) -> None:
    """Owner, mode and mtime as `e` recorded, set on `name` in the directory
    `at` itself, never on what a symlink points to; `ino`, when known, the
    inode the plan saw there (anything else is left alone and reported). A
    file with more than `links` hard links is left alone: _LinkedOutside."""
    if e.kind == "symlink":
        st = os.stat(name, dir_fd=at, follow_symlinks=False)
        if not stat.S_ISLNK(st.st_mode):
            raise OSError(errno.ESTALE, "replaced since the restore began: left alone")
        if (st.st_uid, st.st_gid) != (e.uid, e.gid):
            os.chown(name, e.uid, e.gid, dir_fd=at, follow_symlinks=False)
        if st.st_mtime_ns != e.mtime_ns:
            os.utime(name, ns=(st.st_atime_ns, e.mtime_ns), dir_fd=at, follow_symlinks=False)
        return
    # An O_PATH descriptor pins the inode without opening it (a FIFO or a
    # device would be): its /proc name reaches that inode and nothing else.
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=at)
    try:
        st = os.fstat(fd)
        if _KINDS.get(st.st_mode & _IFMT) != e.kind or (ino is not None and st.st_ino != ino):
            raise OSError(errno.ESTALE, "replaced since the restore began: left alone")
        if e.kind == _FILE and st.st_nlink > links:
            raise _LinkedOutside(name)
        _set_attrs(f"/proc/self/fd/{fd}", st, e)
    finally:
        os.close(fd)


def _set_attrs(where: int | str, st: os.stat_result, e: Entry) -> None:
    if (st.st_uid, st.st_gid) != (e.uid, e.gid):
        os.chown(where, e.uid, e.gid)
    if stat.S_IMODE(st.st_mode) != e.mode:
        os.chmod(where, e.mode)
    if st.st_mtime_ns != e.mtime_ns:
        os.utime(where, ns=(st.st_atime_ns, e.mtime_ns))


def _tmp_name(path: str) -> str:
    head, sep, name = path.rpartition("/")
    return f"{head}{sep}.{name}.rw-{os.getpid()}"


def _write_temp(tree: _Dirs, rel: str, data: bytes, e: Entry) -> tuple[str, int]:
    """Write `data` under a temporary name beside `rel`, with the attributes
    `e` records; (the temporary name, its device)."""
    with tree.parent_of(rel) as (at, name):
        tmp = _tmp_name(name)
        # Created with its permission bits (umask permitting), so that chmod is
        # rarely needed; the rest of its attributes follow.
        try:
            fd = os.open(tmp, _CREATE_FLAGS, e.mode & 0o777, dir_fd=at)
        except FileExistsError:  # (left by a killed restore of this pid)
            os.unlink(tmp, dir_fd=at)
            fd = os.open(tmp, _CREATE_FLAGS, e.mode & 0o777, dir_fd=at)
        try:
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view) :]
                dev = _attrs(fd, e).st_dev
            finally:
                os.close(fd)
        except BaseException:
            _unlink_quietly(at, tmp)
            raise
    return tmp, dev


def _swap_in(tree: _Dirs, rel: str, tmp: str) -> None:
    """Give the temporary file `tmp` beside `rel` the name of `rel`, in place
    of what has it. (Its content is on disk already, so ext4 has nothing to
    flush here.)"""
    with tree.parent_of(rel) as (at, name):
        try:
            os.replace(tmp, name, src_dir_fd=at, dst_dir_fd=at)
        except BaseException:
            _unlink_quietly(at, tmp)
            raise


def _discard(tree: _Dirs, rel: str, tmp: str) -> None:
    try:
        with tree.parent_of(rel) as (at, _name):
            _unlink_quietly(at, tmp)
    except OSError:
        pass  # (its directory is not the one it was: a later restore sweeps it)


def _unlink_quietly(at: int, name: str) -> None:
    try:
        os.unlink(name, dir_fd=at)
    except (FileNotFoundError, IsADirectoryError):
        pass


def _sync(where: dict[int, str], tree: _Dirs) -> set[int]:
    """syncfs each filesystem (device -> an entry written on it); the devices
    it failed for."""
    failed = set()
    for dev, rel in where.items():
        try:
            with tree.parent_of(rel) as (at, _name):
                syncfs(at)
        except OSError:
            failed.add(dev)
    return failed

"""Step checkpoints in the daemon: a current snapshot of every watched tree,
kept trustworthy by inotify, recorded for each command before it runs.

The shell's hook writes a command's begin record and waits (briefly) on its
session's acknowledgement FIFO. The daemon, seeing the record, makes sure
each watched tree's snapshot is current (nothing reported by inotify since it
was taken; otherwise it is taken again, which is safe because the command is
still waiting), stores a *pending* checkpoint and acknowledges. The hook then
writes a confirmation record, which makes the checkpoint valid. A hook that
gave up waiting writes none, so a checkpoint that might be late (and wrong)
is never used.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..fsops import Inotify
from ..paths import session_file
from ..store import TreeRow
from .checkpoint import Checkpoints, Watch, objects_of, watches
from .snapshot import Snapshot, SnapshotUnstable

log = logging.getLogger("rw.watcher")

_MASK = (
    Inotify.MODIFY | Inotify.ATTRIB | Inotify.CLOSE_WRITE | Inotify.MOVED_FROM | Inotify.MOVED_TO
    | Inotify.CREATE | Inotify.DELETE | Inotify.DELETE_SELF | Inotify.MOVE_SELF
)  # fmt: skip
ACK_SUFFIX = ".ack"


@dataclass
class _Tree:
    watch: Watch
    snap: Snapshot | None = None
    dirty: bool = True
    wds: set[int] = field(default_factory=set)
    watched: bool = True  # False: inotify could not cover it, so it is re-read each time


class TreeWatcher:
    def __init__(self, checkpoints: Checkpoints, scratch_dir: Path):
        self.cps = checkpoints
        self.scratch_dir = scratch_dir
        self.trees: dict[str, _Tree] = {}
        self.wd_root: dict[int, str] = {}
        self.acks: dict[str, int] = {}  # session -> fd of its acknowledgement FIFO
        self.inotify: Inotify | None = None
        try:
            self.inotify = Inotify()
        except OSError as e:
            log.warning("inotify unavailable (%s): watched trees are read for each command", e)

    @property
    def active(self) -> bool:
        return bool(self.trees)

    # --- which trees ---------------------------------------------------------

    def reload(self) -> None:
        wanted = {w.path: w for w in watches(self.cps.store, self.cps.config)}
        for root in list(self.trees):
            if root not in wanted or wanted[root] != self.trees[root].watch:
                self._forget(root)
        for root, w in wanted.items():
            if root not in self.trees:
                self.trees[root] = _Tree(w)
                self._previous_from_store(root)
        log.info("watching %d tree(s)", len(self.trees))

    def _previous_from_store(self, root: str) -> None:
        prev = self.cps.previous(root)
        if prev is not None:
            self.trees[root].snap = prev  # lends digests; still dirty until re-read

    def _forget(self, root: str) -> None:
        tree = self.trees.pop(root)
        for wd in tree.wds:
            if self.inotify is not None:
                self.inotify.remove(wd)
            self.wd_root.pop(wd, None)

    # --- inotify ----------------------------------------------------------------

    def _add_watch(self, root: str, path: str) -> None:
        tree = self.trees.get(root)
        if tree is None or not tree.watched or self.inotify is None:
            return
        try:
            wd = self.inotify.add(path, _MASK)
        except OSError as e:
            if e.errno in (errno.ENOSPC, errno.ENOMEM):
                log.warning(
                    "inotify watch limit reached under %s: it is read in full for each command "
                    "(raise fs.inotify.max_user_watches)",
                    root,
                )
                tree.watched = False
            return
        tree.wds.add(wd)
        self.wd_root[wd] = root

    def drain(self) -> None:
        """Read pending events; mark the trees they touch dirty."""
        if self.inotify is None:
            return
        try:
            events = self.inotify.read()
        except OSError as e:
            log.warning("reading inotify failed: %s", e)
            events = {(-1, ""): Inotify.Q_OVERFLOW}
        for (wd, _name), mask in events.items():
            if mask & Inotify.Q_OVERFLOW:
                for t in self.trees.values():
                    t.dirty = True
                continue
            root = self.wd_root.get(wd)
            if root is None:
                continue
            tree = self.trees.get(root)
            if mask & Inotify.IGNORED:
                self.wd_root.pop(wd, None)
                if tree is not None:
                    tree.wds.discard(wd)
            if tree is not None:
                tree.dirty = True

    # --- snapshots ----------------------------------------------------------------

    def _watch_point(self, root: str) -> str:
        """What to watch for a root that is a file or does not exist (yet): the
        nearest existing directory above it, so its creation or replacement is seen."""
        if os.path.isdir(root) and not os.path.islink(root):
            return root
        parent = os.path.dirname(root)
        while not os.path.isdir(parent) and parent != os.path.dirname(parent):
            parent = os.path.dirname(parent)
        return parent

    def refresh(self, root: str) -> bool:
        """Take the tree's snapshot again; True if nothing moved meanwhile."""
        tree = self.trees[root]
        self.drain()
        tree.dirty = False
        point = self._watch_point(root)
        if point != root:
            self._add_watch(root, point)
        try:
            with self.cps.objects.batch() as batch:
                [snap] = self.cps.snapshot_trees(
                    [tree.watch], batch, on_dir=lambda d: self._add_watch(root, d)
                )
        except SnapshotUnstable as e:
            log.info("%s", e)
            tree.dirty = True
            return False
        except OSError as e:
            log.warning("cannot snapshot %s: %s", root, e)
            tree.dirty = True
            return False
        self.drain()
        if not tree.watched:
            tree.dirty = True  # next time, read it again
        elif tree.dirty:
            return False  # changed while being read: not a consistent picture
        tree.snap = snap
        self.cps._previous[root] = snap
        return True

    def refresh_dirty(self) -> None:
        """After a command: bring dirty trees up to date, so the next command's
        checkpoint is ready at once."""
        self.drain()
        for root, tree in list(self.trees.items()):
            if tree.dirty or tree.snap is None:
                self.refresh(root)

    def checkpoint(self, sid: str, step: int) -> int | None:
        """A pending checkpoint of every watched tree as it is now, or None."""
        self.drain()
        rows = []
        for root, tree in self.trees.items():
            if tree.dirty or tree.snap is None or not tree.watched:
                ok = self.refresh(root) or self.refresh(root)
                if not ok and tree.watched:
                    log.info("no checkpoint for step %d of %s: %s keeps changing", step, sid, root)
                    return None
                if tree.snap is None:
                    return None
            snap = tree.snap
            assert snap is not None
            rows.append(TreeRow(root, snap.manifest or "", snap.taken_ns, len(snap.entries)))
        with self.cps.store.transaction():
            return self.cps.store.add_checkpoint(
                created_at=time.time(),
                origin="step",
                trees=rows,
                session=sid,
                step=step,
                state="pending",
            )

    def in_use(self) -> set[str]:
        """Objects the current snapshots rely on (their digests are lent to the next)."""
        refs: set[str] = set()
        for tree in self.trees.values():
            if tree.snap is not None:
                refs |= objects_of(tree.snap)
        return refs

    # --- acknowledgements ----------------------------------------------------------

    def ack_path(self, sid: str) -> Path | None:
        return session_file(self.scratch_dir, sid, ACK_SUFFIX)

    def open_ack(self, sid: str) -> None:
        """Make the session's FIFO (unless its shell made it first) and hold it
        open, so writes never block and never fail for want of a reader. It lives
        in the private runtime dir; a name that is not a FIFO of ours is refused
        (never followed: O_NOFOLLOW, then fstat before any write)."""
        if sid in self.acks or not self.active:
            return
        path = self.ack_path(sid)
        if path is None:
            log.warning("no acknowledgement FIFO for %r: not a session id", sid[:40])
            return
        try:
            try:
                os.mkfifo(path, 0o600)
            except FileExistsError:
                pass
            fd = os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as e:
            log.warning("cannot make %s: %s", path, e)
            return
        st = os.fstat(fd)
        if not stat.S_ISFIFO(st.st_mode) or st.st_uid != os.getuid():
            os.close(fd)
            log.warning("%s is not a FIFO of ours; no step checkpoints for %s", path, sid)
            return
        self.acks[sid] = fd

    def close_ack(self, sid: str, remove: bool = True) -> None:
        fd = self.acks.pop(sid, None)
        if fd is not None:
            os.close(fd)
        if remove:
            path = self.ack_path(sid)
            if path is not None:
                path.unlink(missing_ok=True)

    def close_all(self, remove: bool = True) -> None:
        """remove=False when the daemon stops: its shells hold their FIFOs open,
        and the next daemon must answer on those very FIFOs, not on new ones."""
        for sid in list(self.acks):
            self.close_ack(sid, remove)

    def ack(self, sid: str, seq: int, ok: bool) -> None:
        fd = self.acks.get(sid)
        if fd is None:
            return
        try:
            os.write(fd, f"{sid} {seq} {'ok' if ok else 'none'}\n".encode())
        except BlockingIOError:
            log.warning("acknowledgement FIFO of %s is full; dropped", sid)

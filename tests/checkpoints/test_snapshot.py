"""The snapshot engine on real files: take, diff, restore, racy entries, excludes."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import stat
import threading
import time

import pytest

from rewind_daemon.checkpoints.checkpoint import snapshot
from rewind_daemon.checkpoints.objects import ObjectError, ObjectStore, _read_all


def tree_state(root) -> dict:
    """Everything a restore must give back: type, mode, mtime, content or target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            rel = os.path.relpath(p, root)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(p), st.st_mtime_ns)
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            elif stat.S_ISFIFO(st.st_mode):
                out[rel] = ("fifo", stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            else:
                with open(p, "rb") as f:
                    out[rel] = ("file", stat.S_IMODE(st.st_mode), st.st_mtime_ns, f.read())
    return out


@pytest.fixture(autouse=True, params=["serial", "split"])
def walk_mode(request, monkeypatch):
    """Every test runs twice: trees compared in one process, restored in one
    thread and verified by reading the whole tree again; and (however small)
    half compared by a forked child, the files restored by three threads and
    the restore verified with what inotify reported."""
    serial = request.param == "serial"
    monkeypatch.setattr(snapshot, "PARALLEL_MIN", 10**9 if serial else 1)
    monkeypatch.setattr(snapshot, "WORKERS", 1 if serial else 3)
    monkeypatch.setattr(snapshot, "_SPREAD_MIN", 1)
    if serial:
        monkeypatch.setattr(snapshot._Watched, "start", classmethod(lambda cls, target, tree: None))
    return request.param


@pytest.fixture
def objects(tmp_path):
    return ObjectStore(tmp_path / "objects")


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "tree"
    (root / "sub" / "deep").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a.txt").write_text("alpha\n")
    (root / "sub" / "b.txt").write_text("beta\n")
    (root / "sub" / "deep" / "c.bin").write_bytes(os.urandom(300_000))  # a loose object
    (root / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "run.sh", 0o755)
    os.symlink("a.txt", root / "link")
    old = time.time_ns() - 10 * 10**9
    for p in (root / "a.txt", root / "sub" / "b.txt"):
        os.utime(p, ns=(old, old))
    return root


def take(root, objects, previous=None, **kw):
    with objects.batch() as b:
        snap = snapshot.take(str(root), b, previous, **kw)
        snapshot.store(snap, b)
    return snap


def test_restore_gives_back_the_exact_tree(tree, objects):
    before = tree_state(tree)
    snap = take(tree, objects)
    # create, modify, delete, chmod, rename, symlink, empty dir removed, new dir
    (tree / "new.txt").write_text("new\n")
    (tree / "a.txt").write_text("changed\n")
    os.unlink(tree / "sub" / "b.txt")
    os.chmod(tree / "run.sh", 0o600)
    os.rename(tree / "sub" / "deep" / "c.bin", tree / "moved.bin")
    os.unlink(tree / "link")
    os.symlink("sub", tree / "link")
    os.rmdir(tree / "empty")
    (tree / "newdir" / "x").mkdir(parents=True)
    os.mkfifo(tree / "pipe")
    changes = {(c.path, c.what) for c in snapshot.diff(take(tree, objects, snap), snap)}
    assert {
        ("new.txt", "deleted"),
        ("a.txt", "modified"),
        ("sub/b.txt", "created"),
        ("run.sh", "mode"),
        ("moved.bin", "deleted"),
        ("sub/deep/c.bin", "created"),
        ("link", "modified"),
        ("empty", "created"),
        ("newdir", "deleted"),
        ("pipe", "deleted"),
    } <= changes
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert tree_state(tree) == before


def test_a_rewritten_file_replaces_the_old_one_and_leaves_nothing_behind(tree, objects):
    """A file's new content is written under a temporary name and renamed
    over the old file; another name for the old file keeps what it had."""
    before = tree_state(tree)
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed, and longer than before\n")
    (tree / "run.sh").write_text("#!/bin/sh\necho changed\n")
    outside = tree.parent / "outside"
    os.link(tree / "a.txt", outside)  # another name for it, not watched
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert tree_state(tree) == before
    assert not list(tree.rglob(".*.rw-*"))  # no temporary names left
    # A new file took the name: the other name keeps what it had.
    assert outside.read_text() == "changed, and longer than before\n"
    assert (tree / "a.txt").stat().st_nlink == 1


def test_unchanged_tree_reuses_everything(tree, objects):
    first = take(tree, objects)
    first.taken_ns += 5 * 10**9  # as if taken long after every entry last changed: all trusted
    again = take(tree, objects, first)
    assert again.unchanged and again.manifest == first.manifest
    assert again.entries == first.entries
    # Files were trusted, not read again: their entries are the same objects.
    assert all(again.entries[p] is e for p, e in first.entries.items() if e.kind == "file")


def test_file_changed_twice_in_one_tick_is_caught(tree, objects):
    f = tree / "tick.txt"
    f.write_text("one\n")
    st = os.stat(f)
    snap = take(tree, objects)
    # Same size, and the mtime put back to the same tick: only the content moved.
    f.write_text("two\n")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    later = take(tree, objects, snap)
    assert [c for c in snapshot.diff(snap, later) if c.path == "tick.txt"][0].what == "modified"


def test_racy_entry_is_rehashed_even_when_stat_matches(tree, objects):
    f = tree / "a.txt"
    snap = take(tree, objects)
    # Pretend the file's recorded ctime is exactly what it will be after the
    # rewrite: only the racy rule (recorded too close to taken_ns) can catch it.
    f.write_text("other\n")
    st = os.lstat(f)
    e = snap.entries["a.txt"]
    snap.entries["a.txt"] = e._replace(
        size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns, ino=st.st_ino
    )
    snap.taken_ns = st.st_mtime_ns  # hashed in the same tick as the change
    later = take(tree, objects, snap)
    assert later.entries["a.txt"].data != e.data


def test_excludes_are_gitignore_style(tree, objects):
    (tree / "build").mkdir()
    (tree / "build" / "out.o").write_text("x")
    (tree / "sub" / "app.log").write_text("log")
    (tree / "keep.log").write_text("keep")
    snap = take(tree, objects, excludes=["build/", "*.log", "!keep.log", "/sub/deep"])
    assert "build" not in snap.entries and "build/out.o" not in snap.entries
    assert "sub/app.log" not in snap.entries
    assert "keep.log" in snap.entries
    assert "sub/deep" not in snap.entries and "sub" in snap.entries
    # Restoring leaves excluded paths alone.
    (tree / "sub" / "app.log").write_text("changed")
    assert snapshot.restore(snap, objects).failed == []
    assert (tree / "sub" / "app.log").read_text() == "changed"


def test_large_and_special_files_are_reported(tree, objects):
    (tree / "big").write_bytes(b"x" * 5000)
    os.mkfifo(tree / "fifo")
    snap = take(tree, objects, size_cap=1000)
    assert ("big", "too large") in snap.not_kept
    assert ("fifo", "fifo") in snap.specials
    (tree / "big").write_bytes(b"y" * 6000)
    result = snapshot.restore(snap, objects)
    assert [p for p, _ in result.failed] == ["big"]
    assert "not restorable" in result.failed[0][1]


def test_missing_and_corrupt_objects_are_reported(tree, objects):
    snap = take(tree, objects)
    digest = snap.entries["a.txt"].data
    (tree / "a.txt").write_text("changed\n")
    (tree / "sub" / "b.txt").write_text("changed\n")
    objects.db.execute("UPDATE objects SET data = x'789c0300000000' WHERE digest = ?", (
        bytes.fromhex(digest),
    ))  # fmt: skip
    objects.remove([snap.entries["sub/b.txt"].data])
    with pytest.raises(ObjectError, match="corrupt|unreadable"):
        objects.read(digest)
    result = snapshot.restore(snap, objects)
    failed = dict(result.failed)
    assert "corrupt" in failed["a.txt"] or "unreadable" in failed["a.txt"]
    assert "missing" in failed["sub/b.txt"]
    # Everything else was restored.
    assert (tree / "run.sh").read_text().startswith("#!/bin/sh")


def test_root_that_does_not_exist_yet(tmp_path, objects):
    root = tmp_path / "later"
    snap = take(root, objects)
    assert snap.entries == {}
    root.mkdir()
    (root / "f").write_text("x")
    result = snapshot.restore(snap, objects)
    assert result.failed == [] and not root.exists()


def test_directory_replaced_by_a_symlink_while_walking_is_not_followed(tree, objects, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "secret").write_text("not part of the tree\n")
    sub = str(tree / "sub")

    def swap(path: str) -> None:
        if path == sub:  # just before it is listed
            os.rename(sub, sub + ".old")
            os.symlink(elsewhere, sub)

    with objects.batch() as b:
        snap = snapshot.take(str(tree), b, on_dir=swap)
    assert not any(p.startswith("sub/") for p in snap.entries)


def test_root_directory_attributes_are_part_of_the_snapshot(tree, objects):
    first = take(tree, objects)
    first.taken_ns += 5 * 10**9  # every entry trusted
    os.chmod(tree, 0o700)
    again = take(tree, objects, first)
    assert not again.unchanged and again.entries["."].mode == 0o700
    assert again.manifest != first.manifest


def test_diff_is_ordered_by_path_with_each_paths_changes_together(tree, objects):
    a = take(tree, objects)
    (tree / "0-first.txt").write_text("new\n")
    (tree / "zz-last").mkdir()
    os.unlink(tree / "sub" / "b.txt")
    (tree / "run.sh").write_text("#!/bin/sh\necho bye\n")
    os.chmod(tree / "run.sh", 0o700)
    b = take(tree, objects, a)
    changes = [(c.path, c.what) for c in snapshot.diff(a, b)]
    assert changes == [
        ("0-first.txt", "created"),
        ("run.sh", "modified"),
        ("run.sh", "mode"),
        ("sub/b.txt", "deleted"),
        ("zz-last", "created"),
    ]
    assert snapshot.diff(b, b) == []


def test_many_objects_are_compressed_aside_and_kept_or_dropped(tmp_path, objects):
    contents = [f"file {i}\n".encode() * (i % 50 + 1) for i in range(500)]
    files = []
    for i, data in enumerate(contents):
        p = tmp_path / f"f{i}"
        p.write_bytes(data)
        files.append(str(p))
    with objects.batch() as b:
        digests = [b.put_file(p)[0] for p in files]
    assert [objects.read(d) for d in digests] == contents
    other = ObjectStore(tmp_path / "other")
    with pytest.raises(RuntimeError), other.batch() as b:
        for p in files:
            b.put_file(p)
        raise RuntimeError("interrupted")
    assert not any(other.has(d) for d in digests)


def test_incompressible_content_is_stored_as_is_and_read_back(tmp_path, objects):
    noise = os.urandom(2 * 1024 * 1024 + 5)  # read in chunks
    small_noise = os.urandom(200_000)  # read at once
    text = b"the same line again\n" * 20_000
    for name, data in (("noise", noise), ("small", small_noise), ("text", text)):
        (tmp_path / name).write_bytes(data)
    with objects.batch() as b:
        got = {n: b.put_file(str(tmp_path / n))[0] for n in ("noise", "small", "text")}
    assert objects.read(got["noise"]) == noise
    assert objects.read(got["small"]) == small_noise
    assert objects.read(got["text"]) == text
    sizes = objects.sizes()
    assert sizes[got["noise"]] < len(noise) * 1.01  # stored, not inflated
    assert sizes[got["text"]] < len(text) / 20  # still compressed


def test_a_file_longer_than_its_stat_size_is_read_to_the_end():
    r, w = os.pipe()
    os.write(w, b"more than zero bytes")
    os.close(w)
    try:
        assert _read_all(r, 0) == b"more than zero bytes"
    finally:
        os.close(r)


def test_rewritten_files_get_their_mode_and_mtime_back(tree, objects):
    for name, mode in (("ro.txt", 0o444), ("open.sh", 0o777), ("odd", 0o640)):
        (tree / name).write_text(f"{name} as it was\n")
        os.chmod(tree / name, mode)
    before = tree_state(tree)
    snap = take(tree, objects)
    for name in ("ro.txt", "open.sh", "odd"):
        os.chmod(tree / name, 0o600)
        (tree / name).write_text("something else entirely\n")
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert tree_state(tree) == before
    assert not [p for p in os.listdir(tree) if ".rw-" in p]  # no temporary files left


def test_excludes_quick_check_agrees_with_every_pattern_in_turn():
    ex = snapshot.Excludes(
        ["*.log", "!keep.log", "build/", "/top/only", "docs/**/*.tmp", "a?c", "[ab]*.o", "!a*"]
    )

    def in_turn(rel, name, is_dir):
        hit = False
        for rx, anchored, dir_only, negate in ex.rules:
            if (not dir_only or is_dir) and rx.fullmatch(rel if anchored else name):
                hit = not negate
        return hit

    names = ["x.log", "keep.log", "build", "only", "n.tmp", "abc", "b.o", "a.o", "plain"]
    for parent in ["", "top/", "docs/", "docs/deep/", "src/build/"]:
        for name in names:
            for is_dir in (False, True):
                rel = parent + name
                assert ex.excluded(rel, name, is_dir) == in_turn(rel, name, is_dir), rel


def test_a_watched_file_as_root(tree, objects):
    f = tree / "a.txt"
    first = take(f, objects)
    assert list(first.entries) == ["."] and first.entries["."].kind == "file"
    first.taken_ns += 5 * 10**9  # every entry trusted
    again = take(f, objects, first)
    assert again.unchanged and again.entries["."] is first.entries["."]
    f.write_text("alpha, changed\n")
    later = take(f, objects, first)
    assert not later.unchanged
    assert objects.read(later.entries["."].data) == b"alpha, changed\n"


def test_split_walk_agrees_with_one_process_on_every_kind_of_change(tmp_path, objects, monkeypatch):
    monkeypatch.setattr(snapshot, "PARALLEL_MIN", 1)  # (whatever walk_mode set)
    root = tmp_path / "t"
    for top in ("one", "two", "three", "four"):
        for sub in ("x", "y"):
            (root / top / sub).mkdir(parents=True)
            for i in range(5):
                (root / top / sub / f"f{i}").write_text(f"{top}/{sub}/{i}\n")
        os.symlink("x/f0", root / top / "ln")
    (root / "top.txt").write_text("top\n")
    old = time.time_ns() - 10 * 10**9
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in filenames + dirnames:
            os.utime(os.path.join(dirpath, name), ns=(old, old), follow_symlinks=False)
    base = take(root, objects)
    results = []
    real = snapshot._split_walk

    def spy(*args):
        out = real(*args)
        results.append(out is not None)
        return out

    changes = {
        "nothing": lambda: None,
        "modified": lambda: [(root / t / "x" / "f1").write_text("new\n") for t in ("one", "four")],
        "chmod dir": lambda: os.chmod(root / "two" / "y", 0o700),
        "chmod file": lambda: os.chmod(root / "three" / "x" / "f2", 0o600),
        "symlink": lambda: (
            os.unlink(root / "one" / "ln"),
            os.symlink("y/f1", root / "one" / "ln"),
        ),
        "created": lambda: (root / "three" / "y" / "new").write_text("n\n"),
        "deleted": lambda: os.unlink(root / "two" / "x" / "f3"),
        "file to dir": lambda: (
            os.unlink(root / "four" / "y" / "f4"),
            (root / "four" / "y" / "f4").mkdir(),
        ),
        "dir to file": lambda: (
            [os.unlink(p) for p in (root / "one" / "y").iterdir()],
            os.rmdir(root / "one" / "y"),
            (root / "one" / "y").write_text("was a dir\n"),
        ),
    }
    for what, change in changes.items():
        change()
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(snapshot, "_split_walk", spy)
            split = snapshot.take(str(root), snapshot.DigestOnly(), base)
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(snapshot, "PARALLEL_MIN", 10**9)
            serial = snapshot.take(str(root), snapshot.DigestOnly(), base)
        assert split.entries == serial.entries, what
        assert split.unchanged == serial.unchanged == (what == "nothing"), what
        base = take(root, objects)
    # The child's report stood in for a walk where no entry came or went; where
    # one did on its side, the whole tree was walked again (in one process).
    assert results[:5] == [True] * 5 and False in results[5:]


def test_split_walk_when_sigchld_is_ignored(tree, objects):
    """A process may inherit SIGCHLD ignored: its children are reaped by the
    kernel, and waiting for one fails."""
    import signal

    base = take(tree, objects)
    (tree / "a.txt").write_text("changed\n")
    old = signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    try:
        now = snapshot.take(str(tree), snapshot.DigestOnly(), base)
    finally:
        signal.signal(signal.SIGCHLD, old)
    assert [(c.path, c.what) for c in snapshot.diff(base, now)] == [("a.txt", "modified")]


def _meanwhile(monkeypatch, change):
    """Run change() once restore has written its new files and before it
    gives them their names: as another process would, during the restore."""
    real = snapshot._sync
    done = []

    def sync(where, tree):
        if not done and where:  # (the first: after the new contents are written)
            done.append(change())
        return real(where, tree)

    monkeypatch.setattr(snapshot, "_sync", sync)


def _two_changed(tree, objects):
    """A snapshot of `tree`, then two of its files changed: (snapshot, the tree now)."""
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed since\n")
    (tree / "sub" / "b.txt").write_text("also changed\n")
    return snap, tree_state(tree)


def test_restore_that_cannot_sync_keeps_the_old_files(tree, objects, monkeypatch):
    snap, changed = _two_changed(tree, objects)

    def broken(fd):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(snapshot, "syncfs", broken)
    result = snapshot.restore(snap, objects)
    failed = dict(result.failed)
    assert "could not be written to disk" in failed["a.txt"]
    assert "could not be written to disk" in failed["sub/b.txt"]
    assert tree_state(tree) == changed  # nothing half-done, no temporary file left


def test_restore_gives_a_name_back_to_a_directory_that_took_it(tree, objects, monkeypatch):
    """Between planning and swapping in, a file became a directory: it is left
    as it is now and reported, and nothing is hidden under a temporary name."""
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed since\n")

    def take_the_name():
        os.unlink(tree / "a.txt")
        (tree / "a.txt").mkdir()
        (tree / "a.txt" / "inside").write_text("someone else's\n")

    _meanwhile(monkeypatch, take_the_name)
    result = snapshot.restore(snap, objects)
    assert "a.txt" in dict(result.failed)
    assert (tree / "a.txt" / "inside").read_text() == "someone else's\n"
    assert not list(tree.rglob(".*.rw-*"))


def test_many_files_restored_at_once(tmp_path, objects, monkeypatch, walk_mode):
    """Restores spread their file work over threads: every file comes back,
    whichever thread wrote it, and nothing is left under a temporary name."""
    root = tmp_path / "many"
    for d in range(6):
        (root / f"d{d}").mkdir(parents=True)
        for f in range(40):
            (root / f"d{d}" / f"f{f}.txt").write_text(f"{d}/{f}\n" * (f + 1))
    before = tree_state(root)
    snap = take(root, objects)
    for d in range(6):
        for f in range(0, 40, 2):
            (root / f"d{d}" / f"f{f}.txt").write_text("rewritten\n")  # modified
        for f in range(1, 40, 4):
            os.unlink(root / f"d{d}" / f"f{f}.txt")  # deleted
        for f in range(40, 60):
            (root / f"d{d}" / f"f{f}.txt").write_text("new\n")  # created
    writers = set()
    real = snapshot._write_temp

    def write_temp(*args):
        writers.add(threading.get_ident())
        return real(*args)

    monkeypatch.setattr(snapshot, "_write_temp", write_temp)
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert len(result.applied) == 6 * (20 + 10 + 20)
    assert tree_state(root) == before
    assert not list(root.rglob(".*.rw-*"))
    assert len(writers) == (1 if walk_mode == "serial" else 3)


def test_an_interrupted_restore_leaves_no_temporary_file(tree, objects, monkeypatch):
    snap, changed = _two_changed(tree, objects)

    def interrupted(where, tree):
        raise KeyboardInterrupt  # Ctrl-C once the new contents are written

    monkeypatch.setattr(snapshot, "_sync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        snapshot.restore(snap, objects)
    files = {k: v for k, v in tree_state(tree).items() if v[0] != "dir"}
    assert files == {k: v for k, v in changed.items() if v[0] != "dir"}  # each file as it was
    assert not list(tree.rglob(".*.rw-*"))


def test_verifying_reads_again_only_what_it_must(tree, objects, monkeypatch, walk_mode):
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed\n")
    walks = []
    real = snapshot.take

    def counted(*args, **kw):
        walks.append(args[0])
        return real(*args, **kw)

    monkeypatch.setattr(snapshot, "take", counted)
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert (tree / "a.txt").read_text() == "alpha\n"
    # The plan, and (without inotify) the verifying pass.
    assert len(walks) == (2 if walk_mode == "serial" else 1)
    assert result.reread == (walk_mode == "serial")


def test_a_change_made_during_the_restore_is_reported(tree, objects, monkeypatch):
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed\n")
    _meanwhile(monkeypatch, lambda: (tree / "run.sh").write_text("#!/bin/sh\necho other\n"))
    result = snapshot.restore(snap, objects)
    failed = dict(result.failed)
    assert set(failed) == {"run.sh"}
    assert "still modified" in failed["run.sh"]
    assert (tree / "a.txt").read_text() == "alpha\n"


def test_a_directory_that_appears_during_the_restore_is_read_in_full(tree, objects, monkeypatch):
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed\n")

    def arrive():
        (tree / "sub" / "late" / "deeper").mkdir(parents=True)
        (tree / "sub" / "late" / "deeper" / "x").write_text("x\n")

    _meanwhile(monkeypatch, arrive)
    result = snapshot.restore(snap, objects)
    failed = dict(result.failed)
    assert {"sub/late", "sub/late/deeper", "sub/late/deeper/x"} <= set(failed)
    assert "a.txt" not in failed
    assert result.reread


def test_a_watched_directory_moved_during_the_restore(tree, objects, monkeypatch):
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed\n")
    _meanwhile(monkeypatch, lambda: os.rename(tree / "sub" / "deep", tree / "elsewhere"))
    result = snapshot.restore(snap, objects)
    failed = dict(result.failed)
    assert "still created" in failed["sub/deep/c.bin"]  # (gone from where it was)
    assert "elsewhere" in failed and "elsewhere/c.bin" in failed
    assert result.reread


def test_without_enough_inotify_watches_the_whole_tree_is_read_again(tree, objects, monkeypatch):
    snap = take(tree, objects)
    (tree / "a.txt").write_text("changed\n")
    real = snapshot.Inotify.add
    added = []

    def add(self, path, mask):
        if len(added) == 2:  # as the kernel does past fs.inotify.max_user_watches
            raise OSError(errno.ENOSPC, "No space left on device")
        added.append(path)
        return real(self, path, mask)

    monkeypatch.setattr(snapshot.Inotify, "add", add)
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert (tree / "a.txt").read_text() == "alpha\n"
    assert result.reread


def test_a_parent_swapped_for_a_symlink_before_a_file_is_read_is_not_followed(
    tree, objects, tmp_path
):
    """Checkpoint creation reads each file through its directory's descriptor:
    `sub` replaced by a symlink to elsewhere between its listing and the read
    of a file in it, the file read is still the tree's."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "b.txt").write_text("not part of the tree\n")
    sub = tree / "sub"

    class Swapping(snapshot.DigestOnly):
        def put_file(self, path, *args):
            if os.path.basename(path) == "b.txt" and not sub.is_symlink():
                os.rename(sub, tree / "sub.old")
                os.symlink(elsewhere, sub)
            return super().put_file(path, *args)

    snap = snapshot.take(str(tree), Swapping())
    assert snap.entries["sub/b.txt"].data == hashlib.sha256(b"beta\n").hexdigest()


def test_a_restore_with_more_directories_than_it_keeps_open(tmp_path, objects, monkeypatch):
    """The directories a restore holds open are capped: those closed to stay
    under the cap are opened again, checked the same way, when needed."""
    monkeypatch.setattr(snapshot._Dirs, "MAX_OPEN", 4)
    root = tmp_path / "wide"
    for d in range(12):
        (root / f"d{d}" / "inner").mkdir(parents=True)
        for f in range(6):
            (root / f"d{d}" / "inner" / f"f{f}").write_text(f"{d}/{f}\n")
    before = tree_state(root)
    snap = take(root, objects)
    for d in range(12):
        for f in range(6):
            (root / f"d{d}" / "inner" / f"f{f}").write_text("rewritten, longer\n")
        os.chmod(root / f"d{d}", 0o700)
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert tree_state(root) == before


def test_a_watched_file_is_restored_beside_its_name(tmp_path, objects):
    f = tmp_path / "app.conf"
    f.write_text("as checkpointed\n")
    os.chmod(f, 0o640)
    snap = take(f, objects)
    f.write_text("changed\n")
    os.chmod(f, 0o600)
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert f.read_text() == "as checkpointed\n" and stat.S_IMODE(f.stat().st_mode) == 0o640
    assert sorted(os.listdir(tmp_path)) == ["app.conf", "objects"]


def test_a_directory_swapped_for_a_symlink_mid_restore_is_reported_not_followed(
    tree, objects, tmp_path, monkeypatch
):
    """Between writing the new contents and giving them their names, `sub` is
    replaced by a symlink to a directory elsewhere: nothing there changes
    (not its mode, not its files), and the restore says `sub` is not right."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    (elsewhere / "b.txt").write_text("not part of the tree\n")
    os.chmod(elsewhere / "b.txt", 0o600)
    os.chmod(tree / "sub", 0o755)
    snap, _ = _two_changed(tree, objects)
    os.chmod(tree / "sub", 0o711)  # (its mode is to be put back too)
    before = {p.name: (p.stat().st_mode, p.read_bytes()) for p in elsewhere.iterdir()}

    def swap():
        os.rename(tree / "sub", tree / "sub.old")
        os.symlink(elsewhere, tree / "sub")

    _meanwhile(monkeypatch, swap)
    result = snapshot.restore(snap, objects)
    assert "sub" in dict(result.failed)
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o700
    assert {p.name: (p.stat().st_mode, p.read_bytes()) for p in elsewhere.iterdir()} == before


def inodes(root, *rels):
    return [(os.lstat(root / r).st_dev, os.lstat(root / r).st_ino) for r in rels]


def test_hard_links_come_back_as_links(tree, objects):
    """A group of hard links in the checkpoint comes back as one inode (one
    content write, then links), whatever happened to its names meanwhile."""
    (tree / "sub" / "deep" / "one").write_text("shared\n")
    os.link(tree / "sub" / "deep" / "one", tree / "two")
    os.link(tree / "sub" / "deep" / "one", tree / "sub" / "three")
    os.link(tree / "a.txt", tree / "alias")  # a second group
    before = tree_state(tree)
    snap = take(tree, objects)
    assert snap.links == (("a.txt", "alias"), ("sub/deep/one", "sub/three", "two"))
    # The links as the manifest keeps them.
    snap = snapshot.load(objects, snap.manifest, snap.taken_ns)
    assert snap.links == (("a.txt", "alias"), ("sub/deep/one", "sub/three", "two"))

    shutil.copy2(tree / "two", tree / "two.copy")
    os.replace(tree / "two.copy", tree / "two")  # same content, its own inode now
    os.unlink(tree / "sub" / "three")
    (tree / "sub" / "three").write_text("other\n")
    os.unlink(tree / "alias")
    (tree / "sub" / "deep" / "one").write_text("shared, then changed\n")  # (not "two")
    now = take(tree, objects, snap)
    changes = {(c.path, c.what) for c in snapshot.diff(now, snap)}
    assert {("two", "linked"), ("sub/three", "linked"), ("alias", "created")} <= changes

    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert tree_state(tree) == before
    [one, two, three] = inodes(tree, "sub/deep/one", "two", "sub/three")
    assert one == two == three
    assert os.lstat(tree / "two").st_nlink == 3
    assert inodes(tree, "a.txt") == inodes(tree, "alias")
    assert not list(tree.rglob(".*.rw-*"))
    assert snapshot.diff(take(tree, objects, snap), snap) == []


def test_files_linked_since_get_their_own_inode_back(tree, objects):
    (tree / "b.copy").write_text("beta\n")
    before = tree_state(tree)
    snap = take(tree, objects)
    assert snap.links == ()
    os.unlink(tree / "b.copy")
    os.link(tree / "sub" / "b.txt", tree / "b.copy")  # same content, one inode now
    changes = {(c.path, c.what) for c in snapshot.diff(take(tree, objects, snap), snap)}
    assert {("b.copy", "unlinked"), ("sub/b.txt", "unlinked")} <= changes
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert tree_state(tree) == before
    assert inodes(tree, "b.copy") != inodes(tree, "sub/b.txt")
    assert os.lstat(tree / "b.copy").st_nlink == 1


def test_a_link_that_cannot_be_made_is_reported(tree, objects, monkeypatch):
    os.link(tree / "a.txt", tree / "alias")
    snap = take(tree, objects)
    os.unlink(tree / "alias")
    real_link = os.link

    def refuse(src, dst, *a, **kw):
        if str(dst).startswith(".alias.rw-"):
            raise OSError(errno.EPERM, "Operation not permitted")
        return real_link(src, dst, *a, **kw)

    monkeypatch.setattr(snapshot.os, "link", refuse)
    result = snapshot.restore(snap, objects)
    assert result.failed == [
        ("a.txt", "not a hard link of alias after restore"),
        ("alias", "Operation not permitted"),
    ]
    assert "alias" not in {c.path for c in result.applied}


def test_a_manifest_without_links_still_loads(tree, objects):
    snap = take(tree, objects)
    doc = json.loads(snap.manifest_bytes())
    assert "links" not in doc  # a tree without links keeps the manifest it had
    loaded = snapshot.Snapshot.from_manifest(json.dumps(doc).encode(), 0)
    assert loaded.links == () and loaded.entries == snap.entries
    doc["links"] = [["a.txt", "sub"]]
    with pytest.raises(ObjectError, match="not a file"):
        snapshot.Snapshot.from_manifest(json.dumps(doc).encode(), 0)

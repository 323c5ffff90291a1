"""Restores of trees that someone else can write in, done as root: another
user swapping directories for symlinks mid-restore, restores killed halfway,
files that vanish while a restore plans, and manifests that name paths outside
their tree. Real files, the real rw program, a second uid made here."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from rewind_daemon.checkpoints.checkpoint import snapshot
from rewind_daemon.checkpoints.objects import ObjectError, ObjectStore

from ..conftest import rw, rw_json, wait_for

needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("useradd") or not shutil.which("setpriv"),
    reason="needs root, useradd and setpriv",
)

SUB_FILES = 300  # files under the directory that gets swapped: each is a chance to escape


@pytest.fixture
def other_user():
    """A second user, made for this test and removed after it, whatever happens."""
    name = f"rwtrestore{secrets.token_hex(3)}"
    subprocess.run(
        ["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
        check=True,
        capture_output=True,
    )
    try:
        out = subprocess.run(["id", "-u", name], check=True, capture_output=True, text=True)
        uid = int(out.stdout)
        gid = int(subprocess.run(["id", "-g", name], check=True, capture_output=True,
                                 text=True).stdout)  # fmt: skip
        yield name, uid, gid
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True)


@pytest.fixture
def open_dir():
    """A directory under /tmp that another user may traverse."""
    base = Path(tempfile.mkdtemp(prefix="rw-hostile-", dir="/tmp"))
    base.chmod(0o755)
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def outside_state(base: Path, tree: Path) -> dict:
    """Every entry under `base` but the tree: type, owner, mode, content."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(base):
        if Path(dirpath) == tree.parent:
            dirnames[:] = [d for d in dirnames if Path(dirpath, d) != tree]
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            st = os.lstat(p)
            content = p.read_bytes() if stat.S_ISREG(st.st_mode) else None
            out[str(p)] = (stat.S_IFMT(st.st_mode), st.st_uid, st.st_gid, st.st_mode, content)
    return out


# Waits for the restore to start writing (its temporary files appear in
# `sub`), then swaps `sub` for a symlink to `outside` and back, in a loop.
SWAPPER = """
import os, sys, time
tree, outside = sys.argv[1], sys.argv[2]
sub, real = os.path.join(tree, "sub"), os.path.join(tree, "sub.real")
deadline = time.monotonic() + 60
while not any(".rw-" in n for n in os.listdir(sub)) and time.monotonic() < deadline:
    time.sleep(0.0005)
while True:
    try:
        os.rename(sub, real)
        os.symlink(outside, sub)
        time.sleep(0.001)
        os.unlink(sub)
        os.rename(real, sub)
        time.sleep(0.0005)
    except OSError:
        time.sleep(0.0002)
"""


def put_back(tree: Path) -> None:
    """Undo what the swapper left (it is stopped): `sub` a directory again."""
    sub, real = tree / "sub", tree / "sub.real"
    if sub.is_symlink():
        sub.unlink()
    if real.exists():
        if sub.exists():
            shutil.rmtree(sub)
        real.rename(sub)


def change_files(tree: Path, uid: int, gid: int, round_: int) -> None:
    for i in range(SUB_FILES):
        p = tree / "sub" / f"f{i}"
        p.write_text(f"changed in round {round_}\n")
        os.chown(p, uid, gid)
    for i in range(20):
        os.chmod(tree / "sub" / f"m{i}", 0o600)


@needs_root
def test_a_directory_swapped_for_a_symlink_mid_restore_is_never_followed(
    rw_home, other_user, open_dir
):
    """Another user who can write in the tree swaps `sub` for a symlink to a
    root-only directory, over and over, while root restores: nothing outside
    the tree changes, whatever the restore reports."""
    _name, uid, gid = other_user
    play = open_dir / "play"  # the other user's: they may rename in it
    tree = play / "tree"
    (tree / "sub").mkdir(parents=True)
    for i in range(SUB_FILES):
        (tree / "sub" / f"f{i}").write_text(f"file {i} as checkpointed\n")
    for i in range(20):
        (tree / "sub" / f"m{i}").write_text(f"mode {i}\n")
        os.chmod(tree / "sub" / f"m{i}", 0o644)
    for dirpath, dirnames, filenames in os.walk(play):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.chown(name, uid, gid)
    outside = open_dir / "outside"  # root's: the symlinks point here
    outside.mkdir(mode=0o755)
    for name in [f"f{i}" for i in range(SUB_FILES)] + [f"m{i}" for i in range(20)]:
        p = outside / name
        p.write_text("root's only\n")
        p.chmod(0o600)
    (open_dir / "secret").write_text("root's secret\n")
    (open_dir / "secret").chmod(0o600)
    before = outside_state(open_dir, tree)

    cid = str(rw_json("checkpoint", "create", "--paths", str(tree))["id"])
    for round_ in range(4):
        change_files(tree, uid, gid, round_)
        swapper = subprocess.Popen(
            ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
             sys.executable, "-c", SWAPPER, str(tree), str(outside)],
        )  # fmt: skip
        try:
            proc = rw("checkpoint", "restore", cid, "--yes", check=False, timeout=120)
        finally:
            swapper.kill()
            swapper.wait()
        put_back(tree)
        assert outside_state(open_dir, tree) == before, f"round {round_}: {proc.stderr[-2000:]}"
        assert proc.returncode in (0, 3), proc.stderr
        assert "Traceback" not in proc.stderr
        # Left alone, a restore finishes what the raced one could not.
        rw("checkpoint", "restore", cid, "--yes")
        assert rw("checkpoint", "diff", cid).stdout.startswith("nothing changed")
    assert outside_state(open_dir, tree) == before


def test_a_manifest_naming_a_path_outside_its_tree_is_refused():
    def manifest(*names: str) -> bytes:
        rows = [[".", "dir", 0o755, 0, 0, 0, 0, 0, 1, None, None]]
        rows += [[n, "file", 0o644, 0, 0, 1, 0, 0, 2, "ab" * 32, None] for n in names]
        return json.dumps({"format": 1, "root": "/srv/app", "entries": rows}).encode()

    assert set(snapshot.Snapshot.from_manifest(manifest("a", "b/c"), 0).entries) == {
        ".",
        "a",
        "b/c",
    }
    for bad in ("../etc/passwd", "a/../../x", "/etc/shadow", "a//b", "a/./b", "a\0b", "", "a/"):
        with pytest.raises(ObjectError, match="refused|not a snapshot") as err:
            snapshot.Snapshot.from_manifest(manifest("ok", bad), 0, "d1")
        assert err.value.exit_code == 2, bad


def test_a_file_that_vanishes_while_the_restore_plans_is_taken_as_gone(tmp_path, monkeypatch):
    root = tmp_path / "t"
    root.mkdir()
    for i in range(5):
        (root / f"f{i}").write_text(f"{i}\n")
    objects = ObjectStore(tmp_path / "objects")
    with objects.batch() as b:
        snap = snapshot.take(str(root), b)
        snapshot.store(snap, b)
    (root / "f2").write_text("changed, same size? no: longer\n")
    (root / "f3").write_text("3\n")  # same size: read to compare
    os.utime(root / "f3", ns=(1, 1))
    real = snapshot.DigestOnly.put_file
    done = []

    def vanish(self, path, *args):
        if os.path.basename(path) == "f3" and not done:
            done.append(os.unlink(root / "f3"))  # by someone else, between listing and reading
        return real(self, path, *args)

    monkeypatch.setattr(snapshot.DigestOnly, "put_file", vanish)
    now = snapshot.take(str(root), snapshot.DigestOnly(), snap)
    assert "f3" not in now.entries and "f2" in now.entries
    (root / "f3").write_text("3\n")
    os.utime(root / "f3", ns=(1, 1))
    done.clear()  # and once more while the restore plans
    result = snapshot.restore(snap, objects)
    assert result.failed == []
    assert (root / "f3").read_text() == "3\n" and (root / "f2").read_text() == "2\n"


@needs_root
def test_a_killed_restore_leaves_nothing_the_next_one_does_not_sweep(rw_home, tmp_path):
    """A restore killed (SIGKILL) while it writes leaves `.NAME.rw-PID` full
    copies; the next restore of the tree removes them, and so does rw doctor."""
    tree = tmp_path / "big"
    for d in range(10):
        (tree / f"d{d}").mkdir(parents=True)
        for f in range(200):
            (tree / f"d{d}" / f"f{f}").write_bytes(os.urandom(20_000))
    cid = str(rw_json("checkpoint", "create", "--paths", str(tree))["id"])
    for d in range(10):
        for f in range(200):
            (tree / f"d{d}" / f"f{f}").write_bytes(b"changed\n")

    def leftovers() -> list[Path]:
        return sorted(tree.rglob(".*.rw-*"))

    env = dict(os.environ)
    proc = subprocess.Popen(
        [shutil.which("rw") or os.path.join(os.path.dirname(sys.executable), "rw"),
         "checkpoint", "restore", cid, "--yes"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: len(leftovers()) > 50 or proc.poll() is not None, timeout=60, interval=0.002
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    left = leftovers()
    assert left, "the restore ended before it could be killed mid-way"
    assert all(p.name.endswith(f".rw-{proc.pid}") for p in left)
    out = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert out.returncode == 0, out.stdout + out.stderr
    assert leftovers() == []
    said = out.stdout + out.stderr
    assert said.count("(left by an interrupted restore)") == len(left)

    # rw doctor removes what a killed restore left, and only that: not a
    # name that only looks like one (a dead pid's, or no pid's).
    for d in range(10):
        for f in range(200):
            (tree / f"d{d}" / f"f{f}").write_bytes(b"changed again\n")
    proc = subprocess.Popen(
        [shutil.which("rw") or os.path.join(os.path.dirname(sys.executable), "rw"),
         "checkpoint", "restore", cid, "--yes"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        wait_for(
            lambda: len(leftovers()) > 50 or proc.poll() is not None, timeout=60, interval=0.002
        )
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    left = leftovers()
    assert left, "the restore ended before it could be killed mid-way"
    lookalikes = [tree / "d1" / ".f7.rw-3999999", tree / ".notes.rw-backup"]
    for p in lookalikes:
        p.write_text("the user's\n")
    report = rw("doctor", check=False)
    assert f"removed {len(left)} temporary file(s)" in report.stdout, report.stdout
    assert leftovers() == sorted(lookalikes)


def test_a_watched_files_leftovers_beside_it_are_swept(tmp_path):
    """A tree that is one file is restored through a temporary file beside it:
    a killed restore's is removed by the next one, and only that."""
    f = tmp_path / "app.conf"
    f.write_text("as checkpointed\n")
    objects = ObjectStore(tmp_path / "objects")
    with objects.batch() as b:
        snap = snapshot.take(str(f), b)
        snapshot.store(snap, b)
    f.write_text("changed\n")
    journals = str(tmp_path / "journals")
    pid = os.fork()
    if pid == 0:  # a restore that lists its temporary, makes it, and is killed
        try:
            snapshot._Journal(journals).write(snapshot._Dirs(str(f)), [snapshot.ROOT])
            Path(tmp_path, f".app.conf.rw-{os.getpid()}").write_text("a killed restore's copy\n")
        finally:
            os._exit(0)
    os.waitpid(pid, 0)
    left = tmp_path / f".app.conf.rw-{pid}"
    assert left.exists()
    other = tmp_path / f".other.conf.rw-{pid}"  # not in the journal: not this restore's
    other.write_text("x\n")
    result = snapshot.restore(snap, objects, journals=journals)
    assert result.failed == [] and result.swept == [str(left)]
    assert not left.exists() and other.exists()
    assert f.read_text() == "as checkpointed\n"

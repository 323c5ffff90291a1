"""Restores done as root of trees that another user (or the guarded command)
can change: a directory above the tree swapped for a symlink, a filesystem
mounted inside it, hard links to files outside it, and names that look like
rw's temporaries. Real files, the real rw program, a second uid made here;
mounts inside `unshare -m`, so that nothing leaks out of the test."""

from __future__ import annotations

import os
import secrets
import shutil
import stat
import subprocess

import pytest

from ..conftest import RW, rw, rw_json
from .test_restore_hostile import needs_root, open_dir, other_user, outside_state

__all__ = ["open_dir", "other_user"]  # (fixtures)


def as_user(uid: int, gid: int, *cmd: str, groups: str = "") -> None:
    subprocess.run(
        ["setpriv", f"--reuid={uid}", f"--regid={gid}",
         f"--groups={groups}" if groups else "--clear-groups", *cmd],
        check=True, capture_output=True,
    )  # fmt: skip


@needs_root
def test_a_directory_above_the_tree_swapped_for_a_symlink_is_refused(rw_home, other_user, open_dir):
    """The other user owns `m/`; root checkpoints m/proj/app; the other user
    moves proj away and puts a symlink to root's `victim` in its place: the
    restore refuses (exit 3), and nothing in victim changes."""
    _name, uid, gid = other_user
    m = open_dir / "m"
    app = m / "proj" / "app"
    app.mkdir(parents=True)
    (app / "a").write_text("as checkpointed\n")
    os.chown(m, uid, gid)
    cid = str(rw_json("checkpoint", "create", "--paths", str(app))["id"])
    (app / "a").write_text("changed\n")
    (app / "new").write_text("made after the checkpoint\n")
    victim = open_dir / "victim"
    (victim / "app").mkdir(parents=True)
    (victim / "app" / "a").write_text("root's a\n")
    (victim / "app" / "precious").write_text("root's precious\n")
    for p in victim.rglob("*"):
        p.chmod(0o600 if p.is_file() else 0o755)
    before = outside_state(open_dir, m)

    as_user(uid, gid, "mv", str(m / "proj"), str(m / "proj.real"))
    as_user(uid, gid, "ln", "-s", str(victim), str(m / "proj"))
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 3, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    assert "symlink" in proc.stderr and str(app) in proc.stderr
    assert outside_state(open_dir, m) == before
    assert (m / "proj.real" / "app" / "new").exists()  # nothing touched in the tree either

    # The same with the directory moved in place of the tree's own root.
    (m / "proj").unlink()
    (m / "proj.real").rename(m / "proj")
    os.chown(m / "proj", uid, gid)
    as_user(uid, gid, "mv", str(app), str(m / "proj" / "app.real"))
    as_user(uid, gid, "mkdir", str(app))
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 3 and "not the dir" in proc.stderr, proc.stderr
    assert os.listdir(app) == []
    # Put back, the restore goes ahead.
    app.rmdir()
    (m / "proj" / "app.real").rename(app)
    rw("checkpoint", "restore", cid, "--yes")
    assert (app / "a").read_text() == "as checkpointed\n" and not (app / "new").exists()


# Runs in its own mount namespace: checkpoint, mount, restore, report.
MOUNTED = """
set -eu
cd "$1"
mount --make-rprivate /
"$RW" checkpoint create --paths "$PWD/t7" > /dev/null
cid=1
echo changed > t7/data/d1
mount --bind victim3 t7/data
set +e
"$RW" checkpoint restore "$cid" --yes > restore.out 2>&1
echo "rc=$?" >> restore.out
umount t7/data
mount -t tmpfs -o size=1m tmpfs t7/mnt
echo on-tmpfs > t7/mnt/f
"$RW" checkpoint create --paths "$PWD/t7" > create.out 2>&1
echo "rc=$?" >> create.out
"$RW" checkpoint restore "$cid" --yes >> restore2.out 2>&1
echo "rc=$?" >> restore2.out
ls t7/mnt > mnt.ls
"""


@needs_root
@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare")
def test_a_mount_inside_the_tree_is_never_entered(rw_home, tmp_path):
    """A directory bind-mounted over one of the tree's after the checkpoint:
    the restore leaves it (and what it shows) alone and says so; a filesystem
    mounted inside the tree when a checkpoint is taken is not read into it."""
    t7 = tmp_path / "t7"
    (t7 / "data").mkdir(parents=True)
    (t7 / "mnt").mkdir()
    (t7 / "data" / "d1").write_text("data 1\n")
    victim = tmp_path / "victim3"
    victim.mkdir()
    for i in range(5):
        (victim / f"v{i}").write_text(f"victim {i}\n")
    env = {**os.environ, "RW": RW}
    subprocess.run(
        ["timeout", "-s", "KILL", "120", "unshare", "-m",
         "bash", "-c", MOUNTED, "-", str(tmp_path)],
        check=True, env=env, timeout=150,
    )  # fmt: skip
    out = (tmp_path / "restore.out").read_text()
    assert sorted(os.listdir(victim)) == [f"v{i}" for i in range(5)], out
    assert all((victim / f"v{i}").read_text() == f"victim {i}\n" for i in range(5))
    assert "rc=3" in out and "mount point" in out, out
    assert "Traceback" not in out
    create = (tmp_path / "create.out").read_text()
    assert "rc=0" in create and "mnt: another filesystem mounted here" in create, create
    # Restoring the first checkpoint with the tmpfs mounted leaves it alone too.
    assert (tmp_path / "mnt.ls").read_text().split() == ["f"]
    assert (t7 / "data" / "d1").read_text() == "data 1\n"


@pytest.fixture
def third_user():
    """Bob: a user whose file the other user may write (through his group)."""
    name = f"rwtbob{secrets.token_hex(3)}"
    subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin", name],
                   check=True, capture_output=True)  # fmt: skip
    try:
        ids = [subprocess.run(["id", flag, name], check=True, capture_output=True, text=True)
               for flag in ("-u", "-g")]  # fmt: skip
        yield int(ids[0].stdout), int(ids[1].stdout)
    finally:
        subprocess.run(["userdel", "-f", name], capture_output=True)


@needs_root
def test_a_hard_link_to_a_file_outside_the_tree_is_never_changed_in_place(
    rw_home, other_user, third_user, open_dir
):
    """The other user (in bob's group) writes the checkpointed content into
    bob's file outside the tree and links it in place of theirs: root's
    restore gives the tree's name a file of its own, and bob's keeps its
    owner and mode."""
    _name, uid, gid = other_user
    bob, bobs = third_user
    shared = open_dir / "shared"
    shared.mkdir()
    os.chown(shared, uid, gid)
    (shared / "f").write_text("the content\n")
    os.chown(shared / "f", uid, gid)
    os.chmod(shared / "f", 0o600)
    outside = open_dir / "outside"
    outside.mkdir(mode=0o755)
    (outside / "bobfile").write_text("bob's own\n")
    os.chown(outside / "bobfile", bob, bobs)
    os.chmod(outside / "bobfile", 0o660)
    cid = str(rw_json("checkpoint", "create", "--paths", str(shared))["id"])

    as_user(uid, gid, "sh", "-c", f"printf 'the content\\n' > {outside}/bobfile", groups=str(bobs))
    as_user(uid, gid, "rm", str(shared / "f"))
    as_user(uid, gid, "ln", str(outside / "bobfile"), str(shared / "f"), groups=str(bobs))
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    st = os.lstat(outside / "bobfile")
    assert (st.st_uid, st.st_gid, stat.S_IMODE(st.st_mode)) == (bob, bobs, 0o660)
    assert st.st_nlink == 1
    mine = os.lstat(shared / "f")
    assert (mine.st_uid, mine.st_gid, stat.S_IMODE(mine.st_mode)) == (uid, gid, 0o600)
    assert (shared / "f").read_text() == "the content\n"

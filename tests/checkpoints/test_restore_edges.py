"""Restores at the edges: a tree's root removed with everything in it.
Real rw, real files."""

from __future__ import annotations

import os
import shutil
import subprocess

from ..conftest import RW, rw, rw_json, write_config


def test_a_tree_removed_whole_is_restored_and_verified(rw_home, tmp_path):
    """Its root recreated with no subdirectories: the watches see only it."""
    write_config(rw_home, "[daemon]\nautostart = false\n")
    t9 = tmp_path / "t9"
    t9.mkdir()
    (t9 / "a").write_text("a\n")
    cid = str(rw_json("checkpoint", "create", "--paths", str(t9))["id"])
    shutil.rmtree(t9)
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "restored and verified" in proc.stdout
    assert (t9 / "a").read_text() == "a\n"

    guard = subprocess.run(
        [RW, "guard", "--paths", str(t9), "--", "sh", "-c", f"rm -rf {t9}; echo 'ERROR: gone'"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert guard.returncode == 1, guard.stderr
    assert "manual intervention" not in guard.stderr and "INCOMPLETE" not in guard.stderr
    assert (t9 / "a").read_text() == "a\n"


EVIL = "evil\x1b]0;PWNED\x07\x1b[2J"


def test_control_characters_in_file_names_never_reach_the_terminal(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "a").write_text("a\n")
    cid = str(rw_json("checkpoint", "create", "--paths", str(tree))["id"])
    (tree / EVIL).write_text("x\n")
    rw_json("checkpoint", "create", "--paths", str(tree))  # (show lists nothing of it)
    said = [
        rw("checkpoint", "diff", cid, check=False),
        rw("checkpoint", "restore", cid, "--dry-run", check=False),
        rw("checkpoint", "restore", cid, "--yes", check=False),
    ]
    (tree / EVIL).write_text("x\n")
    guard = [RW, "guard", "--paths", str(tree), "--", "sh", "-c"]
    env = {**os.environ, "EVIL": f"{tree}/{EVIL}b"}  # (not in the command line)
    said.append(
        subprocess.run(
            [*guard, 'printf y > "$EVIL"; echo "ERROR: no"'],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=60,
            env=env,
        )
    )
    for proc in said:
        text = proc.stdout + proc.stderr
        assert "\x1b" not in text and "\x07" not in text, repr(text)
        assert "evil\\e]0;PWNED" in text, text
    assert "Reverted:" in said[-1].stderr


def test_a_tree_that_is_a_symlink_is_restored_as_the_symlink(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    target, other = tmp_path / "dir", tmp_path / "other"
    for d in (target, other):
        d.mkdir()
        (d / "f").write_text(f"{d.name}\n")
    link = tmp_path / "link"
    link.symlink_to(target)
    cid = str(rw_json("checkpoint", "create", "--paths", str(link))["id"])
    link.unlink()
    link.symlink_to(other)
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.readlink(link) == str(target)
    assert sorted(os.listdir(tmp_path)) == ["dir", "link", "other", "rwhome"]
    assert (target / "f").read_text() == "dir\n" and (other / "f").read_text() == "other\n"


def test_a_root_its_owner_made_anew_is_restored_into(rw_home, tmp_path):
    """rm -rf DIR; mkdir DIR by the guarded command: another inode at the
    root, made by its owner on the same filesystem: rolled back."""
    write_config(rw_home, "[daemon]\nautostart = false\n")
    t = tmp_path / "t"
    (t / "sub").mkdir(parents=True)
    (t / "sub" / "a").write_text("a\n")
    guard = subprocess.run(
        [RW, "guard", "--paths", str(t), "--", "sh", "-c",
         f"mkdir {t}.new; rm -rf {t}; mv {t}.new {t}; echo new > {t}/b; echo 'ERROR: replaced'"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert guard.returncode == 1, guard.stderr
    assert (t / "sub" / "a").read_text() == "a\n" and not (t / "b").exists()

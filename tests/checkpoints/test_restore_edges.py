"""Restores at the edges: a tree's root removed with everything in it.
Real rw, real files."""

from __future__ import annotations

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

"""rw gc gives the space of what it frees back to the disk (real files, real SQLite)."""

from __future__ import annotations

import os
import sqlite3

import pytest

from rewind_daemon.checkpoints.objects import ObjectStore

from ..conftest import make_site, rw, rw_json, write_config
from .test_snapshot import tree_state


def on_disk(root) -> int:
    """Bytes the directory takes on disk, as du counts them."""
    total = 0
    for directory, _, files in os.walk(root):
        for name in files:
            total += os.lstat(os.path.join(directory, name)).st_blocks * 512
    return total


def fan_out_dirs(objects) -> list[str]:
    return sorted(e.name for e in os.scandir(objects) if len(e.name) == 2 and e.is_dir())


@pytest.mark.parametrize("how", ["no daemon", "daemon up", "store made before auto-vacuum"])
def test_gc_shrinks_the_object_store(rw_home, tmp_path, how):
    write_config(rw_home, f"[daemon]\nautostart = {'true' if how == 'daemon up' else 'false'}\n")
    objects = rw_home / "data" / "objects"
    if how == "store made before auto-vacuum":
        objects.mkdir(parents=True, mode=0o700)
        db = sqlite3.connect(objects / "objects.db")
        db.execute("PRAGMA page_size=16384")
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(
            "CREATE TABLE objects (digest BLOB PRIMARY KEY, data BLOB NOT NULL) WITHOUT ROWID"
        )
        db.close()
        os.chmod(objects / "objects.db", 0o600)
    if how == "daemon up":
        rw("daemon", "start")
    site = make_site(tmp_path)
    kept = tree_state(site)
    first = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    # Incompressible content: 600 small files (packed in objects.db) and two
    # large ones (loose object files).
    bulk = site / "bulk"
    bulk.mkdir()
    for i in range(600):
        (bulk / f"f{i}").write_bytes(os.urandom(3000))
    (site / "big1.bin").write_bytes(os.urandom(600_000))
    (site / "big2.bin").write_bytes(os.urandom(700_000))
    second = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    full = on_disk(objects)
    assert full > 3_000_000
    assert len(fan_out_dirs(objects)) == 2

    rw("checkpoint", "rm", second)
    out = rw("gc").stdout
    assert "removed 0 checkpoint(s), 603 object(s)" in out
    after = on_disk(objects)
    # What gc freed (about 3.1 MB) went back to the disk, not to SQLite's free list.
    assert full - after > 2_900_000, (full, after)
    assert after < 1_000_000, after
    assert "object store on disk:" in out and out.strip().endswith("KiB")
    assert fan_out_dirs(objects) == []
    db = sqlite3.connect(f"file:{objects / 'objects.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # incremental from now on
        assert db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    finally:
        db.close()

    # The checkpoint left is whole and restores.
    store = ObjectStore(objects, readonly=True)
    try:
        assert all(store.verify(d) is None for d in store.digests())
    finally:
        store.close()
    (site / "index.html").write_text("changed\n")
    rw("checkpoint", "restore", first, "--yes")
    for extra in ("bulk", "big1.bin", "big2.bin"):
        assert not (site / extra).exists()
    assert tree_state(site) == kept


def test_a_store_too_busy_to_compact_is_left_for_the_next_gc(tmp_path):
    store = ObjectStore(tmp_path / "objects")
    with store.batch() as batch:
        digests = [batch.put_bytes(os.urandom(5000)) for _ in range(200)]
    store.remove(digests)
    store.db.execute("PRAGMA busy_timeout=100")  # (30 s in use)
    other = sqlite3.connect(tmp_path / "objects" / "objects.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process, writing
    try:
        store.compact()  # no exception: nothing given back this time
        assert store.db.execute("PRAGMA freelist_count").fetchone()[0] > 0
    finally:
        other.execute("ROLLBACK")
        other.close()
    store.compact()
    assert store.db.execute("PRAGMA freelist_count").fetchone()[0] == 0
    store.close()

"""Every file rw's CLI writes in the data directory is 0600 (directories 0700),
whatever the user's umask: the store, its -wal and -shm, the object store."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
from pathlib import Path

from .conftest import RW, make_site, write_config


def rw_with_umask(umask: int, *args: str) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [RW, *args], capture_output=True, text=True, timeout=60,
        preexec_fn=lambda: os.umask(umask),
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return proc


def modes(root: Path) -> dict[str, int]:
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in [*dirnames, *filenames]:
            path = Path(dirpath, name)
            found[str(path.relative_to(root))] = stat.S_IMODE(path.lstat().st_mode)
    return found


def test_files_the_cli_creates_are_private_under_umask_022(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    site = make_site(tmp_path)
    # Too large for objects.db once compressed: a file of its own in objects/.
    (site / "big.bin").write_bytes(os.urandom(400 * 1024))
    history = tmp_path / "history"
    history.write_text("#1700000000\necho one\n")
    rw_with_umask(0o022, "checkpoint", "create", "--paths", str(site))
    rw_with_umask(0o022, "import", "bash", str(history))
    data = rw_home / "data"
    old = os.umask(0o022)
    try:
        # While a store is open its -wal and -shm exist; SQLite gives them the
        # database file's mode, whoever opens it.
        held = [sqlite3.connect(data / "rw.db"), sqlite3.connect(data / "objects" / "objects.db")]
        for db in held:
            db.execute("SELECT count(*) FROM sqlite_master").fetchall()
        rw_with_umask(0o022, "import", "bash", str(history), "--name", "again")
        found = modes(data)
    finally:
        os.umask(old)
        for db in held:
            db.close()
    for name in ("rw.db", "rw.db-wal", "rw.db-shm", "objects/objects.db", "objects/objects.db-wal",
                 "objects/objects.db-shm", "objects/lock"):  # fmt: skip
        assert name in found, sorted(found)
    loose = [n for n in found if n.startswith("objects/") and len(Path(n).name) > 40]
    assert loose, sorted(found)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700
    loose_modes = {n: oct(m) for n, m in found.items() if m & 0o077}
    assert loose_modes == {}


def test_a_store_left_world_readable_by_an_older_rw_is_made_private(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    history = tmp_path / "history"
    history.write_text("#1700000000\necho one\n")
    rw_with_umask(0o022, "import", "bash", str(history))
    db = rw_home / "data" / "rw.db"
    os.chmod(db, 0o644)
    os.chmod(db.parent, 0o755)
    rw_with_umask(0o022, "import", "bash", str(history), "--name", "again")
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(db.parent.stat().st_mode) == 0o700


def test_a_guard_report_and_the_store_of_a_guarded_run_are_private(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    site = make_site(tmp_path)
    report = tmp_path / "run.md"
    rw_with_umask(0o022, "guard", "--no-packages", "--no-services", "--paths", str(site),
                  "--report", str(report), "--", "echo", "deployed")  # fmt: skip
    assert "deployed" in report.read_text()
    assert stat.S_IMODE(report.stat().st_mode) == 0o600
    found = modes(rw_home / "data")
    assert "rw.db" in found and "objects/objects.db" in found
    assert {n: oct(m) for n, m in found.items() if m & 0o077} == {}

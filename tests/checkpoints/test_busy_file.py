"""A file written to all the time (a log appended to every 2 ms) does not
hold back a checkpoint of its tree: it is recorded as last read, said so,
with how to leave it out. Real rw, a real writer process."""

from __future__ import annotations

import subprocess
import sys

from ..conftest import rw, rw_json, write_config

WRITER = """
import os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
until = time.monotonic() + 60
while time.monotonic() < until:
    os.write(fd, b"x" * 200 + b"\\n")
    time.sleep(0.002)
"""


def test_a_busy_log_is_recorded_as_last_read_and_named(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    tree = tmp_path / "t"
    tree.mkdir()
    (tree / "app.conf").write_text("as checkpointed\n")
    (tree / "busy.log").write_bytes(b"y" * 3_000_000)  # long enough to be read in pieces
    writer = subprocess.Popen([sys.executable, "-c", WRITER, str(tree / "busy.log")])
    try:
        for _ in range(3):
            proc = rw("checkpoint", "create", "--paths", str(tree), check=False)
            assert proc.returncode == 0, proc.stderr
            assert "Traceback" not in proc.stderr
        assert f"{tree}/busy.log: kept changing while rw read it" in proc.stderr, proc.stderr
        assert "--exclude /busy.log" in proc.stderr
        cid = proc.stdout.split()[1].rstrip(":")
        (tree / "app.conf").write_text("changed\n")
        rw("checkpoint", "restore", cid, "--yes", check=False)
        assert (tree / "app.conf").read_text() == "as checkpointed\n"
    finally:
        writer.kill()
        writer.wait()
    cid = str(rw_json("checkpoint", "create", "--paths", str(tree))["id"])
    rw("checkpoint", "restore", cid, "--yes")

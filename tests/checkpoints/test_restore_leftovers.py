"""A user's files named like rw's temporaries (`.NAME.rw-PID`, PID not
running) are the user's: neither a restore nor rw doctor removes them. Real
rw, real files."""

from __future__ import annotations

import os

from ..conftest import rw, rw_json, write_config

DEAD_PIDS = (3999999, 3999998)  # above the default pid_max: never running


def test_files_named_like_rw_temporaries_are_left_alone(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n[checkpoint]\nmax_file_size = 1000\n")
    for pid in DEAD_PIDS:
        assert not os.path.exists(f"/proc/{pid}")
    t3 = tmp_path / "t3"
    t3.mkdir()
    big = t3 / f".bigdata.rw-{DEAD_PIDS[0]}"
    big.write_bytes(os.urandom(5000))  # over max_file_size: kept by metadata only
    content = big.read_bytes()
    (t3 / "app.conf").write_text("as checkpointed\n")
    cid = str(rw_json("checkpoint", "create", "--paths", str(t3))["id"])
    (t3 / "app.conf").write_text("changed\n")
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "interrupted restore" not in proc.stdout
    assert big.read_bytes() == content
    assert (t3 / "app.conf").read_text() == "as checkpointed\n"

    rw("watch", "add", str(t3))
    notes = t3 / f".notes.rw-{DEAD_PIDS[1]}"
    notes.write_text("the user's notes\n")
    rw("doctor", check=False)
    assert notes.read_text() == "the user's notes\n"
    assert big.read_bytes() == content

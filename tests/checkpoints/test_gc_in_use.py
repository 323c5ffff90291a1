"""rw gc keeps what is in use: the checkpoint of a guarded command still
running (its rollback needs it), and the newest checkpoint of each tree.
Real rw guard, real rw gc, real files."""

from __future__ import annotations

import os
import secrets
import subprocess

import pytest

from ..conftest import RW, rw, rw_json, wait_for, write_config


@pytest.mark.parametrize("daemon_up", [False, True], ids=["no daemon", "daemon up"])
def test_gc_keeps_the_checkpoint_of_a_guarded_run_still_going(rw_home, tmp_path, daemon_up):
    autostart = "true" if daemon_up else "false"
    write_config(
        rw_home, f"[daemon]\nautostart = {autostart}\n[checkpoint]\nmax_total_size = 1000\n"
    )
    tree = tmp_path / "gtree"
    tree.mkdir()
    original = secrets.token_hex(2500)  # 5000 bytes: over the limit on its own
    (tree / "data").write_text(original)
    ready, go = tmp_path / "ready", tmp_path / "go"
    command = (
        f"echo overwritten > {tree}/data; touch {ready}; "
        f"while [ ! -e {go} ]; do sleep 0.02; done; echo 'ERROR: it broke'"
    )
    guard = subprocess.Popen(
        [RW, "guard", "--paths", str(tree), "--", "sh", "-c", command],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        wait_for(ready.exists, timeout=30)
        [cp] = rw_json("checkpoint", "list")
        gc = rw("gc")
        assert f"kept checkpoint {cp['id']}: in use" in gc.stdout, gc.stdout
        assert [c["id"] for c in rw_json("checkpoint", "list")] == [cp["id"]]
        go.touch()
        _out, err = guard.communicate(timeout=60)
    finally:
        if guard.poll() is None:
            guard.kill()
            guard.wait()
    assert guard.returncode == 1, err
    assert "no checkpoint" not in err
    assert (tree / "data").read_text() == original
    # The run is over: its checkpoint is in use no more, but it is the newest of its tree.
    gc = rw("gc")
    assert f"kept checkpoint {cp['id']}: the newest checkpoint of {tree}" in gc.stdout, gc.stdout
    assert not any((rw_home / "data" / "pins").iterdir())


def test_gc_keeps_the_newest_checkpoint_of_each_tree(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n[checkpoint]\nmax_total_size = 1000\n")
    a, b = tmp_path / "a", tmp_path / "b"
    for t in (a, b):
        t.mkdir()
        (t / "f").write_text(secrets.token_hex(1000))
    ids = [rw_json("checkpoint", "create", "--paths", str(a))["id"]]
    (a / "f").write_text(secrets.token_hex(1000))
    ids.append(rw_json("checkpoint", "create", "--paths", str(a))["id"])
    ids.append(rw_json("checkpoint", "create", "--paths", str(b))["id"])
    gc = rw("gc")
    assert gc.stdout.startswith("removed 1 checkpoint(s)"), gc.stdout
    assert [c["id"] for c in rw_json("checkpoint", "list")] == ids[1:]
    assert f"kept checkpoint {ids[1]}: the newest checkpoint of {a}" in gc.stdout
    assert f"kept checkpoint {ids[2]}: the newest checkpoint of {b}" in gc.stdout
    rw("checkpoint", "restore", str(ids[1]), "--yes")


def test_a_pin_left_by_a_process_that_ended_is_swept(rw_home, tmp_path):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    pins = rw_home / "data" / "pins"
    pins.mkdir(parents=True, mode=0o700)
    (pins / f"7.{os.getpid()}.dead").write_text("")
    rw("gc")
    assert list(pins.iterdir()) == []

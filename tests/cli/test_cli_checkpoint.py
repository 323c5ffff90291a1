"""rw watch, rw checkpoint and rw gc through the real CLI, on real files, dpkg and services."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess

import pytest

from rewind_daemon.checkpoints.checkpoint import snapshot
from rewind_daemon.checkpoints.objects import ObjectStore
from rewind_daemon.store import Store

from ..checkpoints.test_probes import (
    INIT_SCRIPT,
    build_deb,
    needs_root_dpkg,
    needs_root_sysv,
    pid_alive,
    rwtest_packages,  # noqa: F401 - a fixture
)
from ..checkpoints.test_snapshot import tree_state
from ..conftest import make_site, rw, rw_json, write_config


@pytest.fixture
def site(rw_home, tmp_path):
    return make_site(tmp_path)


def test_watch_add_list_rm(site, rw_home):
    out = rw("watch", "add", str(site), "--exclude", "*.log").stdout
    assert f"watching {site}" in out
    assert rw_json("watch", "list") == [
        {"path": str(site), "exclude": ["*.log"], "source": "rw watch"}
    ]
    write_config(rw_home, f"[watch]\npaths = ['{site / 'conf'}']\n")
    assert {w["source"] for w in rw_json("watch", "list")} == {"rw watch", "config"}
    assert rw("watch", "rm", str(site)).returncode == 0
    proc = rw("watch", "rm", str(site / "conf"), check=False)
    assert proc.returncode == 2 and "watched by the config" in proc.stderr
    proc = rw("watch", "add", str(site / "nope"), check=False)
    assert proc.returncode == 2 and "no such file" in proc.stderr


def test_checkpoint_create_diff_restore(site):
    original = tree_state(site)
    made = rw_json("checkpoint", "create", "--paths", str(site), "--label", "before")
    cid = str(made["id"])
    assert made["paths"] == [{"path": str(site), "entries": 5}]
    assert rw("checkpoint", "diff", cid).stdout.startswith("nothing changed")
    (site / "index.html").write_text("<h1>broken</h1>\n")
    (site / "new.txt").write_text("new\n")
    os.chmod(site / "conf" / "app.ini", 0o600)
    os.rmdir(site / "empty")
    proc = rw("checkpoint", "diff", cid, check=False)
    assert proc.returncode == 1
    lines = proc.stdout.splitlines()
    assert any(ln.split()[:2] == ["modified", f"{site}/index.html"] for ln in lines)
    assert any(ln.split()[:2] == ["created", f"{site}/new.txt"] for ln in lines)
    assert any(ln.split()[:2] == ["deleted", f"{site}/empty"] for ln in lines)
    assert any(ln.split()[:2] == ["mode", f"{site}/conf/app.ini"] for ln in lines)
    doc = json.loads(rw("checkpoint", "diff", cid, "--json", check=False).stdout)
    assert {c["change"] for c in doc["paths"][0]["changes"]} == {
        "modified",
        "created",
        "deleted",
        "mode",
    }
    dry = rw("checkpoint", "restore", cid, "--dry-run")
    assert "would restore" in dry.stdout and (site / "new.txt").exists()
    proc = rw("checkpoint", "restore", cid, check=False)  # no terminal to ask on
    assert proc.returncode == 2 and "--yes" in proc.stderr and (site / "new.txt").exists()
    out = rw("checkpoint", "restore", cid, "--yes").stdout
    assert "restored and verified" in out
    assert tree_state(site) == original
    assert "nothing to do" in rw("checkpoint", "restore", cid, "--yes").stdout
    listed = rw_json("checkpoint", "list")
    assert [(c["id"], c["label"], c["origin"]) for c in listed] == [(int(cid), "before", "manual")]
    shown = rw_json("checkpoint", "show", cid)
    assert shown["paths"][0]["files"] == 2


def test_corrupt_and_missing_objects(site, rw_home):
    cid = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    assert "every object intact" in rw("doctor", check=False).stdout
    store = Store(rw_home / "data" / "rw.db")
    objects = ObjectStore(rw_home / "data" / "objects")
    [tree] = store.checkpoint_trees(int(cid))
    snap = snapshot.load(objects, tree.manifest, tree.taken_ns)
    bad = snap.entries["index.html"].data
    con = sqlite3.connect(objects.root / "objects.db")
    con.execute("UPDATE objects SET data = ? WHERE digest = ?", (b"garbage", bytes.fromhex(bad)))
    con.commit()
    con.close()
    doctor = rw("doctor", check=False)
    assert "damaged or missing object" in doctor.stdout and "index.html" in doctor.stdout
    (site / "index.html").write_text("changed\n")
    (site / "conf" / "app.ini").write_text("changed\n")
    proc = rw("checkpoint", "restore", cid, "--yes", check=False)
    assert proc.returncode == 3
    assert "INCOMPLETE" in proc.stdout and "index.html" in proc.stdout
    assert (site / "conf" / "app.ini").read_text() == "mode=prod\n"  # the rest came back
    # the store itself is fine: the checkpoint is still listed
    assert [c["id"] for c in rw_json("checkpoint", "list")] == [int(cid)]


def test_gc_removes_what_no_checkpoint_needs(site, rw_home):
    first = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    (site / "big.bin").write_bytes(os.urandom(200_000))
    second = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    assert "would remove 0 checkpoint(s), 0 object(s)" in rw("gc", "--dry-run").stdout
    rw("checkpoint", "rm", second)
    out = rw("gc").stdout
    assert "removed 0 checkpoint(s), 2 object(s)" in out  # big.bin and the second manifest
    (site / "index.html").write_text("x")
    assert rw("checkpoint", "restore", first, "--yes").returncode == 0
    proc = rw("checkpoint", "show", second, check=False)
    assert proc.returncode == 2 and "no checkpoint" in proc.stderr
    write_config(rw_home, "[checkpoint]\nmax_total_size = 0\n")
    # to fit the size, the oldest go first, but the newest of a tree stays
    out = rw("gc").stdout
    assert "removed 0 checkpoint(s)" in out and f"kept checkpoint {first}: the newest" in out
    third = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    assert "removed 1 checkpoint(s)" in rw("gc").stdout
    assert [str(c["id"]) for c in rw_json("checkpoint", "list")] == [third]
    rw("checkpoint", "rm", third)  # what gc keeps, rm removes
    assert rw_json("checkpoint", "list") == []


def test_nothing_to_checkpoint(rw_home):
    proc = rw("checkpoint", "create", check=False)
    assert proc.returncode == 2 and "nothing to checkpoint" in proc.stderr


@needs_root_dpkg
@needs_root_sysv
def test_system_checkpoint_restores_packages_files_and_services(
    site,
    rw_home,
    tmp_path,
    rwtest_packages,  # noqa: F811
):
    name = f"{rwtest_packages}-svc"
    script = f"/etc/init.d/{name}"
    with open(script, "w") as f:
        f.write(INIT_SCRIPT.format(name=name))
    os.chmod(script, 0o755)
    write_config(rw_home, f"[checkpoint]\nservices_list = ['{name}']\n")
    try:
        deb = build_deb(tmp_path, f"{rwtest_packages}-a", "1.0", rwtest_packages)
        made = rw_json("checkpoint", "create", "--paths", str(site), "--packages", "--services")
        assert {"dpkg", "services"} <= set(made["probes"])
        cid = str(made["id"])
        subprocess.run(["dpkg", "-i", str(deb)], check=True, capture_output=True)
        subprocess.run(["service", name, "start"], check=True, capture_output=True)
        pid = int(open(f"/run/{name}.pid").read())
        (site / "index.html").write_text("after install\n")
        diff = rw("checkpoint", "diff", cid, check=False).stdout
        assert f"{rwtest_packages}-a:all 1.0 -> absent (remove)" in diff
        assert f"{name}: running -> stopped (stop)" in diff
        out = rw("checkpoint", "restore", cid, "--yes", timeout=300).stdout
        assert "restored and verified" in out
        # packages first, then files, then services
        order = [ln for ln in out.splitlines() if ln.strip().startswith("restored")]
        kinds = [
            "dpkg" if "dpkg:" in ln else "svc" if "services:" in ln else "file" for ln in order
        ]
        assert kinds == sorted(kinds, key=["dpkg", "file", "svc"].index)
        listed = subprocess.run(
            ["dpkg-query", "-W", f"{rwtest_packages}-*"], capture_output=True, text=True
        )
        assert listed.stdout.strip() == ""
        assert not pid_alive(pid)
        assert (site / "index.html").read_text() == "<h1>hi</h1>\n"
    finally:
        subprocess.run(["service", name, "stop"], capture_output=True, timeout=30)
        os.unlink(script)


def test_hard_links_are_restored_as_links(site):
    (site / "conf" / "shared.ini").write_text("x=1\n")
    os.link(site / "conf" / "shared.ini", site / "shared.ini")
    cid = str(rw_json("checkpoint", "create", "--paths", str(site))["id"])
    os.unlink(site / "shared.ini")
    (site / "shared.ini").write_text("x=1\n")  # same content, another file
    diff = rw("checkpoint", "diff", cid, check=False).stdout
    assert f"unlinked  {site}/shared.ini\n" in diff
    dry = rw("checkpoint", "restore", cid, "--dry-run").stdout
    assert f"linked    {site}/shared.ini  with conf/shared.ini" in dry
    assert "restored and verified" in rw("checkpoint", "restore", cid, "--yes").stdout
    a, b = os.lstat(site / "conf" / "shared.ini"), os.lstat(site / "shared.ini")
    assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)

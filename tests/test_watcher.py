"""Step checkpoints of watched paths in real hooked shells, and going back with files."""

from __future__ import annotations

import os
import signal
import time

import pytest

from .conftest import daemon_pid, rw, rw_json, write_config
from .shell import PROMPT
from .test_snapshot import tree_state


@pytest.fixture(params=["bash", "zsh"])
def kind(request):
    return request.param


@pytest.fixture
def watched(rw_home, tmp_path):
    # A generous wait: a loaded test machine must not turn into missing checkpoints.
    write_config(rw_home, "[watch]\ntimeout = 5\n")
    rw("daemon", "start")
    site = tmp_path / "site"
    site.mkdir()
    (site / "keep.txt").write_text("keep\n")
    (site / "log.txt").write_text("line 1\n")
    (site / "old.txt").write_text("old\n")
    (site / "conf").mkdir()
    (site / "conf" / "app.ini").write_text("[app]\nmode=prod\n")
    rw("watch", "add", str(site))
    return site


def step_checkpoints(session: str) -> dict[int, int]:
    return {c["step"]: c["id"] for c in rw_json("checkpoint", "list", "--session", session)}


def test_back_restores_the_watched_directory(watched, shells, kind):
    original = tree_state(watched)
    sh = shells(kind)
    sh.run(f"cd {watched}")
    sh.run("touch new.txt")
    sh.run("echo 'line 2' >> log.txt")
    sh.run("rm old.txt")
    assert sorted(os.listdir(watched)) == ["conf", "keep.txt", "log.txt", "new.txt"]
    sid = sh.session_id()
    out = sh.run("rw back 3 --yes")
    assert "restored and verified" in out, out
    assert tree_state(watched) == original
    # every command got a checkpoint of the state before it began
    cps = step_checkpoints(sid)
    assert {2, 3, 4, 5} <= set(cps)  # (step 1 may race the FIFO: see below)
    assert rw("checkpoint", "diff", str(cps[2]), check=False).returncode == 0  # = now


def test_back_shows_first_and_asks(watched, shells, kind):
    sh = shells(kind)
    # (A shell's very first command, typed the instant its first prompt shows,
    # can beat the daemon to the session's FIFO and then has no checkpoint.)
    sh.run("true")
    sh.run(f"echo changed > {watched}/keep.txt")
    out = sh.run("rw back 1 --dry-run")
    assert "would restore watched files" in out and "modified" in out and "keep.txt" in out
    assert (watched / "keep.txt").read_text() == "changed\n"
    sh.p.sendline("rw back 2")  # before the echo (step 2)
    sh.p.expect_exact("restore these files? [y/N] ")
    sh.p.sendline("n")
    sh.p.expect_exact(PROMPT)
    assert (watched / "keep.txt").read_text() == "changed\n"
    sh.p.sendline("rw back 3")  # the declined `rw back 2` was a step too
    sh.p.expect_exact("restore these files? [y/N] ")
    sh.p.sendline("y")
    sh.p.expect_exact(PROMPT)
    assert (watched / "keep.txt").read_text() == "keep\n"


def test_a_stopped_daemon_means_no_checkpoint_and_a_bounded_wait(watched, shells, rw_home):
    write_config(rw_home, "[watch]\ntimeout = 0.3\n")
    sh = shells("bash")
    sh.run("true")
    sid = sh.session_id()
    pid = daemon_pid(rw_home)
    os.kill(pid, signal.SIGSTOP)
    try:
        t = time.monotonic()
        sh.run(f"echo x > {watched}/keep.txt")
        first = time.monotonic() - t
        t = time.monotonic()
        for _ in range(5):
            sh.run("true")
        rest = (time.monotonic() - t) / 5
    finally:
        os.kill(pid, signal.SIGCONT)
    assert 0.3 <= first < 3
    assert rest < 0.25  # after one timeout the shell stops waiting for a while
    sh.run("true")
    cps = step_checkpoints(sid)
    assert 1 in cps and 2 not in cps  # never a late (possibly wrong) checkpoint
    # steps: 1 true, 2 echo, 3-8 true; going back 7 finished steps targets step 2
    out = sh.run("rw back 7 --dry-run")
    assert "no checkpoint was taken before step 2" in out

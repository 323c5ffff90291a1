"""Step checkpoints of watched paths in real hooked shells, and going back with files."""

from __future__ import annotations

import os
import signal
import time

import pytest

from rewind_daemon import paths

from ..conftest import daemon_pid, kill_daemon, rw, rw_json, wait_for, write_config
from ..shell import PROMPT
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


def ready(sh) -> str:
    """The shell's session, once its FIFO is there (the shell makes it when paths
    are watched as it starts; the daemon, for a shell that was already running)."""
    sh.run("true")
    sid = sh.session_id()
    wait_for(lambda: (paths.resolve().scratch_dir / f"{sid}.ack").exists())
    return sid


def step_checkpoints(session: str) -> dict[int, int]:
    return {c["step"]: c["id"] for c in rw_json("checkpoint", "list", "--session", session)}


def test_back_restores_the_watched_directory(watched, shells, kind):
    original = tree_state(watched)
    sh = shells(kind)
    sid = ready(sh)
    sh.run(f"cd {watched}")
    sh.run("touch new.txt")
    sh.run("echo 'line 2' >> log.txt")
    sh.run("rm old.txt")
    assert sorted(os.listdir(watched)) == ["conf", "keep.txt", "log.txt", "new.txt"]
    out = sh.run("rw back 3 --yes")
    assert "restored and verified" in out, out
    assert tree_state(watched) == original
    # every command got a checkpoint of the state before it began
    cps = step_checkpoints(sid)
    assert {2, 3, 4, 5, 6} <= set(cps)
    assert rw("checkpoint", "diff", str(cps[3]), check=False).returncode == 0  # = now
    assert rw_json("show", sid, "4")["checkpoint"] == cps[4]


def test_branch_restores_the_files_from_before_the_failure(watched, shells, kind):
    sh = shells(kind)
    ready(sh)
    sh.run(f"cd {watched}")
    sh.run("echo 'line 2' >> log.txt")
    before = tree_state(watched)  # what the failing command will find
    sh.run("echo 'mode=broken' >> conf/app.ini; rm keep.txt; touch half-done; (exit 4)")
    sh.run("echo after > after.txt")
    assert not (watched / "keep.txt").exists()
    out = sh.run("rw branch --yes")
    assert "restored and verified" in out, out
    assert tree_state(watched) == before
    assert (watched / "log.txt").read_text() == "line 1\nline 2\n"  # the step before stays


def test_back_shows_first_and_asks(watched, shells, kind):
    sh = shells(kind)
    ready(sh)
    sh.run(f"echo changed > {watched}/keep.txt")
    out = sh.run("rw back 1 --dry-run")
    assert "would restore watched files" in out and "modified" in out and "keep.txt" in out
    assert (watched / "keep.txt").read_text() == "changed\n"
    sh.p.sendline("rw back 1")  # before the echo (step 2): rw's own steps are not counted
    sh.p.expect_exact("restore these files? [y/N] ")
    sh.p.sendline("n")
    sh.p.expect_exact(PROMPT)
    assert (watched / "keep.txt").read_text() == "changed\n"
    sh.p.sendline("rw back 1")  # nor is the declined `rw back 1`
    sh.p.expect_exact("restore these files? [y/N] ")
    sh.p.sendline("y")
    sh.p.expect_exact(PROMPT)
    assert (watched / "keep.txt").read_text() == "keep\n"


def test_a_stopped_daemon_means_no_checkpoint_and_a_bounded_wait(watched, shells, rw_home):
    write_config(rw_home, "[watch]\ntimeout = 0.3\n")
    sh = shells("bash")
    sid = ready(sh)
    sh.run("true")  # step 2: waits, gets its checkpoint
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
    assert 2 in cps and 3 not in cps  # never a late (possibly wrong) checkpoint
    assert rw_json("show", sid, "3")["checkpoint"] is None
    # steps: 1-2 true, 3 echo, 4-9 true; going back 7 finished steps targets step 3
    out = sh.run("rw back 7 --dry-run")
    assert "no checkpoint was taken before step 3" in out


def test_gc_keeps_what_the_daemon_still_lends(watched, shells):
    """With the daemon up, rw gc runs in it: objects of its current snapshots stay,
    even when no checkpoint names them any more."""
    sh = shells("bash")
    sid = ready(sh)
    sh.run(f"echo new > {watched}/keep.txt")
    sh.run("true")
    cps = step_checkpoints(sid)
    rw("checkpoint", "rm", *map(str, cps.values()))
    out = rw("gc").stdout
    assert "removed 0 checkpoint(s)" in out
    sh.run("true")  # a checkpoint from the daemon's current snapshot, objects kept
    last = max(step_checkpoints(sid).items())[1]
    assert "every object intact" in rw("doctor", check=False).stdout
    (watched / "keep.txt").write_text("changed again\n")
    assert rw("checkpoint", "restore", str(last), "--yes").returncode == 0
    assert (watched / "keep.txt").read_text() == "new\n"


def test_a_line_that_ran_before_the_hook_saw_it_gets_no_checkpoint(watched, shells):
    """A bare ( ... ) subshell runs no simple command in the shell itself, so
    bash's DEBUG trap does not fire before it: the line is recorded when the
    prompt comes back, with the time it started, and without a checkpoint
    (one taken then would hold what the line did)."""
    sh = shells("bash")
    sid = ready(sh)
    sh.run(f"cd {watched}")
    sh.run("(sleep 0.3; echo more >> log.txt)")
    sh.run("echo done")
    steps = {s["step"]: s for s in rw_json("log", sid, "--json")}
    subshell = [n for n, s in steps.items() if s["command"].startswith("(sleep")]
    assert len(subshell) == 1  # recorded once
    n = subshell[0]
    assert steps[n]["duration_ms"] >= 250  # from when the line began
    assert rw_json("show", sid, str(n))["checkpoint"] is None
    assert rw_json("show", sid, str(n + 1))["checkpoint"] is not None  # the next one has one


def test_a_new_shell_with_a_cold_daemon_checkpoints_its_first_commands(
    watched, shells, kind, rw_home
):
    """The daemon is not running (it died: `rw daemon stop` would keep it
    stopped); the hooks start it, and the first commands, sent at once (a
    paste into a new terminal), each wait for their checkpoint."""
    original = tree_state(watched)
    kill_daemon(rw_home)
    sh = shells(kind)
    lines = [f"cd {watched}", "touch new.txt", "echo 'line 2' >> log.txt", "rm old.txt"]
    sh.p.send("".join(line + "\n" for line in lines))
    for _ in lines:
        sh.p.expect_exact(PROMPT)
    sid = sh.session_id()
    assert set(step_checkpoints(sid)) >= {1, 2, 3, 4}
    out = sh.run("rw back 3 --yes")
    assert "restored and verified" in out, out
    assert tree_state(watched) == original


def test_a_daemon_that_does_not_answer_is_told_once(watched, shells, rw_home, kind):
    write_config(rw_home, "[watch]\ntimeout = 0.3\n")
    sh = shells(kind)
    ready(sh)
    pid = daemon_pid(rw_home)
    os.kill(pid, signal.SIGSTOP)
    try:
        first = sh.run("true")
        later = [sh.run("true") for _ in range(3)]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert first.count("rw: the daemon did not answer within 0.3s") == 1, first
    assert "rw doctor" in first
    assert later == ["", "", ""]


def test_checkpoints_go_on_after_the_daemon_restarts(watched, shells, kind):
    """The shell keeps its FIFO open: a restarted daemon must answer on that one."""
    original = tree_state(watched)
    sh = shells(kind)
    sid = ready(sh)
    rw("daemon", "stop")
    rw("daemon", "start")
    sh.run(f"cd {watched}")
    sh.run("touch new.txt")
    sh.run("rm old.txt")
    assert {3, 4} <= set(step_checkpoints(sid))
    out = sh.run("rw back 2 --yes")
    assert "restored and verified" in out, out
    assert tree_state(watched) == original


def test_a_daemon_that_never_comes_up_costs_one_bounded_wait(watched, shells, rw_home):
    """The hooks start the daemon, which cannot run (another process holds its
    lock): the first command waits a bounded time, the user is told once, and
    the next commands do not wait."""
    import fcntl

    kill_daemon(rw_home)  # (not rw daemon stop, after which the hooks leave it stopped)
    with open(rw_home / "run" / "daemon.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        sh = shells("bash")
        t = time.monotonic()
        first = sh.run("true", timeout=30)
        waited = time.monotonic() - t
        t = time.monotonic()
        later = [sh.run("true") for _ in range(3)]
        rest = (time.monotonic() - t) / 3
    assert 5 <= waited < 12, waited
    assert first.count("rw: the daemon did not answer within 10s") == 1, first
    assert later == ["", "", ""] and rest < 1


def test_a_shell_under_set_e_survives_when_it_cannot_make_its_fifo(watched, shells, kind):
    """The FIFO is made by an external command at a session's start; when that
    fails (here: no mkfifo on PATH), the rc file under `set -e` goes on."""
    from ..conftest import BIN

    sh = shells(kind, init=False, before_init=[f"PATH={BIN}", "set -eu -o pipefail"])
    assert sh.run(f'eval "$(rw init {kind})"') == ""
    assert sh.run("echo still here") == "still here"

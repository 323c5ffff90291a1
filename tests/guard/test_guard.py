"""rw guard: real commands, real files, real dpkg and pip, real process trees.

Runs go through the real rw program: on pipes where only the output matters,
under a PTY (pexpect) where the terminal does.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pexpect
import pytest

from rewind_daemon.config import GuardConfig
from rewind_daemon.guard.process import cgroup2_root
from rewind_daemon.guard.rules import Classifier, RuleSet, required_literals
from rewind_daemon.guard.runner import stored_report
from rewind_daemon.store import Store

from ..checkpoints.test_probes import (
    build_deb,
    init_script,  # noqa: F401 - a fixture
    needs_root_dpkg,
    needs_root_sysv,
    pid_alive,
    rwtest_packages,  # noqa: F401 - a fixture
    venv,  # noqa: F401 - a fixture
    write_wheel,
)
from ..checkpoints.test_snapshot import tree_state
from ..conftest import RW, make_site, rw, rw_json, wait_for, write_config

CONFIG = "[daemon]\nautostart = false\n"


def guard(*args: str, timeout: float = 60, cwd=None, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [RW, "guard", *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=cwd,
        env=env,
    )


def spawn(*args: str, **kw) -> pexpect.spawn:
    child = pexpect.spawn(
        RW, ["guard", *args], encoding="utf-8", timeout=20, dimensions=(33, 111), **kw
    )
    child.delaybeforesend = None
    return child


@pytest.fixture
def home(rw_home):
    write_config(rw_home, CONFIG)
    return rw_home


@pytest.fixture
def site(home, tmp_path):
    return make_site(tmp_path)


def guard_sessions(home: Path) -> list[str]:
    store = Store(home / "data" / "rw.db")
    try:
        return [s.id for s in store.sessions() if s.origin == "guard"]
    finally:
        store.close()


# -- the rules, in-process ---------------------------------------------------------------


def default_rules(**kw) -> RuleSet:
    g = GuardConfig()
    return RuleSet(error=g.error, warning=g.warning, skip=g.skip, prompt=g.prompt, **kw)


def feed_all(c: Classifier, chunks) -> object:
    for chunk in chunks:
        trip = c.feed(chunk)
        if trip:
            return trip
    return c.finish()


@pytest.mark.parametrize(
    "line, kind",
    [
        ("ERROR: something broke", "ERROR"),
        ("an error occurred", "ERROR"),
        ("CRITICAL disk full", "ERROR"),
        ("Fatal: not a git repository", "ERROR"),
        ("java.lang.NullPointerException", "ERROR"),
        ("Traceback (most recent call last):", "ERROR"),
        ("E: Unable to locate package foo", "ERROR"),
        ("WARNING: unsafe", "WARNING"),
        ("warn: cache cold", "WARNING"),
        ("this option is Deprecated", "WARNING"),
        ("SKIPPED: test_x", "SKIP"),
        ("skipping optional step", "SKIP"),
        ("libfoo: not found", "SKIP"),
        ("Do you want to continue? [Y/n] n", "PROMPT"),
        ("\x1b[31mERROR\x1b[0m in red", "ERROR"),
        ("no errors, 0 warnings", None),
        ("terror is not error-free", "ERROR"),
        ("Setting up libc6 (2.36-9)", None),
    ],
)
def test_each_kind_of_line(line, kind):
    trip = feed_all(Classifier(default_rules()), [f"ok\n{line}\nafter\n".encode()])
    if kind is None:
        assert trip is None
    else:
        assert (trip.kind, trip.line_no) == (kind, 2)
        assert trip.line == line.replace("\x1b[31m", "").replace("\x1b[0m", "")


def test_lines_split_across_chunks_carriage_returns_and_allow():
    c = Classifier(default_rules(allow=[r"WARNING: cache is cold"]))
    chunks = [
        b"one\ntw",
        b"o\n10%\r50%\r100%\n",
        b"WARNING: cache is cold\nfo",
        b"ur\nWAR",
        b"N x\n",
    ]
    trip = feed_all(c, chunks)
    assert (trip.kind, trip.line_no, trip.line) == ("WARNING", 6, "WARN x")
    # A last line without a newline still counts.
    assert feed_all(Classifier(default_rules()), [b"a\nb\nFATAL"]).line_no == 3
    # Case-sensitive when configured so.
    strict_case = Classifier(default_rules(ignore_case=False))
    assert feed_all(strict_case, [b"an error occurred\n"]) is None


def test_prompts_waiting_on_a_partial_line():
    for prompt in (b"Continue? [Y/n] ", b"[sudo] password for alice: ", b"Enter passphrase: "):
        trip = Classifier(default_rules()).feed(b"starting\n" + prompt)
        assert (trip.kind, trip.line_no) == ("PROMPT", 2), prompt
    assert Classifier(default_rules()).feed(b"Password: updated\n") is None


def test_strict_expect_and_bad_regexes():
    c = Classifier(default_rules(expect=[r"^ok \d+$"], strict=True))
    trip = feed_all(c, [b"ok 1\n\nok 2\nsurprise\nok 3\n"])
    assert (trip.kind, trip.line_no, trip.line) == ("UNEXPECTED", 4, "surprise")
    with pytest.raises(Exception, match="needs the expected lines"):
        Classifier(default_rules(strict=True))
    with pytest.raises(Exception, match="invalid regex in allow"):
        Classifier(default_rules(allow=["("]))
    # Leading global flags are a rule's own, not every rule's.
    c = Classifier(RuleSet(error=["(?i)BOOM"], warning=["(?x) w a r n"], ignore_case=False))
    assert (c.feed(b"ok\nBoom\n").line_no, c.feed(b"WARN\nwarn\n").line_no) == (2, 4)


def test_the_literal_shortcut_finds_what_the_regexes_find():
    assert required_literals(r"\bWARN(ING)?\b") == ["warn"]
    assert required_literals(r"foo|Bar") == ["foo", "bar"]
    assert required_literals(r".*x?") is None
    lines = [b"ok", b"x" * 50, b"no Error here", b"\tWARNING\t", b"E: gone", b"line: e:x"]
    text = b"\n".join(lines) + b"\n"
    fast = Classifier(default_rules())
    slow = Classifier(default_rules())
    slow.literals = None
    assert fast.literals is not None
    for size in (1, 7, 4096):
        chunks = [text[i : i + size] for i in range(0, len(text), size)]
        a = Classifier(default_rules())
        b = Classifier(default_rules())
        b.literals = None
        assert feed_all(a, chunks) == feed_all(b, chunks)


# -- halting and rolling back --------------------------------------------------------------


def test_warning_halts_and_puts_the_tree_back_byte_for_byte(site, tmp_path, home):
    before = tree_state(site)
    after_marker = tmp_path / "after-warning"
    script = tmp_path / "install.sh"
    script.write_text(
        f"set -e\n"
        f"echo 'installing into the site'\n"
        f"mkdir -p {site}/lib && echo payload > {site}/lib/new.so\n"
        f"printf 'mode=dev\\n' > {site}/conf/app.ini\n"
        f"chmod 600 {site}/index.html\n"
        f"rm -r {site}/empty\n"
        f"echo 'WARNING: mode changed to dev'\n"
        f"sleep 2\n"
        f"touch {after_marker}\n"
    )
    report_file = tmp_path / "report.json"
    proc = guard("--paths", str(site), "--report", str(report_file), "--", "sh", str(script))
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "installing into the site\nWARNING: mode changed to dev\n"
    assert "Trigger: line 2: WARNING: mode changed to dev" in proc.stderr
    assert "Type: WARNING" in proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr
    assert f"modified  {site}/conf/app.ini" in proc.stderr
    assert tree_state(site) == before
    assert not after_marker.exists()

    doc = json.loads(report_file.read_text())
    assert doc["trigger"] == {
        "type": "WARNING",
        "line_no": 2,
        "line": "WARNING: mode changed to dev",
        "detail": "matched 'WARNING'",
    }
    assert doc["checkpoint_status"] == "Rollback completed successfully"
    assert doc["exit_code"] == 1 and doc["remaining"] == []
    assert f"deleted   {site}/lib/new.so" in doc["reverted"]
    assert doc["run_seconds"] < 1.5  # halted at the line, not after the sleep

    # Recorded: a session of origin guard, the step, its output and the report.
    [sid] = guard_sessions(home)
    assert sid == doc["session"]
    [session] = [s for s in rw_json("sessions") if s["id"] == sid]
    assert session["origin"] == "guard"
    [step] = rw_json("log", sid)
    assert step["command"] == f"sh {script}" and step["exit_code"] == 137
    store = Store(home / "data" / "rw.db")
    try:
        assert store.output(sid, 1) == proc.stdout.encode()
        report = stored_report(store, sid)
        assert report is not None and report.trip.line_no == 2
        assert store.step_checkpoint(sid, 1) == doc["checkpoint"]
    finally:
        store.close()


@needs_root_dpkg
def test_a_deb_installed_before_a_traceback_is_purged(
    home,
    tmp_path,
    rwtest_packages,  # noqa: F811
    venv,  # noqa: F811
):
    prefix = rwtest_packages
    name = f"{prefix}-tool"
    deb = build_deb(tmp_path, name, "1.0", prefix.split("-", 1)[1])
    write_config(home, CONFIG + f"[checkpoint]\npip = ['{venv}/bin/python']\n")
    # dpkg waits for its lock, which another run of these tests may hold.
    install = f"for i in $(seq 300); do dpkg -i {deb} >/dev/null 2>&1 && break; sleep 0.1; done"
    for _ in range(3):
        proc = guard(
            "--packages", "--no-services", "--", "sh", "-c",
            f"{install}; echo 'Traceback (most recent call last):'; sleep 5",
        )  # fmt: skip
        # The checkpoint holds every package of the machine: when another run of
        # these tests changed its own meanwhile, this run says so; try again.
        if not re.search(rf"rwtest-(?!{re.escape(prefix[7:])})", proc.stderr):
            break
    assert proc.returncode == 1, proc.stderr
    assert "Type: ERROR" in proc.stderr
    assert "Trigger: line 1: Traceback (most recent call last):" in proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr
    assert f"dpkg: {name}:all 1.0 -> absent (remove)" in proc.stderr
    gone = subprocess.run(["dpkg-query", "-W", name], capture_output=True, text=True)
    assert gone.returncode != 0


def test_a_wheel_installed_before_a_failure_is_uninstalled(
    home,
    tmp_path,
    venv,  # noqa: F811
):
    dist = f"rwtest-{uuid.uuid4().hex[:8]}-g"
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    write_wheel(wheels, dist, "1.0")
    python = f"{venv}/bin/python"
    write_config(
        home,
        CONFIG + f"[checkpoint]\npip = ['{python}']\npip_find_links = ['{wheels}']\n",
    )
    install = (
        f"PIP_ROOT_USER_ACTION=ignore {python} -m pip --disable-pip-version-check -q "
        f"install --no-index --find-links {wheels} {dist}"
    )
    # Only sh on PATH: dpkg cannot be checkpointed (so other runs on this machine
    # changing packages meanwhile cannot disturb this one), and says so.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sh").symlink_to(shutil.which("sh"))
    env = {**os.environ, "PATH": str(bin_dir)}
    proc = guard("--packages", "--no-services", "--", "sh", "-c", f"{install} && exit 4", env=env)
    assert proc.returncode == 1, proc.stderr
    assert "rw: checkpoint: dpkg: dpkg-query not found" in proc.stderr
    assert "Trigger: exit status 4" in proc.stderr and "Type: ERROR" in proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr
    assert f"pip: {dist} ({python}) 1.0 -> absent (remove)" in proc.stderr
    listed = subprocess.run(
        [python, "-m", "pip", "list", "--format=json"], capture_output=True, text=True
    )
    assert dist not in {p["name"] for p in json.loads(listed.stdout)}


@needs_root_sysv
def test_a_service_the_command_stopped_is_started_again(
    home,
    init_script,  # noqa: F811
):
    name, pidfile = init_script
    write_config(home, CONFIG + f"[checkpoint]\nservices_list = ['{name}']\n")
    subprocess.run(["service", name, "start"], check=True, capture_output=True)
    stop = f"service {name} stop >/dev/null; echo 'ERROR: stopped it'"
    proc = guard("--services", "--no-packages", "--", "sh", "-c", stop)
    assert proc.returncode == 1, proc.stderr
    assert f"services: {name}: stopped -> running (start)" in proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr
    pid = int(pidfile.read_text())
    assert pid_alive(pid)
    # Started during the rollback, it still stops: no signal was left ignored.
    subprocess.run(["service", name, "stop"], check=True, capture_output=True)
    wait_for(lambda: not pid_alive(pid), timeout=5)


def test_a_silent_command_times_out_within_about_a_second(site, tmp_path):
    report_file = tmp_path / "r.json"
    t0 = time.monotonic()
    proc = guard(
        "--paths", str(site), "--timeout", "1", "--report", str(report_file), "--", "sleep", "30"
    )  # fmt: skip
    elapsed = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr
    assert "Type: TIMEOUT" in proc.stderr and "Trigger: no output for 1 s" in proc.stderr
    doc = json.loads(report_file.read_text())
    assert 1.0 <= doc["run_seconds"] < 1.6
    assert elapsed < 10


def test_carriage_return_progress_counts_as_output(site):
    progress = "for i in 1 2 3 4 5 6 7 8; do printf '\\r%d0%%' $i; sleep 0.25; done; echo"
    argv = [RW, "guard", "--paths", str(site), "--timeout", "1.5", "--", "sh", "-c", progress]
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"\r10%\r20%\r30%\r40%\r50%\r60%\r70%\r80%\n"  # as written


def test_unflushed_python_output_streams_line_by_line(site, tmp_path):
    go = tmp_path / "go"
    code = (
        "import os, time\n"
        "print('first line')\n"
        f"while not os.path.exists({str(go)!r}): time.sleep(0.01)\n"
        "print('second line')\n"
    )
    child = spawn("--paths", str(site), "--", sys.executable, "-c", code)
    child.expect_exact("first line")  # before the second is even written
    go.touch()
    child.expect_exact("second line")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_terminal_size_and_input_reach_the_command(site):
    child = spawn(
        "--paths", str(site), "--", "sh", "-c",
        "stty size; read answer; echo \"got $answer\"; read more; stty size",
    )  # fmt: skip
    child.expect_exact("33 111")
    child.sendline("hello")
    child.expect_exact("got hello")
    child.setwinsize(40, 120)
    time.sleep(0.2)
    child.sendline("")
    child.expect_exact("40 120")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0


def test_in_the_background_the_terminal_is_left_alone(site):
    shell = pexpect.spawn(
        "bash", ["--norc", "--noprofile", "-i"], encoding="utf-8", timeout=20,
        env={**os.environ, "PS1": "$ "},
    )  # fmt: skip
    shell.sendline(
        f"{RW} guard --paths {site} -- sh -c 'sleep 1; echo bg-''done' & wait $!; echo rc=$?"
    )
    time.sleep(0.5)
    shell.sendline("true")  # typed meanwhile: for the shell, not for rw in the background
    shell.expect_exact("bg-done")  # rw was not stopped for reading the terminal (SIGTTIN)
    shell.expect_exact("rc=0")
    shell.sendline("exit")
    shell.expect(pexpect.EOF)


def test_ctrl_c_halts_and_rolls_back(site):
    before = tree_state(site)
    child = spawn(
        "--paths", str(site), "--", "sh", "-c",
        f"echo broken > {site}/index.html; echo ready; sleep 30",
    )  # fmt: skip
    child.expect_exact("ready")
    child.sendcontrol("c")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    assert "Type: INTERRUPTED" in child.before
    assert "Rollback completed successfully" in child.before
    assert tree_state(site) == before


def test_sigterm_halts_and_rolls_back(site):
    before = tree_state(site)
    proc = subprocess.Popen(
        [RW, "guard", "--paths", str(site), "--", "sh", "-c",
         f"echo broken > {site}/index.html; echo ready; sleep 30"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert proc.stdout.readline() == "ready\n"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert "Trigger: SIGTERM" in err and "Type: INTERRUPTED" in err
    assert tree_state(site) == before


def _cgroups_usable() -> bool:
    root = cgroup2_root()
    if root is None:
        return False
    probe = root / f"rw-guard-test-{uuid.uuid4().hex[:8]}"
    try:
        probe.mkdir()
    except OSError:
        return False
    ok = os.access(probe / "cgroup.procs", os.W_OK)
    probe.rmdir()
    return ok


@pytest.mark.parametrize("cgroup", [True, False], ids=["cgroup", "scan"])
def test_nothing_of_the_process_tree_survives(home, site, tmp_path, cgroup):
    write_config(home, CONFIG + f"[guard]\ncgroup = {str(cgroup).lower()}\n")
    pids = tmp_path / "pids"
    script = tmp_path / "tree.sh"
    script.write_text(
        f"P={pids}\n"
        "sleep 300 & echo $! >> $P\n"
        # a grandchild in a session of its own, with a child of its own
        "setsid sh -c 'sleep 301 & echo $! >> $0; echo $$ >> $0; wait' $P &\n"
        # a double fork: the middle process exits, the last one is orphaned
        "( setsid sh -c 'echo $$ >> $0; exec sleep 302' $P & )\n"
        # ... and one that also drops its environment
        "( env -i setsid sh -c 'echo $$ >> $0; exec sleep 303' $P & )\n"
        'while [ "$(wc -l < $P)" -lt 5 ]; do sleep 0.01; done\n'
        "echo 'FATAL: stop'\n"
        "sleep 300\n"
    )
    report_file = tmp_path / "r.json"
    proc = guard("--paths", str(site), "--report", str(report_file), "--", "sh", str(script))
    assert proc.returncode == 1, proc.stderr
    assert "Trigger: line 1: FATAL: stop" in proc.stderr
    doc = json.loads(report_file.read_text())
    assert doc["survivors"] == [] and doc["kill_seconds"] < 1.0
    if cgroup and _cgroups_usable():
        assert doc["containment"] == "cgroup"
    elif not cgroup:
        assert doc["containment"] == "process scan"
    listed = [int(x) for x in pids.read_text().split()]
    assert len(listed) == 5
    assert [p for p in listed if pid_alive(p)] == []


def test_an_allowed_warning_passes_and_the_checkpoint_is_kept(home, site):
    before = tree_state(site)
    change = f"echo 'WARNING: cache is cold'; echo new > {site}/index.html; echo done"
    proc = guard("--paths", str(site), "--allow", "cache is cold", "--", "sh", "-c", change)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "WARNING: cache is cold\ndone\n"
    assert "rw guard: passed" in proc.stderr
    assert (site / "index.html").read_text() == "new\n"  # nothing rolled back
    [cp] = rw_json("checkpoint", "list")
    assert cp["origin"] == "guard"
    assert f"rw checkpoint restore {cp['id']} undoes the run" in proc.stderr
    rw("checkpoint", "restore", str(cp["id"]), "--yes")
    assert tree_state(site) == before
    # The config's allow list works the same way.
    write_config(home, CONFIG + "[guard]\nallow = ['cache is cold']\n")
    assert guard("--paths", str(site), "--", "sh", "-c", change).returncode == 0


def test_strict_expect_trips_on_an_unexpected_line(site):
    lines = "echo 'step 1 ok'; echo 'step 2 ok'; echo 'surprise'; echo 'step 3 ok'"
    proc = guard(
        "--paths", str(site), "--strict", "--expect", r"^step \d+ ok$", "--", "sh", "-c", lines
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Trigger: line 3: surprise" in proc.stderr and "Type: UNEXPECTED" in proc.stderr
    ok = guard("--paths", str(site), "--expect", r"^step \d+ ok$", "--", "echo", "step 9 ok")
    assert ok.returncode == 0, ok.stderr


def test_a_prompt_is_detected(site):
    t0 = time.monotonic()
    proc = guard(
        "--paths", str(site), "--", "sh", "-c",
        "echo preparing; printf 'Do you want to continue? [Y/n] '; read answer; echo went on",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Trigger: line 2: Do you want to continue? [Y/n]" in proc.stderr
    assert "Type: PROMPT" in proc.stderr and "went on" not in proc.stdout
    assert time.monotonic() - t0 < 10  # at once, not at the timeout


def test_no_rollback_and_a_failing_exit_status(site, tmp_path):
    report_file = tmp_path / "report.md"
    proc = guard(
        "--paths", str(site), "--no-rollback", "--report", str(report_file), "--",
        "sh", "-c", f"echo broken > {site}/index.html; exit 3",
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "Trigger: exit status 3" in proc.stderr
    assert "Checkpoint Status: Rollback skipped (--no-rollback)" in proc.stderr
    assert (site / "index.html").read_text() == "broken\n"
    md = report_file.read_text()
    assert md.startswith("# rw guard: halted\n")
    assert "| Trigger | exit status 3 |" in md and "| Type | ERROR |" in md
    assert "| Checkpoint Status | Rollback skipped (--no-rollback) |" in md


def test_a_rollback_that_cannot_complete_exits_3(site):
    locked = site / "locked.txt"
    if shutil.which("chattr") is None or os.geteuid() != 0:
        pytest.skip("needs root and chattr")
    probe = site / "probe"
    probe.write_text("")
    if subprocess.run(["chattr", "+i", str(probe)], capture_output=True).returncode != 0:
        probe.unlink()
        pytest.skip("this filesystem has no immutable flag")
    subprocess.run(["chattr", "-i", str(probe)], check=True)
    probe.unlink()
    try:
        proc = guard(
            "--paths", str(site), "--", "sh", "-c",
            f"echo x > {locked} && chattr +i {locked} && echo 'ERROR: locked it'",
        )  # fmt: skip
    finally:
        subprocess.run(["chattr", "-i", str(locked)], capture_output=True)
    assert proc.returncode == 3, proc.stderr
    assert "Checkpoint Status: Rollback failed - manual intervention required" in proc.stderr
    assert f"{locked}" in proc.stderr.split("Remains", 1)[1]


def test_no_checkpoint_means_the_command_never_runs(home, site, tmp_path):
    marker = tmp_path / "ran"
    rw("watch", "list")  # the store exists
    data = home / "data"
    argv = [RW, "guard", "--paths", str(site), "--", "touch", str(marker)]
    if os.geteuid() == 0:
        mount_ro = 'd=$1; shift; mount --bind -o ro "$d" "$d" && exec "$@"'
        check = ["unshare", "--mount", "sh", "-c", mount_ro, "sh", str(data), "true"]
        if shutil.which("unshare") is None or subprocess.run(check).returncode != 0:
            pytest.skip("cannot make a read-only mount here")
        argv = ["unshare", "--mount", "sh", "-c", mount_ro, "sh", str(data), *argv]
    else:
        for p in [data, *data.iterdir()]:
            p.chmod(0o500 if p.is_dir() else 0o400)
    proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("rw: cannot take the checkpoint, so the command did not run")
    assert proc.stderr.count("\n") == 1
    assert not marker.exists()
    # Nothing to checkpoint at all is refused the same way.
    proc = guard("--", "touch", str(marker))
    assert proc.returncode == 3 and "nothing to checkpoint" in proc.stderr
    assert not marker.exists()


def test_again_reruns_the_last_guarded_command_with_a_fresh_checkpoint(site, tmp_path):
    fixed = tmp_path / "fixed"
    check = f"if [ -e {fixed} ]; then echo 'all good'; else echo 'ERROR: not fixed yet'; fi"
    first = guard("--paths", str(site), "--report", str(tmp_path / "1.json"), "--",
                  "sh", "-c", check)  # fmt: skip
    assert first.returncode == 1, first.stderr
    fixed.touch()
    again = guard("--again", "--report", str(tmp_path / "2.json"), cwd="/")
    assert again.returncode == 0, again.stderr
    assert again.stdout == "all good\n"
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in (1, 2))
    assert a["request"]["command"] == b["request"]["command"] == ["sh", "-c", check]
    assert b["request"]["cwd"] == a["request"]["cwd"] and b["checkpoint"] != a["checkpoint"]


def test_a_secret_in_the_command_is_not_stored(home, site):
    proc = guard("--paths", str(site), "--", "sh", "-c", "echo ok", "--password", "hunter2")
    assert proc.returncode == 0, proc.stderr
    [sid] = guard_sessions(home)
    [step] = rw_json("log", sid)
    assert step["command"] == "sh -c 'echo ok' --password <redacted>"
    [cp] = rw_json("checkpoint", "list")
    assert "hunter2" not in cp["label"]
    data = b"".join(p.read_bytes() for p in (home / "data").glob("rw.db*"))
    assert b"hunter2" not in data
    again = guard("--again")
    assert again.returncode == 2 and "held a secret" in again.stderr


def test_rules_come_from_the_config(home, site):
    write_config(home, CONFIG + "[guard]\nwarning = []\nerror = ['^boom$']\ntimeout = 5\n")
    assert guard("--paths", str(site), "--", "echo", "WARNING: fine now").returncode == 0
    proc = guard("--paths", str(site), "--", "sh", "-c", "echo 'an error'; echo boom")
    assert proc.returncode == 1 and "Trigger: line 2: boom" in proc.stderr
    write_config(home, CONFIG + "[guard]\nallow = ['(']\n")
    proc = guard("--paths", str(site), "--", "true")
    assert proc.returncode == 2 and "invalid regex in guard.allow" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_usage_errors_are_one_line_exit_2(site):
    for args, message in [
        ((), "nothing to run"),
        (("--allow", "(", "--", "true"), "invalid regex in allow"),
        (("--strict", "--", "true"), "--strict needs the expected lines"),
        (("--report", "r.txt", "--", "true"), "name it .md"),
        (("--paths", str(site / "nope"), "--", "true"), "no such file"),
        (("--again", "--", "true"), "give no COMMAND"),
        (("--again",), "no guarded run recorded yet"),
    ]:
        proc = guard(*args)
        assert proc.returncode == 2, (args, proc.stderr)
        assert message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr

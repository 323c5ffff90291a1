"""rw guard --host against a real OpenSSH server on 127.0.0.1 (tests/remote/
conftest.py): a test user that has no rw, reached through the user-side ssh
with -F; rw ships itself there, runs the breaker there, and brings the report
and the run back here."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pexpect
import pytest

from rewind_daemon import __version__
from rewind_daemon.guard.runner import stored_report
from rewind_daemon.store import Store

from ..checkpoints.test_probes import pid_alive
from ..checkpoints.test_snapshot import tree_state
from ..conftest import RW, rw_json, wait_for, write_config
from .conftest import ALIAS, Remote

pytestmark = pytest.mark.slow


@pytest.fixture
def home(rw_home):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    return rw_home


def as_user(remote: Remote, path: Path) -> None:
    """Give what the test made in the remote's home to its user."""
    for dirpath, dirnames, filenames in os.walk(path):
        for name in [dirpath, *(os.path.join(dirpath, n) for n in dirnames + filenames)]:
            os.lchown(name, remote.uid, remote.uid)


def remote_site(remote: Remote) -> Path:
    site = remote.home / "site"
    (site / "conf").mkdir(parents=True)
    (site / "conf" / "app.ini").write_text("mode=prod\n")
    (site / "index.html").write_text("<h1>hi</h1>\n")
    (site / "empty").mkdir()
    as_user(remote, site)
    return site


def remote_script(remote: Remote, name: str, text: str) -> str:
    path = remote.home / name
    path.write_text(text)
    as_user(remote, path)
    return f"~/{name}"


def guard(remote: Remote, *args: str, timeout: float = 90, host: str = ALIAS):
    return subprocess.run(
        [RW, "guard", "--host", host, "--ssh-config", str(remote.ssh_config), *args],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def bundle_dir(remote: Remote) -> Path:
    [where] = list((remote.home / ".cache" / "rw" / "remote").iterdir())
    return where


def test_rw_ships_itself_to_a_fresh_user_and_reuses_it_next_time(home, remote):
    # The user has no rw: neither the program nor the package for its python3.
    probe = remote.ssh("command -v rw; python3 -c 'import rewind_daemon'")
    assert probe.returncode != 0 and "No module named 'rewind_daemon'" in probe.stderr

    remote_site(remote)
    # rw of another version was there: it goes when this one is put there.
    older = remote.home / ".cache" / "rw" / "remote" / "0.0.9-0123456789abcdef"
    (older / "lib").mkdir(parents=True)
    (older / "rw.pyz").write_bytes(b"PK older")
    as_user(remote, remote.home / ".cache")
    (remote.home / ".cache" / "rw").chmod(0o700)
    (remote.home / ".cache" / "rw" / "remote").chmod(0o700)
    first = guard(remote, "--paths", "~/site", "--", "sh", "-c", "echo hello there")
    assert first.returncode == 0, first.stderr
    assert first.stdout == "hello there\n"
    assert "sending rw" in first.stderr
    where = bundle_dir(remote)  # (the only one)
    assert where.name.startswith(f"{__version__}-") and not older.exists()
    pyz = where / "rw.pyz"
    st = where.stat()
    assert (st.st_uid, st.st_mode & 0o777) == (remote.uid, 0o700)
    assert where.parent.stat().st_mode & 0o077 == 0
    before = pyz.stat()

    second = guard(remote, "--paths", "~/site", "--", "sh", "-c", "echo again")
    assert second.returncode == 0, second.stderr
    assert second.stdout == "again\n"
    assert "sending rw" not in second.stderr
    again = pyz.stat()
    assert (again.st_ino, again.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    # It runs unpacked, its modules compiled once and kept.
    assert list((where / "lib" / "rewind_daemon" / "guard").glob("__pycache__/runner.*.pyc"))

    # A bundle that is not what this rw ships (damaged, or another build) is
    # replaced, not run.
    with open(pyz, "ab") as fh:
        fh.write(b"\0")
    third = guard(remote, "--paths", "~/site", "--", "sh", "-c", "echo replaced")
    assert third.returncode == 0, third.stderr
    assert third.stdout == "replaced\n" and "sending rw" in third.stderr
    assert bundle_dir(remote) == where
    assert (where / "rw.pyz").stat().st_size == before.st_size


def test_a_warning_there_halts_rolls_back_there_and_reports_here(home, remote):
    site = remote_site(remote)
    before = tree_state(site)
    script = remote_script(
        remote,
        "install.sh",
        "set -e\n"
        "echo 'installing into the site'\n"
        "mkdir -p ~/site/lib && echo payload > ~/site/lib/new.so\n"
        "printf 'mode=dev\\n' > ~/site/conf/app.ini\n"
        "rm -r ~/site/empty\n"
        # a grandchild in a session of its own
        "setsid sh -c 'echo $$ > ~/grandchild.pid; exec sleep 300' &\n"
        "while [ ! -s ~/grandchild.pid ]; do sleep 0.01; done\n"
        "echo 'WARNING: mode changed to dev'\n"
        "sleep 5\n"
        "touch ~/after-warning\n",
    )
    report_file = home.parent / "report.json"
    proc = guard(remote, "--paths", "~/site", "--report", str(report_file), "--", "sh", script)
    assert proc.returncode == 1, proc.stderr
    # The output streamed here, as it was printed there; the report here.
    # (the killed script's shell may say "Killed" as it goes: output of the tree too)
    shown = "installing into the site\nWARNING: mode changed to dev\n"
    assert proc.stdout in (shown, shown + "Killed\n"), proc.stdout
    assert "rw guard: HALTED: sh ~/install.sh\n  Host: rwtest\n" in proc.stderr
    assert "Trigger: line 2: WARNING: mode changed to dev" in proc.stderr
    assert "Checkpoint Status: Rollback completed successfully" in proc.stderr
    assert f"modified  {site}/conf/app.ini" in proc.stderr
    # Rolled back there, the tree of processes gone there.
    assert tree_state(site) == before
    grandchild = int((remote.home / "grandchild.pid").read_text())
    assert not pid_alive(grandchild)
    assert not (remote.home / "after-warning").exists()

    doc = json.loads(report_file.read_text())
    assert doc["host"] == ALIAS and doc["exit_code"] == 1
    assert doc["trigger"]["line"] == "WARNING: mode changed to dev"
    assert doc["run_seconds"] < 4  # halted at the line, not after the sleep
    assert f"deleted   {site}/lib/new.so" in doc["reverted"]

    # The run is stored here, with its host, as it was recorded there.
    [session] = [s for s in rw_json("sessions") if s["host"] == ALIAS]
    assert session["origin"] == "guard" and session["user"] == remote.user
    assert session["id"] == doc["session"]
    listed = subprocess.run([RW, "sessions"], capture_output=True, text=True, timeout=30)
    [line] = [x for x in listed.stdout.splitlines() if session["id"] in x]
    assert line.endswith("  1 steps  on rwtest"), listed.stdout
    [step] = rw_json("log", session["id"])
    assert step["command"] == "sh ~/install.sh" and step["exit_code"] == 137
    store = Store(home / "data" / "rw.db")
    try:
        assert store.output(session["id"], 1) == proc.stdout.encode()
        report = stored_report(store, session["id"])
        assert report is not None and report.trip is not None and report.trip.line_no == 2
    finally:
        store.close()
    there = Store(remote.home / ".local" / "share" / "rw" / "rw.db", readonly=True)
    try:
        assert there.get_session(session["id"]) is not None
    finally:
        there.close()
    # That command is the remote's: `rw guard --again` never runs it here.
    again = subprocess.run([RW, "guard", "--again"], capture_output=True, text=True, timeout=30)
    assert again.returncode == 2 and "no guarded run recorded yet" in again.stderr


def test_exit_codes_rules_and_options_are_the_local_ones(home, remote, tmp_path):
    # The rules of the config here ([guard]) and the options given apply there,
    # and each case ends there as it ends here: the same exit code and trigger.
    write_config(home, "[daemon]\nautostart = false\n[guard]\nerror = ['^BOOM']\n")
    remote_site(remote)
    local = tmp_path / "site"
    local.mkdir()
    (local / "index.html").write_text("<h1>hi</h1>\n")
    cases = [
        ([], "echo fine; echo ERROR is no rule here", 0, None),
        ([], "echo BOOM now", 1, "Trigger: line 1: BOOM now\n  Type: ERROR"),
        (["--allow", "WARNING: ok"], "echo 'WARNING: ok'", 0, None),
        (["--strict", "--expect", "^step"], "echo step 1; echo other", 1, "Type: UNEXPECTED"),
        (["--timeout", "1"], "sleep 5", 1, "Type: TIMEOUT"),
        (
            ["--no-rollback"],
            "echo v2 > SITE/index.html; echo BOOM",
            1,
            "Rollback skipped (--no-rollback)",
        ),
        (["--allow", "("], "touch SITE/ran", 2, "rw: invalid regex in allow: '('"),
        (["--timeout", "0"], "touch SITE/ran", 2, "rw: --timeout must be more than 0 seconds"),
    ]
    for options, script, code, trigger in cases:
        here = subprocess.run(
            [RW, "guard", "--paths", str(local), *options, "--", "sh", "-c",
             script.replace("SITE", str(local))],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90, cwd=tmp_path,
        )  # fmt: skip
        there = guard(remote, "--paths", "~/site", *options, "--", "sh", "-c",
                      script.replace("SITE", "~/site"))  # fmt: skip
        assert (here.returncode, there.returncode) == (code, code), (script, there.stderr)
        if trigger is not None:
            assert trigger in here.stderr and trigger in there.stderr, (script, there.stderr)
    assert (remote.home / "site" / "index.html").read_text() == "v2\n"  # --no-rollback
    assert (local / "index.html").read_text() == "v2\n"
    # (what the breaker refuses is refused before any host is reached)
    assert not (remote.home / "site" / "ran").exists() and not (local / "ran").exists()
    # Nothing to checkpoint there (no --paths, no watched tree there): exit 3,
    # the command not run, as here.
    there = guard(remote, "--", "touch", "~/ran")
    assert there.returncode == 3 and "so the command did not run" in there.stderr
    assert not (remote.home / "ran").exists()


def test_ctrl_c_here_halts_and_rolls_back_there(home, remote):
    site = remote_site(remote)
    before = tree_state(site)
    child = pexpect.spawn(
        RW,
        ["guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c", "echo broken > ~/site/index.html; echo ready; sleep 60"],
        encoding="utf-8", timeout=60, dimensions=(33, 111),
    )  # fmt: skip
    try:
        child.expect_exact("ready")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 1, child.before
    assert "Type: INTERRUPTED" in child.before
    assert "Rollback completed successfully" in child.before
    assert tree_state(site) == before
    assert wait_for(lambda: not [p for p in remote.pids() if b"sleep" in _cmdline(p)])


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


def test_no_python_there_is_one_line_and_exit_2(home, remote):
    # The remote's commands get a PATH without any python3 on it.
    env_file = remote.home / ".ssh" / "environment"
    env_file.write_text(f"PATH={remote.home}/bin-without-python\n")
    as_user(remote, env_file)
    proc = guard(remote, "--", "true")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "rw: rwtest: no Python 3.9 or later to run rw there" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_bad_host_is_one_line_and_exit_2(home, remote, tmp_path):
    for host, message in [
        ("nosuchhost.invalid", "rw: nosuchhost.invalid: cannot connect: "),
        ("-oProxyCommand=touch x", "not a host to connect to"),
        ("", "not a host to connect to"),
    ]:
        proc = guard(remote, "--", "true", host=host)
        assert proc.returncode == 2, (host, proc.stderr)
        assert proc.stderr.count("\n") == 1 and message in proc.stderr, proc.stderr
    assert not (tmp_path / "x").exists()
    proc = subprocess.run(
        [RW, "guard", "--host", ALIAS, "--ssh-config", str(tmp_path / "nope"), "--", "true"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    proc = subprocess.run(
        [RW, "guard", "--host", ALIAS, "--again"], capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    for args in (["--hosts-file", str(tmp_path / "nope")], ["--parallel", "2"], ["--attach"]):
        proc = subprocess.run(
            [RW, "guard", *args, "--", "true"], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, (args, proc.stderr)


def _children(pid: int) -> list[int]:
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                fields = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                out.append(int(name))
    return out


def test_a_dropped_connection_leaves_the_breaker_running_there_and_attach_reports(home, remote):
    site = remote_site(remote)
    before = tree_state(site)
    proc = subprocess.Popen(
        [RW, "guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c",
         "echo broken > ~/site/index.html; echo ready; sleep 4; echo 'ERROR: late'; sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        [ssh] = _children(proc.pid)
        os.kill(ssh, signal.SIGKILL)  # the connection drops
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err
    assert "rw: rwtest: no report (the connection was lost" in err
    assert "rw guard --host rwtest --attach" in err
    assert tree_state(site) != before  # not rolled back because the connection dropped

    # --attach waits for the run there, which halts at its own rule and rolls back.
    attached = guard(remote, "--attach")
    assert attached.returncode == 1, attached.stderr
    assert "waiting for the run" in attached.stderr
    assert "Trigger: line 2: ERROR: late" in attached.stderr
    assert "Checkpoint Status: Rollback completed successfully" in attached.stderr
    assert tree_state(site) == before
    # (as an import: its command is the remote's word, not what was typed here)
    [session] = [s for s in rw_json("sessions") if s["host"] == ALIAS]
    assert session["origin"] == "import" and session["steps"] == 1
    # Attaching again reports the same run, stored here once.
    again = guard(remote, "--attach")
    assert again.returncode == 1 and "Trigger: line 2: ERROR: late" in again.stderr
    assert len([s for s in rw_json("sessions") if s["host"] == ALIAS]) == 1
    # Attached to, it is reported: the next run does not report it again.
    after = guard(remote, "--paths", "~/site", "--", "echo", "next")
    assert after.returncode == 0 and after.stdout == "next\n", after.stderr
    assert "connection was lost" not in after.stderr and "ERROR: late" not in after.stderr


def test_the_next_run_reports_a_run_whose_connection_dropped(home, remote):
    site = remote_site(remote)
    before = tree_state(site)
    proc = subprocess.Popen(
        [RW, "guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c",
         "echo broken > ~/site/index.html; echo ready; while [ ! -e ~/go ]; do sleep 0.05; done;"
         " echo 'ERROR: late'; sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        # (one guarded run at a time there, from anywhere)
        busy = guard(remote, "--paths", "~/site", "--", "touch", "~/second")
        assert busy.returncode == 2 and "one guarded run at a time" in busy.stderr, busy.stderr
        [ssh] = _children(proc.pid)
        os.kill(ssh, signal.SIGKILL)  # the connection drops
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1 and "no report (the connection was lost" in err, err

    # While it goes on there, no second guarded run starts there.
    busy = guard(remote, "--paths", "~/site", "--", "touch", "~/second")
    assert busy.returncode == 2, busy.stderr
    assert busy.stderr.count("\n") == 1, busy.stderr
    assert "still goes on there: one guarded run at a time" in busy.stderr
    assert "(rw guard --host rwtest --attach waits for its report)" in busy.stderr
    assert not (remote.home / "second").exists()
    assert tree_state(site) != before

    # It halts at its own rule and rolls back there; the next run reports it
    # first (and brings it home), then runs.
    (remote.home / "go").touch()
    assert wait_for(lambda: tree_state(site) == before, timeout=30)
    assert wait_for(lambda: _ended_there(remote), timeout=30)
    proc = guard(remote, "--paths", "~/site", "--", "echo", "next")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "next\n"
    said, report = proc.stderr.split("its report:\n", 1)
    assert "rw: rwtest: the run " in said and "ended after the connection was lost" in said
    assert "rw guard: HALTED: sh -c" in report
    assert "Trigger: line 2: ERROR: late" in report
    assert "Checkpoint Status: Rollback completed successfully" in report
    assert report.index("ERROR: late") < report.index("rw guard: passed: echo next")
    runs = {s["origin"]: s for s in rw_json("sessions") if s["host"] == ALIAS}
    assert sorted(runs) == ["guard", "import"]  # the lost one (the remote's word), the new one
    assert [step["command"] for step in rw_json("log", runs["guard"]["id"])] == ["echo next"]

    # Reported once: the run after that says nothing of it.
    third = guard(remote, "--paths", "~/site", "--", "echo", "third")
    assert third.returncode == 0, third.stderr
    assert "ERROR: late" not in third.stderr and "connection was lost" not in third.stderr
    assert len([s for s in rw_json("sessions") if s["host"] == ALIAS]) == 3


def _ended_there(remote: Remote) -> bool:
    there = Store(remote.home / ".local" / "share" / "rw" / "rw.db", readonly=True)
    try:
        return all(s.ended_at is not None for s in there.sessions())
    finally:
        there.close()


def test_hosts_roll_one_at_a_time_and_stop_at_the_first_halt(home, remote, remote2, tmp_path):
    both = tmp_path / "ssh_config"
    both.write_text(remote.ssh_config.read_text() + remote2.ssh_config.read_text())
    sites = {r.alias: remote_site(r) for r in (remote, remote2)}
    for r in (remote, remote2):
        remote_script(r, "install.sh", "echo v2 > ~/site/index.html; touch ~/ran; echo done\n")

    def rolling(*hosts: str) -> subprocess.CompletedProcess:
        args = [a for h in hosts for a in ("--host", h)]
        return subprocess.run(
            [RW, "guard", *args, "--ssh-config", str(both), "--paths", "~/site", "--",
             "sh", "~/install.sh"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    proc = rolling("rwtest", "rwtest2")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\ndone\n"
    assert "rw guard: hosts\n  rwtest: ran\n  rwtest2: ran\n" in proc.stderr
    assert (remote.home / "ran").exists() and (remote2.home / "ran").exists()
    runs = {s["host"]: s["id"] for s in rw_json("sessions")}
    assert sorted(runs) == ["rwtest", "rwtest2"]
    # The same command on two hosts: the runs compare alike.
    diff = subprocess.run(
        [RW, "diff", runs["rwtest"], runs["rwtest2"]], capture_output=True, text=True, timeout=30
    )
    assert diff.returncode == 0, diff.stdout + diff.stderr

    # Now the first host halts: the second is left untouched.
    for r in (remote, remote2):
        (r.home / "ran").unlink()
        (sites[r.alias] / "index.html").write_text("<h1>hi</h1>\n")
    remote_script(remote, "install.sh", "echo v3 > ~/site/index.html; echo 'ERROR: disk full'\n")
    before = {alias: tree_state(site) for alias, site in sites.items()}
    inventory = tmp_path / "hosts"
    inventory.write_text("# web tier\nrwtest\n\nrwtest2  # the canary goes first\n")
    report_md = tmp_path / "fleet.md"
    proc = subprocess.run(
        [RW, "guard", "--hosts-file", str(inventory), "--ssh-config", str(both), "--paths",
         "~/site", "--report", str(report_md), "--", "sh", "~/install.sh"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert proc.stdout == "ERROR: disk full\n"
    assert (
        "rw guard: hosts\n"
        "  rwtest: halted (ERROR); Rollback completed successfully\n"
        "  rwtest2: untouched\n"
    ) in proc.stderr
    assert {alias: tree_state(site) for alias, site in sites.items()} == before
    assert not (remote2.home / "ran").exists()
    assert sorted(s["host"] for s in rw_json("sessions")) == ["rwtest", "rwtest", "rwtest2"]
    markdown = report_md.read_text()
    assert markdown.startswith(
        "# rw guard: hosts\n\n| Host | State | Exit |\n| --- | --- | --- |\n"
        "| `rwtest` | halted (ERROR); Rollback completed successfully | 1 |\n"
        "| `rwtest2` | untouched | 0 |\n\n## rw guard: halted\n"
    ), markdown


def test_a_group_of_the_ssh_config_rolls_over_its_hosts(home, remote, remote2, tmp_path):
    # The user's config includes one file per host (a glob); each Host line is
    # marked, one on the line, one above it; a pattern marked too names no host.
    conf_d = tmp_path / "conf.d"
    conf_d.mkdir()
    (conf_d / "10-one.conf").write_text(
        remote.ssh_config.read_text().replace("Host rwtest\n", "Host rwtest  # rw-group: web\n")
    )
    (conf_d / "20-two.conf").write_text(
        "# rw-group: web, canary\n" + remote2.ssh_config.read_text()
    )
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Include {conf_d}/*.conf\n"
        "Host rw*   # rw-group: web\n    ServerAliveInterval 15\n"
        "Match host nothing\n    # rw-group: web\n"
    )
    for r in (remote, remote2):
        remote_site(r)
        remote_script(r, "install.sh", "echo v2 > ~/site/index.html; touch ~/ran; echo done\n")

    def by_group(*groups: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RW, "guard", *[a for g in groups for a in ("--group", g)], "--ssh-config",
             str(config), "--paths", "~/site", "--", "sh", "~/install.sh"],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    proc = by_group("web")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\ndone\n"
    assert "rw guard: hosts\n  rwtest: ran\n  rwtest2: ran\n" in proc.stderr
    assert f"rw: {config}:5: rw-group on a Match block: ignored\n" in proc.stderr
    assert sorted(s["host"] for s in rw_json("sessions")) == ["rwtest", "rwtest2"]
    assert (remote.home / "ran").exists() and (remote2.home / "ran").exists()

    # A glob over the Host lines' names; two groups, each host once.
    (remote2.home / "ran").unlink()
    proc = by_group("rwtest?")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "done\n" and (remote2.home / "ran").exists()
    proc = by_group("canary", "web")
    assert proc.returncode == 0, proc.stderr
    assert "rw guard: hosts\n  rwtest2: ran\n  rwtest: ran\n" in proc.stderr

    proc = by_group("db")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 2, proc.stderr  # (the note)
    assert f"rw: --group db: marks no Host line in {config}, {conf_d}/10-one.conf" in proc.stderr


def test_parallel_hosts_stop_the_line_when_one_halts(home, remote, remote2, tmp_path):
    both = tmp_path / "ssh_config"
    both.write_text(remote.ssh_config.read_text() + remote2.ssh_config.read_text())
    sites = {r.alias: remote_site(r) for r in (remote, remote2)}
    before = {alias: tree_state(site) for alias, site in sites.items()}
    remote_script(
        remote,
        "install.sh",
        "echo v2 > ~/site/index.html; echo started\n"
        "while [ ! -e ~/../$PEER/started ]; do sleep 0.05; done\n"
        "echo 'ERROR: migration failed'; sleep 30\n",
    )
    remote_script(
        remote2,
        "install.sh",
        "echo v2 > ~/site/index.html; touch ~/started; echo started\nsleep 30; touch ~/ran\n",
    )
    (remote2.home).chmod(0o755)  # the first host's script waits for the second's to start
    report_file = tmp_path / "fleet.json"
    proc = subprocess.run(
        [RW, "guard", "--host", "rwtest", "--host", "rwtest2", "--parallel", "2",
         "--report", str(report_file),
         "--ssh-config", str(both), "--paths", "~/site", "--", "env",
         f"PEER={remote2.user}", "sh", "~/install.sh"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    # Each line of output after its host's name (a shell whose child was killed
    # may say so as it goes: that is output too).
    lines = proc.stdout.splitlines()
    assert {"rwtest: started", "rwtest2: started", "rwtest: ERROR: migration failed"} <= set(
        lines
    ), proc.stdout
    assert all(line.startswith(("rwtest: ", "rwtest2: ")) for line in lines), proc.stdout
    assert (
        "rw guard: hosts\n"
        "  rwtest: halted (ERROR); Rollback completed successfully\n"
        "  rwtest2: rolled back (another host halted); Rollback completed successfully\n"
    ) in proc.stderr
    assert {alias: tree_state(site) for alias, site in sites.items()} == before
    assert not (remote2.home / "ran").exists()
    assert not [p for p in remote2.pids() if b"sleep" in _cmdline(p)]
    # The report file has each host's state and report.
    doc = json.loads(report_file.read_text())
    assert doc["exit_code"] == 1
    assert [(h["host"], h["state"], h["exit_code"]) for h in doc["hosts"]] == [
        ("rwtest", "halted", 1),
        ("rwtest2", "rolled back", 1),
    ]
    assert doc["hosts"][0]["report"]["trigger"]["line"] == "ERROR: migration failed"
    assert doc["hosts"][1]["report"]["trigger"]["type"] == "INTERRUPTED"
    assert sorted(s["host"] for s in rw_json("sessions")) == ["rwtest", "rwtest2"]


def test_a_remote_rw_that_is_killed_is_said_so_here(home, remote):
    remote_site(remote)
    proc = subprocess.Popen(
        [RW, "guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c", "echo ready; sleep 60"],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout.readline() == "ready\n"
        [agent] = [p for p in remote.pids() if _cmdline(p).startswith(b"python3\0-I\0")]
        os.kill(agent, signal.SIGKILL)
        _, err = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 1, err
    assert "rw: rwtest: no report (rw there ended without a report (exit status 137))\n" in err
    assert "Traceback" not in err
    # The next run there says so, and runs (the lock went with the killed rw).
    after = guard(remote, "--paths", "~/site", "--", "echo", "next")
    assert after.returncode == 0 and after.stdout == "next\n", after.stderr
    assert "there ended without a report (its rw was killed)" in after.stderr


def test_rw_pull_brings_the_hosts_sessions_home_once(home, remote):
    remote_site(remote)
    assert guard(remote, "--paths", "~/site", "--", "true").returncode == 0
    # A session recorded there by rw itself (the rw it shipped there, as a user would run it).
    history = remote.home / ".bash_history"
    history.write_text("echo one\nls -l /tmp\n")
    as_user(remote, history)
    made = remote.ssh("python3 ~/.cache/rw/remote/*/rw.pyz import bash ~/.bash_history")
    assert made.returncode == 0, made.stderr

    def pull(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RW, "pull", *args, "--ssh-config", str(remote.ssh_config)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90,
        )  # fmt: skip

    proc = pull(ALIAS)
    assert proc.returncode == 0, proc.stderr
    assert "rw: rwtest: 1 session pulled, 1 here already" in proc.stderr
    here = {s["origin"]: s for s in rw_json("sessions") if s["host"] == ALIAS}
    assert sorted(here) == ["guard", "import"]
    assert [step["command"] for step in rw_json("log", here["import"]["id"])] == [
        "echo one",
        "ls -l /tmp",
    ]
    # Pulled again: nothing new.
    again = pull(ALIAS, "--json")
    assert again.returncode == 0, again.stderr
    assert sorted(x["new"] for x in json.loads(again.stdout)) == [False, False]
    assert len([s for s in rw_json("sessions") if s["host"] == ALIAS]) == 2
    # One session, named as it is there (`last`: the last one recorded there).
    one = pull(ALIAS, here["import"]["id"][:12], "--json")
    assert [x["session"] for x in json.loads(one.stdout)] == [here["import"]["id"]]
    last = pull(ALIAS, "last", "--json")
    assert [x["session"] for x in json.loads(last.stdout)] == [here["guard"]["id"]]
    bad = pull("nosuchhost.invalid")
    assert bad.returncode == 2 and bad.stderr.count("\n") == 1, bad.stderr


def test_rw_pull_over_a_group_and_a_hosts_file(home, remote, remote2, tmp_path):
    config = tmp_path / "ssh_config"
    config.write_text(
        "# rw-group: web\n" + remote.ssh_config.read_text()
        + "# rw-group: web\n" + remote2.ssh_config.read_text()
    )  # fmt: skip

    def pull(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RW, "pull", *args, "--ssh-config", str(config)],
            stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
        )  # fmt: skip

    first = pull("--group", "web")  # (ships rw to both: nothing recorded there yet)
    assert first.returncode == 0, first.stderr
    assert "rw: rwtest: 0 sessions pulled, 0 here already\n" in first.stderr
    assert "rw: rwtest2: 0 sessions pulled, 0 here already\n" in first.stderr
    for r, command in ((remote, "echo on-one"), (remote2, "echo on-two")):
        history = r.home / ".bash_history"
        history.write_text(command + "\n")
        as_user(r, history)
        made = r.ssh("python3 ~/.cache/rw/remote/*/rw.pyz import bash ~/.bash_history")
        assert made.returncode == 0, made.stderr
    proc = pull("--group", "web", "--json")
    assert proc.returncode == 0, proc.stderr
    got = sorted((x["host"], x["new"]) for x in json.loads(proc.stdout))
    assert got == [("rwtest", True), ("rwtest2", True)]
    commands = {
        s["host"]: [step["command"] for step in rw_json("log", s["id"])]
        for s in rw_json("sessions")
    }
    assert commands == {"rwtest": ["echo on-one"], "rwtest2": ["echo on-two"]}
    # A host that cannot be reached is said and skipped; the others are pulled.
    hosts = tmp_path / "hosts"
    hosts.write_text("nosuchhost.invalid   # gone\nrwtest2\n")
    proc = pull("--hosts-file", str(hosts))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("rw: nosuchhost.invalid: "), proc.stderr
    assert proc.stderr.endswith("rw: rwtest2: 0 sessions pulled, 1 here already\n"), proc.stderr
    # A SESSION names one host's session.
    proc = pull("rwtest", "last", "--group", "web")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert "a SESSION is pulled from one HOST" in proc.stderr


def test_ctrl_c_before_the_remote_answers_runs_nothing_there(home, remote):
    remote_site(remote)
    rc = remote.home / ".ssh" / "rc"  # sshd runs it before the command: a slow login
    rc.write_text("sleep 3\n")
    as_user(remote, rc)
    child = pexpect.spawn(
        RW,
        ["guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "touch", "~/ran"],
        encoding="utf-8", timeout=30, dimensions=(33, 111),
    )  # fmt: skip
    try:
        # once rw has started ssh (the login there takes 3 s more), not before:
        # a Ctrl-C while rw itself starts is rw's own (exit 130)
        assert wait_for(lambda: _children(child.pid), timeout=30)
        time.sleep(0.5)
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 1, child.before
    assert "Ctrl-C here: stopped before anything ran there" in child.before
    time.sleep(4)
    assert not (remote.home / "ran").exists()
    assert "Traceback" not in child.before


def test_the_command_there_gets_the_size_of_the_terminal_here(home, remote):
    remote_site(remote)
    child = pexpect.spawn(
        RW,
        ["guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c",
         "stty size; trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.1; done"],
        encoding="utf-8", timeout=60, dimensions=(33, 111),
    )  # fmt: skip
    try:
        child.expect_exact("33 111")
        child.expect_exact("ready")
        child.setwinsize(40, 120)
        child.expect_exact("40 120")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before


def test_a_host_behind_a_jump_host_through_the_users_ssh_config(home, remote, remote2, tmp_path):
    # rwtest2 is reached through rwtest (ProxyJump), as the user's ssh config says.
    config = tmp_path / "ssh_config"
    config.write_text(
        remote.ssh_config.read_text()
        + remote2.ssh_config.read_text().replace(
            "  HostName 127.0.0.1\n", "  HostName 127.0.0.1\n  ProxyJump rwtest\n"
        )
    )
    remote_site(remote2)
    proc = subprocess.run(
        [RW, "guard", "--host", "rwtest2", "--ssh-config", str(config), "--paths", "~/site",
         "--", "sh", "-c", "echo on the far side"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "on the far side\n"
    # The jump host took a login (nothing else here logs in to it) and ran nothing.
    assert f"Accepted publickey for {remote.user}" in remote.log.read_text()
    assert (remote2.home / ".cache" / "rw" / "remote").is_dir()
    assert not (remote.home / ".cache" / "rw").exists()  # the jump host only passed it on


def test_runs_go_over_the_users_controlmaster(home, remote, tmp_path):
    config = tmp_path / "ssh_config"
    control = tmp_path / "cm"
    config.write_text(
        remote.ssh_config.read_text()
        + f"  ControlMaster auto\n  ControlPath {control}\n  ControlPersist 60\n"
    )
    remote_site(remote)
    try:
        for word in ("first", "second"):
            proc = subprocess.run(
                [RW, "guard", "--host", ALIAS, "--ssh-config", str(config), "--paths", "~/site",
                 "--", "echo", word],
                stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120,
            )  # fmt: skip
            assert proc.returncode == 0, proc.stderr
            assert proc.stdout == f"{word}\n"
            # the master the first run started is there for the next one
            check = subprocess.run(
                ["ssh", "-F", str(config), "-O", "check", ALIAS],
                capture_output=True, text=True, timeout=30,
            )  # fmt: skip
            assert check.returncode == 0, check.stderr
        logins = remote.log.read_text().count(f"Accepted publickey for {remote.user}")
        assert logins == 1  # one connection, two runs
    finally:
        subprocess.run(["ssh", "-F", str(config), "-O", "exit", ALIAS], capture_output=True)


def test_rw_ssh_names_the_ssh_command(home, remote):
    remote_site(remote)
    env = {**os.environ, "RW_SSH": f"ssh -F '{remote.ssh_config}' -o ConnectTimeout=20"}
    proc = subprocess.run(
        [RW, "guard", "--host", ALIAS, "--paths", "~/site", "--", "echo", "via RW_SSH"],
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "via RW_SSH\n"
    for bad, message in (("ssh '", "RW_SSH: "), ("no-such-ssh-program", "cannot run")):
        proc = subprocess.run(
            [RW, "guard", "--host", ALIAS, "--", "true"], capture_output=True, text=True,
            timeout=60, env={**os.environ, "RW_SSH": bad},
        )  # fmt: skip
        assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
        assert message in proc.stderr


def test_what_the_remotes_login_prints_first_is_skipped(home, remote):
    remote_site(remote)
    rc = remote.home / ".ssh" / "rc"  # sshd runs it before the command; its output comes here
    rc.write_text(
        "echo 'Welcome to web1'\necho 'RW-REMOTE 0123456789abcdef'\nprintf 'out 3\\nabc'\n"
    )
    as_user(remote, rc)
    assert "Welcome to web1" in remote.ssh("true").stdout  # what plain ssh shows
    proc = guard(remote, "--paths", "~/site", "--", "echo", "clean")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "clean\n"
    assert "Welcome" not in proc.stderr


def test_what_is_piped_here_reaches_the_command_there_and_its_end_too(home, remote):
    remote_site(remote)

    def piped(data: bytes | None, *command: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [RW, "guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths",
             "~/site", "--timeout", "20", "--", *command],
            input=data, stdin=None if data is not None else subprocess.DEVNULL,
            capture_output=True, timeout=90,
        )  # fmt: skip

    proc = piped(b"y\n", "sh", "-c", "read a; echo got $a")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"got y\n"  # (not echoed: it was not typed)
    # The end of what is piped is the command's end of file.
    proc = piped(b"one\ntwo\n", "sh", "-c", "cat; echo end")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"one\ntwo\nend\n"
    proc = piped(b"no newline", "sh", "-c", "cat; echo; echo end")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"no newline\nend\n"
    # Nothing to read here (/dev/null): the command there reads an end of file
    # at once, as under plain ssh, instead of waiting for keys that never come.
    proc = piped(None, "sh", "-c", "cat; echo nothing came")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"nothing came\n"
    # Over a fleet, no host reads it: the command there waits, and halts.
    proc = subprocess.run(
        [RW, "guard", "--host", ALIAS, "--host", ALIAS, "--ssh-config", str(remote.ssh_config),
         "--paths", "~/site", "--timeout", "2", "--", "sh", "-c", "cat; echo read"],
        input=b"x\n", capture_output=True, timeout=90,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert b"Type: TIMEOUT" in proc.stderr and b"read" not in proc.stdout


def test_keys_typed_here_reach_the_command_there(home, remote):
    remote_site(remote)
    site = remote.home / "site"
    child = pexpect.spawn(
        RW,
        ["guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c",
         "printf 'name? '; read a; echo \"hello $a\"; echo $a > ~/site/index.html; cat; echo end"],
        encoding="utf-8", timeout=60, dimensions=(33, 111),
    )  # fmt: skip
    try:
        child.expect_exact("name? ")
        child.sendline("bob")
        child.expect_exact("hello bob")
        child.sendline("more")
        child.expect_exact("more")
        child.sendcontrol("d")  # ^D: the end of cat's input there
        child.expect_exact("end")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert (site / "index.html").read_text() == "bob\n"

    # Keys typed while the command there waits for them; Ctrl-C still halts and rolls back.
    child = pexpect.spawn(
        RW,
        ["guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths", "~/site",
         "--", "sh", "-c", "echo changed > ~/site/index.html; read a; echo \"got $a\"; sleep 60"],
        encoding="utf-8", timeout=60, dimensions=(33, 111),
    )  # fmt: skip
    try:
        child.sendline("early")  # typed before the command there has started
        child.expect_exact("got early")
        child.sendcontrol("c")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 1, child.before
    assert "Type: INTERRUPTED" in child.before
    assert "Rollback completed successfully" in child.before
    assert (site / "index.html").read_text() == "bob\n"


def test_piped_input_is_sent_no_faster_than_the_command_there_takes_it(home, remote):
    # 16 MiB piped to a command that reads nothing for 3 s: rw there holds no
    # more than a window of it meanwhile (its peak memory, which the command,
    # its child, reads), and all of it arrives.
    remote_site(remote)
    peak = "sleep 3; grep VmHWM /proc/$PPID/status; wc -c"

    def piped(data: bytes) -> tuple[int, int]:
        proc = subprocess.run(
            [RW, "guard", "--host", ALIAS, "--ssh-config", str(remote.ssh_config), "--paths",
             "~/site", "--timeout", "120", "--", "sh", "-c", peak],
            input=data, capture_output=True, timeout=300,
        )  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        kib, count = proc.stdout.split()[1], proc.stdout.split()[-1]
        return int(kib), int(count)

    small_kib, count = piped(b"y\n")
    assert count == 2
    big = b"y\n" * (8 * 1024 * 1024)
    big_kib, count = piped(big)
    assert count == len(big)
    assert big_kib - small_kib < 6 * 1024, (small_kib, big_kib)


def test_what_ssh_asks_on_the_terminal_is_answered_there_not_sent(home, remote, tmp_path):
    # ssh asks on the terminal before the remote answers (here: a host key it
    # does not know yet); rw leaves the terminal to it until then, and only
    # then takes it and sends the keys typed.
    known = tmp_path / "known_hosts_empty"
    known.write_text("")
    config = tmp_path / "ssh_config"
    text = remote.ssh_config.read_text()
    text = text.replace("StrictHostKeyChecking yes", "StrictHostKeyChecking ask")
    text = text.replace("BatchMode yes", "BatchMode no")
    text = re.sub(r"UserKnownHostsFile \S+", f"UserKnownHostsFile {known}", text)
    config.write_text(text)
    remote_site(remote)
    child = pexpect.spawn(
        RW,
        ["guard", "--host", ALIAS, "--ssh-config", str(config), "--paths", "~/site", "--",
         "sh", "-c", "read a; echo \"got $a\""],
        encoding="utf-8", timeout=60, dimensions=(33, 111),
    )  # fmt: skip
    try:
        child.expect("continue connecting")
        child.sendline("yes")
        child.expect_exact("checkpoint")  # the remote answered: the run has begun
        child.sendline("typed")
        child.expect_exact("got typed")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0, child.before
    assert "127.0.0.1" in known.read_text()  # ssh got its answer

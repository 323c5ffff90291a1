"""rw doctor: fine outside a recorded shell (cron, monitoring), notices a shell
whose prompt hook was replaced after rw init and spool bytes the daemon dropped,
and fixes an unreadable store by its owner and mode, never by moving it."""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest

from ..conftest import BIN, RW, rw, rw_json, wait_for


# Cron's environment: no RW_SESSION, no terminal, a short PATH.
def cron_doctor(rw_home, *prefix: str) -> subprocess.CompletedProcess:
    env = {"PATH": "/usr/bin:/bin", "RW_HOME": str(rw_home), "HOME": str(rw_home)}
    return subprocess.run(
        [*prefix, "env", "-i", *[f"{k}={v}" for k, v in env.items()], RW, "doctor"],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )  # fmt: skip


def line(out: str, check: str) -> str:
    return next(ln for ln in out.splitlines() if ln[5:].startswith(check + ":"))


def test_outside_a_recorded_shell_the_hook_check_is_skipped(daemon, shells):
    shells("bash").run("echo recorded")
    proc = cron_doctor(daemon)
    assert proc.returncode == 0, proc.stdout
    assert line(proc.stdout, "hooks").startswith("ok   hooks: skipped for this process")
    assert "BAD" not in proc.stdout and proc.stderr == ""


BREAK_HOOK = {"bash": 'PROMPT_COMMAND="echo -n"', "zsh": "precmd_functions=()"}


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_prompt_hook_replaced_after_init_is_noticed(daemon, shells, kind):
    sh = shells(kind)
    sh.run("echo fine")
    assert "ok   hooks: session" in sh.run("rw doctor")
    sid = sh.run("echo $RW_SESSION")
    sh.run(BREAK_HOOK[kind])
    sh.run("echo after")
    out = sh.run("rw doctor; echo status=$?")
    hooks = line(out, "hooks")
    if kind == "zsh":
        # zsh loses the ends: the records show it, to any rw doctor
        assert hooks.startswith("BAD  hooks: this shell records when commands start but not when")
        assert f"({BREAK_HOOK[kind]})" in hooks and "precmd_functions" in hooks
        proc = cron_doctor(daemon)
        assert proc.returncode == 1
        assert line(proc.stdout, "hooks").startswith(f"BAD  hooks: session {sid} ({kind}, pid ")
    else:
        # bash still ends each command when the next begins: the shell tells
        assert hooks.startswith(
            "BAD  hooks: this shell's PROMPT_COMMAND was replaced after rw init"
        )
    assert f'fix: run eval "$(rw init {kind})" again in' in out
    assert out.endswith("status=1")
    # the fix it gives works
    sh.run(f'eval "$({BIN}/rw init {kind})"')
    sh.run("echo repaired")
    assert "ok   hooks: session" in sh.run("rw doctor")
    assert cron_doctor(daemon).returncode == 0


def test_dropped_spool_bytes_are_reported(daemon):
    assert line(rw("doctor").stdout, "spool records") == (
        "ok   spool records: every record read so far was stored"
    )
    spool = daemon / "data" / "spool" / "1795236632920925000ab1234.spool"
    spool.write_bytes(b"not a record\n" * 40)
    wait_for(lambda: rw_json("daemon", "status")["dropped"] > 0)
    dropped = rw_json("daemon", "status")["dropped"]
    proc = rw("doctor")
    assert line(proc.stdout, "spool records") == (
        f"ok   spool records: {dropped} record(s) or damaged part(s) of spool files dropped "
        f"so far (what and when: {daemon / 'data' / 'daemon.log'})"
    )


# root, without the capabilities that let it read any file: as a user is
NO_DAC = ("setpriv", "--bounding-set", "-dac_override,-dac_read_search")


@pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv"
)
def test_an_unreadable_store_is_fixed_by_its_mode_and_owner_never_moved(daemon, shells):
    shells("bash").run("echo kept")
    rw("daemon", "stop")
    db = daemon / "data" / "rw.db"
    files = [f for f in (db, db.with_name("rw.db-wal"), db.with_name("rw.db-shm")) if f.exists()]
    quoted = " ".join(str(f) for f in files)
    db.chmod(0)
    proc = cron_doctor(daemon, *NO_DAC)
    assert proc.returncode == 1
    assert line(proc.stdout, "store").startswith("BAD  store:")
    assert f"     fix: chmod 600 {quoted}\n" in proc.stdout
    assert "aside" not in proc.stdout
    # another user's file: chown it back first
    db.chmod(0o600)
    os.chown(db, 65534, 65534)
    proc = cron_doctor(daemon, *NO_DAC)
    assert f"     fix: as root: chown root {quoted} && chmod 600 {quoted}\n" in proc.stdout
    # doing what it says is enough; nothing was lost
    os.chown(db, 0, 0)
    proc = cron_doctor(daemon, *NO_DAC)
    assert line(proc.stdout, "store").startswith("ok   store:"), proc.stdout
    assert db.exists() and "echo kept" in rw("log", "last").stdout


def doctor_without(tmp_path, module: str) -> str:
    """rw doctor's output where the C module `module` was not built."""
    site = tmp_path / "site"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(
        f"import sys\nsys.modules[{module!r}] = None  # (as if not built)\n"
    )
    return rw("doctor", check=False, env={**os.environ, "PYTHONPATH": str(site)}).stdout


@pytest.mark.parametrize(
    "module, check, in_c, in_python",
    [
        (
            "rewind_daemon._termtext", "output text", "made in C",
            "warning: made in Python (rw's C modules were not built): output ingest is "
            "slower; install gcc and the Python headers and reinstall",
        ),
        (
            "rewind_daemon.recorder._relay", "recorder loop", "in C",
            "warning: in Python (rw's C modules were not built): rw record takes more CPU "
            "per byte shown; install gcc and the Python headers and reinstall",
        ),
    ],
    ids=["output text", "recorder loop"],
)  # fmt: skip
def test_doctor_says_which_code_runs_where_a_c_module_was_not_built(
    rw_home, tmp_path, c_module, module, check, in_c, in_python
):
    # Where a C module was not built (no compiler), rw runs on in Python, and
    # rw doctor says so: a warning, not a failure.
    assert line(rw("doctor", check=False).stdout, check) == f"ok   {check}: {in_c}"
    assert line(doctor_without(tmp_path, module), check) == f"ok   {check}: {in_python}"

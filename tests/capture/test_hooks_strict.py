"""The hook code under a strict user setup: it prints nothing and changes
none of the user's options, traps or exit statuses; shellcheck passes."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ..conftest import rw_json, steps_of

HOOKS = Path(__file__).resolve().parents[2] / "hooks"


def save_state(kind: str, out: Path) -> str:
    """A command line that writes the shell's options and (non-DEBUG) traps to `out`."""
    if kind == "bash":
        return f"{{ set +o; shopt -p; trap -p | grep -v ' DEBUG$'; }} >| {out}"
    return f"{{ setopt; trap; }} >| {out}"


def test_shellcheck_passes_on_the_hook_code():
    assert shutil.which("shellcheck"), "shellcheck must be installed (scripts/test installs it)"
    proc = subprocess.run(
        ["shellcheck", "-s", "bash", str(HOOKS / "rw.bash"), str(HOOKS / "rw.zsh")],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout


def test_zsh_is_installed():
    # A missing zsh must fail the suite, never skip it.
    assert shutil.which("zsh"), "zsh must be installed (scripts/test installs it)"


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_strict_mode_options_traps_and_status_unchanged(daemon, shells, kind, tmp_path):
    setup = (
        "set -eu -o pipefail; trap 'echo user-int' INT; trap 'true' USR1"
        if kind == "bash"
        else "set -eu -o pipefail; setopt noclobber; trap 'echo user-int' INT; trap 'true' USR1"
    )
    sh = shells(kind, init=False, before_init=[setup])
    before, after = tmp_path / "before", tmp_path / "after"
    sh.run(save_state(kind, before))
    assert sh.run(f'eval "$({sh.bin_dir}/rw init {kind})"') == ""
    assert sh.run("(exit 3) || echo status=$?") == "status=3"
    assert sh.run("echo plain") == "plain"
    sh.run("true | true")
    sh.run(save_state(kind, after))
    assert before.read_text() == after.read_text()
    # the shell is still alive under errexit, and every line was recorded
    assert sh.run("echo alive") == "alive"
    commands = [s["command"] for s in steps_of(sh.session_id())]
    assert commands[:3] == ["(exit 3) || echo status=$?", "echo plain", "true | true"]


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_strict_mode_survives_no_daemon_and_an_empty_pid_file(no_autostart, shells, kind):
    """errexit must not turn a failed liveness check into the end of the shell."""
    run_dir = no_autostart / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "daemon.pid").write_text("")  # left empty by a crash
    sh = shells(kind, init=False, before_init=["set -eu -o pipefail"])
    assert sh.run(f'eval "$({sh.bin_dir}/rw init {kind})"') == ""
    assert sh.run("echo still-here") == "still-here"
    assert sh.p.isalive()
    spool = list((no_autostart / "data" / "spool").glob("*.spool"))
    assert len(spool) == 1 and b"echo still-here" in spool[0].read_bytes()


def test_bash_errexit_with_a_debug_trap_of_the_users_own(daemon, shells):
    """Chained after ours, the user's DEBUG trap sees $? as their command
    left it, and a failed command before `||` does not end the shell."""
    sh = shells("bash", init=False, before_init=["set -e", "trap 'RW_LAST=$?' DEBUG"])
    assert sh.run(f'eval "$({sh.bin_dir}/rw init bash)"') == ""
    assert sh.run("false || echo ok=$RW_LAST") == "ok=1"
    assert sh.run("echo alive") == "alive"
    assert sh.p.isalive()
    commands = [s["command"] for s in steps_of(sh.session_id())]
    assert commands[-2:] == ["false || echo ok=$RW_LAST", "echo alive"]


def test_bash_allexport_does_not_export_the_hooks_variables(daemon, shells):
    sh = shells("bash", init=False, before_init=["set -a"])
    assert sh.run(f'eval "$({sh.bin_dir}/rw init bash)"') == ""
    sh.run("RW_MINE=1")
    assert sh.run("env | grep -c '^RW_MINE='") == "1"  # allexport still works for the user
    sid = sh.session_id()
    step = steps_of(sid)[-1]["step"]
    recorded = rw_json("show", sid, str(step))["env"]
    assert recorded["RW_MINE"] == "1"
    assert not [k for k in recorded if k.startswith("__rw_")]

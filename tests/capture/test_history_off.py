"""bash with history off: a line's text is not known, only the first simple
command it runs ($BASH_COMMAND). Such a step is marked partial, shown so,
and never run again as if it were the whole line: replay stops before it,
the exported script leaves it out (and stops there), `rw branch` does not put
it back on the command line, and rw dap does not run it."""

from __future__ import annotations

import json
import os
import subprocess

import pexpect
import pytest

from rewind_daemon.cli.common import get_paths
from rewind_daemon.dap import recorded
from rewind_daemon.store import Store

from ..conftest import RW, rw, rw_json, steps_of


@pytest.mark.parametrize("off", ["set +o history", "HISTSIZE=0"])
def test_a_line_known_only_in_part_is_marked_partial(daemon, shells, off, tmp_path):
    sh = shells("bash")
    sh.run("rw name part")
    sh.run(f"cd {tmp_path}")
    sh.run(off)
    sh.run("echo a | tr a b; echo c")
    sh.run("for i in 1 2; do echo $i; done")
    sh.run("touch first; touch second")
    sid = sh.session_id()
    steps = steps_of(sid)
    for made in ("first", "second"):  # (by the line itself, live)
        (tmp_path / made).unlink()
    by_command = {s["command"]: s["partial"] for s in steps}
    assert by_command["echo a"] is True and by_command["touch first"] is True, steps
    assert by_command["for i in 1 2"] is True
    assert by_command[f"cd {tmp_path}"] is False  # (history was on)
    n = next(s["step"] for s in steps if s["command"] == "touch first")
    assert rw_json("show", "part", str(n))["partial"] is True
    assert (
        "partial   only the first command of the line was recorded"
        in rw("show", "part", str(n)).stdout
    )
    assert "touch first  [partial]" in rw("log", "part").stdout
    # Export: left out, as a comment, and the script stops there.
    script = rw("export", "part", "--format", "sh").stdout
    assert "eval 'touch first'" not in script and "#   touch first" in script
    ran = subprocess.run(["bash", "-c", script], capture_output=True, text=True, cwd=tmp_path)
    assert ran.returncode == 1 and "was recorded partly" in ran.stderr, ran
    assert not (tmp_path / "first").exists()
    exported = rw("export", "part", "--format", "json").stdout
    doc = json.loads(exported)
    assert [s["partial"] for s in doc["steps"]] == [s["partial"] for s in steps]
    (tmp_path / "doc.json").write_text(exported)
    rw("import", "json", str(tmp_path / "doc.json"), "--name", "again")
    assert [s["partial"] for s in steps_of("again")] == [s["partial"] for s in steps]
    assert "recorded partly" in rw("export", "part", "--format", "md").stdout
    # Replay (no terminal): stops before it, having run none of it.
    replay = rw("replay", "part", "--from", str(n), check=False)
    assert replay.returncode == 1 and "recorded partly" in replay.stderr, replay
    assert not (tmp_path / "first").exists() and not (tmp_path / "second").exists()
    # The debugger will not run it either.
    store = Store.open_for_reading(get_paths().db)
    program = recorded.load(store, get_paths(), "part", {})
    index = next(i for i, number in program.numbers.items() if number == n)
    assert "recorded partly" in program.refused[index]
    assert "recorded partly: only the first command of its line" in program.text


def test_branch_from_a_failure_known_in_part_does_not_put_half_a_line_back(daemon, shells):
    sh = shells("bash")
    sh.run("set +o history")
    sh.run("true; false")  # stored as `true`, status 1
    out = sh.run("rw branch")
    assert "the failed command is not put back: only the first command" in out, out
    assert "one Up-arrow away" not in out


def test_replay_on_a_terminal_runs_a_partial_step_only_edited_into_the_whole_line(
    daemon, shells, tmp_path
):
    sh = shells("bash")
    sh.run("rw name part")
    sh.run(f"cd {tmp_path}")
    sh.run("set +o history")
    sh.run("touch first; touch second")  # stored as `touch first`, partial
    for made in ("first", "second"):
        (tmp_path / made).unlink()
    p = pexpect.spawn(RW, ["replay", "part", "--from", "4"], encoding="utf-8", timeout=20,
                      env=dict(os.environ), dimensions=(40, 250))  # fmt: skip
    p.expect_exact("paused before step 4 (recorded partly")
    p.expect_exact("[q]uit")
    p.sendline("c")  # not run as recorded: asked again
    p.expect_exact("step 4 is not run as recorded")
    p.expect_exact("paused before step 4 (recorded partly")
    p.expect_exact("[q]uit")
    assert not (tmp_path / "first").exists()
    p.sendline("e")
    p.expect_exact("rw: command")
    p.sendline("touch first; touch second")
    p.expect(pexpect.EOF)
    p.close()
    assert p.exitstatus == 0
    assert (tmp_path / "first").exists() and (tmp_path / "second").exists()

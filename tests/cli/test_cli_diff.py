"""rw diff on real recorded runs."""

from __future__ import annotations

import json

from rewind_daemon.store import StepRow
from rewind_daemon.timeline import diffing

from ..conftest import rw, rw_json


def test_inserted_step_and_changed_exit_code_are_exactly_the_differences(daemon, shells, tmp_path):
    flag = tmp_path / "flag"
    run = ["echo one", "echo two", f"test -e {flag}", "echo four", "echo five"]
    a = shells("bash")
    for cmd in run:
        a.run(cmd)
    flag.write_text("now it exists")
    b = shells("zsh")
    for cmd in run[:2] + ["echo inserted"] + run[2:]:
        b.run(cmd)
    run_a, run_b = a.session_id(), b.session_id()
    proc = rw("diff", run_a, run_b, "--json", check=False)
    assert proc.returncode == 1
    result = json.loads(proc.stdout)
    different = [s for s in result["steps"] if s["status"] != "same"]
    assert different == [
        {"status": "only_b", "a": None, "b": 3},
        {"status": "exit_code", "a": 3, "b": 4},
    ]
    assert result["divergence"] == {"a": 3, "b": 3}
    assert len(result["steps"]) == 6  # 5 commands, and the insertion
    text = rw("diff", run_a, run_b, check=False).stdout
    assert "diverge at A step 3, B step 3" in text
    assert "+     -     3  echo inserted" in text
    assert "exit 1 → 0" in text


def test_identical_runs_exit_0(daemon, shells):
    sh = shells("bash")
    sh.run("rw name same")
    sh.run("echo x")
    rw("branch", "same", "2", "--name", "copy")
    proc = rw("diff", "same", "copy", "--json", check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 0, result
    assert result["divergence"] is None
    assert {s["status"] for s in result["steps"]} == {"same"}


def _steps(commands: list[str], codes: list[int] | None = None) -> list[StepRow]:
    codes = codes or [0] * len(commands)
    return [
        StepRow("s", i + 1, c, "/", "/", float(i), float(i) + 0.1, code, "0", None)
        for i, (c, code) in enumerate(zip(commands, codes))
    ]


def test_alignment_keeps_later_steps_matched():
    a = _steps([f"cmd {i}" for i in range(100)])
    b = _steps(["new first"] + [f"cmd {i}" for i in range(100) if i != 50])
    result = diffing.compare(a, b)
    statuses = [p.status for p in result.pairs]
    assert statuses.count("only_b") == 1 and statuses.count("only_a") == 1
    assert statuses.count("same") == 99
    assert result.divergence == (1, 1)


def test_replaced_command():
    result = diffing.compare(_steps(["a", "b", "c"]), _steps(["a", "B", "c"]))
    assert [p.status for p in result.pairs] == ["same", "command", "same"]
    assert result.to_json()["divergence"] == {"a": 2, "b": 2}


def test_recorded_outputs_are_compared(daemon, shells, tmp_path):
    data = tmp_path / "data.txt"
    data.write_text("v1\n")
    sh = shells("bash")
    sh.run("rw name src")
    sh.run(f"cat {data}")
    sh.run("echo same")
    assert rw("replay", "src", "--from", "2").returncode == 0
    data.write_text("v2\n")
    assert rw("replay", "src", "--from", "2").returncode == 0
    first, second = [s["id"] for s in reversed(rw_json("sessions")) if s["origin"] == "replay"]
    proc = rw("diff", first, second, "--json", check=False)
    result = json.loads(proc.stdout)
    assert proc.returncode == 1
    assert [s for s in result["steps"] if s["status"] != "same"] == [
        {"status": "output", "a": 2, "b": 2}
    ]

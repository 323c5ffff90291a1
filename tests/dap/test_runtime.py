"""Pieces of the debugger's runtime that need no shell: which commands a
function breakpoint names, hit conditions, logpoint braces."""

from __future__ import annotations

import pytest

from rewind_daemon.dap.runtime import (
    FunctionBreakpoint,
    _braced,
    check_hit_condition,
    hit_condition_holds,
)


@pytest.mark.parametrize(
    "command",
    [
        "kubectl get pods",
        "sudo kubectl apply -f x.yaml",
        "env KUBECONFIG=/k kubectl get ns",
        "A=1 B='2' kubectl version",
        "cat x.yaml | kubectl apply -f -",
        "if kubectl get ns prod; then\n  echo yes\nfi",
        "make && kubectl rollout status deploy/x",
        "(kubectl get pods)",
        "echo start\nkubectl get pods",
        "time kubectl get pods",
        "! kubectl get pods",
    ],
)
def test_a_function_breakpoint_matches_a_command_that_runs_it(command):
    assert FunctionBreakpoint(1, "kubectl").matches(command)


@pytest.mark.parametrize(
    "command",
    ["echo kubectl", "kubectl-foo get", "mykubectl get", "# kubectl get", "kubectl() { :; }"],
)
def test_a_function_breakpoint_ignores_a_mere_mention(command):
    assert not FunctionBreakpoint(1, "kubectl").matches(command)


def test_hit_conditions():
    assert [n for n in range(1, 8) if hit_condition_holds("3", n)] == [3]
    assert [n for n in range(1, 8) if hit_condition_holds(">=3", n)] == [3, 4, 5, 6, 7]
    assert [n for n in range(1, 8) if hit_condition_holds("> 5", n)] == [6, 7]
    assert [n for n in range(1, 8) if hit_condition_holds("<3", n)] == [1, 2]
    assert [n for n in range(1, 8) if hit_condition_holds("%3", n)] == [3, 6]
    assert check_hit_condition("== 2") is None
    assert "not 'often'" in (check_hit_condition("often") or "")


def test_logpoint_words_are_the_outermost_braces():
    assert _braced("a {$X} b {${#Y[@]}} c") == ["a ", "$X", " b ", "${#Y[@]}", " c"]
    assert _braced("no braces") == ["no braces"]
    assert _braced("{unclosed") == ["{unclosed"]


def test_a_step_that_will_not_end_on_pause_has_its_shell_started_again(tmp_path):
    """A trap of the script's own keeps the interrupt from ending the step: two
    seconds on, its shell is ended and started again as it was before the step."""
    import os
    import threading
    import time

    from rewind_daemon.dap.runtime import Debugger, Ended, Launch, Stopped
    from rewind_daemon.dap.script import split

    text = "\n".join(
        ["cd /usr; export KEEP=1", "trap 'echo trapped' INT", "while :; do :; done",
         'echo "after $KEEP $PWD"', ""]
    )  # fmt: skip
    told: list[tuple[str, str]] = []
    env = {k: v for k, v in os.environ.items() if not k.startswith("RW_")}
    debugger = Debugger(
        Launch(str(tmp_path / "loop.sh"), split(text), cwd=str(tmp_path), env=env),
        None,
        lambda category, out: told.append((category, out)),
    )
    try:
        assert debugger.next() == Stopped("step")
        assert debugger.next() == Stopped("step")
        outcome: list[object] = []
        runner = threading.Thread(target=lambda: outcome.append(debugger.continue_()))
        runner.start()
        time.sleep(0.5)
        began = time.monotonic()
        debugger.pause()
        runner.join(15)
        assert not runner.is_alive(), "the paused step never ended"
        assert outcome == [Stopped("pause", "paused")]
        assert 1.5 < time.monotonic() - began < 10
        assert debugger.history[-1][1].exit_code == 130
        said = "".join(out for category, out in told if category == "console")
        assert "pausing line 3 ended its shell" in said
        assert "trapped" in "".join(out for category, out in told if category == "stdout")
        assert isinstance(debugger.next(), Ended)  # the last step, in the state kept
        assert "after 1 /usr" in "".join(out for category, out in told if category == "stdout")
    finally:
        debugger.close()

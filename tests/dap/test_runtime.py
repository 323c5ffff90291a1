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

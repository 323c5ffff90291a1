"""The hooks print nothing the user did not ask for: not when the spool
cannot be opened, not under xtrace."""

from __future__ import annotations

import shutil

import pytest

from ..conftest import rw_json

SHELLS = ["bash", "zsh"]
TOLD = "rw: a command could not be recorded"


@pytest.mark.parametrize("kind", SHELLS)
def test_a_spool_that_cannot_be_opened_is_told_once_and_nothing_else(no_autostart, shells, kind):
    sh = shells(kind)
    assert sh.run("echo one") == "one"
    shutil.rmtree(no_autostart / "data" / "spool")
    outputs = [sh.run(f"echo {word}") for word in ("two", "three", "four", "five")]
    # Told once (after the line that could not be recorded), and nothing else.
    assert outputs[0] == "two" or outputs[0].startswith("two\n" + TOLD), outputs
    assert sum(TOLD in out for out in outputs) == 1, outputs
    assert [out.split("\n")[0] for out in outputs] == ["two", "three", "four", "five"]
    assert outputs[2:] == ["four", "five"], outputs
    assert not any("no such file" in out.lower() for out in outputs), outputs


XTRACE = {"bash": ("set -x", "set +x"), "zsh": ("setopt xtrace", "unsetopt xtrace")}


@pytest.mark.parametrize("kind", SHELLS)
def test_under_xtrace_the_users_commands_are_traced_and_the_hooks_are_not(daemon, shells, kind):
    sh = shells(kind)
    on, off = XTRACE[kind]
    sh.run(on)
    outs = [sh.run(line) for line in ("echo one", "echo two | cat", "true; echo three")]
    sh.run(off)
    assert sh.run("echo four") == "four"
    for out in outs:
        assert "__rw" not in out, outs
    # The user's own commands are still traced, and nothing else is.
    traced = [[line for line in out.split("\n") if line.startswith("+")] for out in outs]
    assert all(t for t in traced), outs
    assert all("echo" in line or "cat" in line or "true" in line for t in traced for line in t), (
        outs
    )
    steps = [s["command"] for s in rw_json("log", sh.session_id())]
    assert steps[1:4] == ["echo one", "echo two | cat", "true; echo three"]

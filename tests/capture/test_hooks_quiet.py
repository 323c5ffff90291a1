"""The hooks print nothing the user did not ask for: not when the spool
cannot be opened, not under xtrace."""

from __future__ import annotations

import shutil

import pytest

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

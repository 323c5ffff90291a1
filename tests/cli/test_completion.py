"""TAB completion that `rw init bash|zsh` sets up: commands, options, session
names and ids, `current` and `last`, step numbers; typed in real shells."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ..conftest import BIN, RW, rw
from ..shell import PROMPT, Shell

ZSH_COMPINIT = "autoload -Uz compinit && compinit -u -D"


def typed_with_tab(sh: Shell, before_tab: str, after_tab: str = "") -> str:
    """Type `before_tab`, TAB, then `after_tab` and Enter: what the line ran printed
    (with the line as the shell showed it)."""
    sh.p.send(before_tab + "\t")
    time.sleep(0.1)  # rw answers the TAB (a Python start) while the shell waits
    sh.p.send(after_tab + "\n")
    sh.p.expect_exact(PROMPT, timeout=30)
    return sh.p.before.replace("\r", "")


def recorded_shell(shells, kind: str) -> Shell:
    # zsh's completion system is loaded the usual way: compinit in the rc file
    sh = shells(kind, before_init=[ZSH_COMPINIT] if kind == "zsh" else [])
    sh.run("echo one")
    assert "is now named deploy-prod" in sh.run("rw name deploy-prod")
    return sh


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_tab_completes_commands_and_session_names(daemon, shells, kind):
    sh = recorded_shell(shells, kind)
    sid = sh.run("echo $RW_SESSION")
    # `rw show 1`: a step of the last session (this shell's), not ids that start so
    assert complete("bash_complete", "rw show 1") == ["1"]
    out = typed_with_tab(sh, "rw sh", "deploy-prod 1")  # `rw show deploy-prod 1`
    assert "command   echo one" in out
    out = typed_with_tab(sh, "rw log dep", " --limit 1")  # `rw log deploy-prod --limit 1`
    assert f"session {sid} (deploy-prod):" in out
    out = typed_with_tab(sh, "rw log --li", "1")  # an option
    assert f"session {sid} (deploy-prod):" in out and len(out.strip().splitlines()) == 3
    out = typed_with_tab(sh, f"rw export {sid[:10]}", " --from 1 --to 1")  # an id prefix
    assert "echo one" in out
    # where rw has nothing to offer (a FILE), file names, as without rw
    sh.run("echo 'echo from-a-file' > histfile-for-tab")
    out = typed_with_tab(sh, "rw import bash histfile-f", " --name from-tab")
    assert "imported 1 steps from histfile-for-tab into session" in out


def test_zsh_lists_step_numbers_with_their_commands(daemon, shells):
    sh = recorded_shell(shells, "zsh")
    sh.run("echo two")
    sh.p.send("rw show deploy-prod \t")
    sh.p.expect_exact("echo two", timeout=30)
    listing = sh.p.before.replace("\r", "")
    assert "1  -- echo one" in listing and "2  -- rw name deploy-prod" in listing
    sh.p.send("\x15\n")  # clear the line
    sh.p.expect_exact(PROMPT)


def test_zsh_compinit_after_rw_init_still_completes(daemon, shells):
    sh = shells("zsh", init=False)
    # as an rc file that runs compinit after rw's line; registered at the first prompt
    sh.run(f'eval "$({BIN}/rw init zsh)"; {ZSH_COMPINIT}')
    assert "__rw_compdef" not in sh.run("print -l $precmd_functions")  # once, not each prompt
    assert "command   print -l $precmd_functions" in typed_with_tab(sh, "rw sh", "last 1")


def complete(protocol: str, line: str) -> list[str]:
    """What rw answers for TAB at the end of `line` (click's protocol, as the
    shell code asks it)."""
    words = line.split()
    cword = len(words) if line.endswith(" ") else len(words) - 1
    env = {**os.environ, "COMP_WORDS": line, "COMP_CWORD": str(cword), "_RW_COMPLETE": protocol}
    out = subprocess.run([RW], env=env, capture_output=True, text=True, timeout=30).stdout
    if protocol == "bash_complete":
        return [item.split(",", 1)[1] for item in out.splitlines() if item]
    lines = out.split("\n")
    return [lines[i + 1] for i in range(0, len(lines) - 2, 3)]


def test_steps_and_sessions_for_every_command_that_takes_them(rw_home, tmp_path):
    history = tmp_path / "history"
    history.write_text("".join(f"echo step-{n}\n" for n in range(1, 13)))
    rw("import", "bash", str(history), "--name", "web")
    rw("import", "bash", str(history), "--name", "w\x1b]0;owned\x07")  # not offered
    sid = rw("sessions", "--json").stdout.split('"id": "')[1].split('"')[0]
    for protocol in ("bash_complete", "zsh_complete"):
        steps = [str(n) for n in range(1, 13)]
        assert complete(protocol, "rw show web ") == steps
        assert complete(protocol, "rw show web 1") == ["1", "10", "11", "12"]
        assert complete(protocol, "rw branch web ") == steps
        assert complete(protocol, "rw rewind web 1") == ["1", "10", "11", "12"]
        assert complete(protocol, "rw replay web --from ") == steps
        assert complete(protocol, "rw export web --to 3 --from 1") == ["1", "10", "11", "12"]
        assert complete(protocol, "rw breakpoint add web --step 9") == ["9"]
        assert complete(protocol, "rw show no-such ") == []
        for line in ("rw log w", "rw diff web w", "rw checkpoint list --session w"):
            assert complete(protocol, line) == ["web"], line
        assert complete(protocol, "rw log ")[:3] == ["current", "last", "web"]
        assert sid in complete(protocol, "rw log ")
        assert complete(protocol, f"rw replay {sid[:12]}") == [sid]
        assert complete(protocol, "rw breakpoint l") == ["list"]
        assert complete(protocol, "rw init ") == ["bash", "zsh"]

"""An interactive, hooked shell in a recorded state (for `rw branch --exec`)."""

from __future__ import annotations

import shlex
import subprocess
import tempfile
from pathlib import Path

from ..errors import RwError
from .travel import ShellState


def run(shell: str, state: ShellState, session: str, rw_bin: str) -> int:
    """Run `shell` interactively in `state`, recording into `session`; its exit status."""
    if shell not in ("bash", "zsh"):
        raise RwError(f"cannot open a {shell!r} shell; rw records bash and zsh")
    env = {**state.env, "RW_BRANCH_INTO": session}
    init = f'eval "$({shlex.quote(rw_bin)} init {shell})"\n'
    with tempfile.TemporaryDirectory(prefix="rw-branch-") as tmp:
        # The user's own rc file first, then the hooks (evaluating them twice is
        # harmless), so the shell records even when the rc file does not.
        if shell == "bash":
            rc = Path(tmp) / "bashrc"
            rc.write_text('[ -f "$HOME/.bashrc" ] && . "$HOME/.bashrc"\n' + init)
            argv = ["bash", "--rcfile", str(rc), "-i"]
        else:
            user_dir = state.env.get("ZDOTDIR") or state.env.get("HOME", "")
            Path(tmp, ".zshrc").write_text(
                f"ZDOTDIR={shlex.quote(user_dir)}\n"
                '[ -f "$ZDOTDIR/.zshrc" ] && . "$ZDOTDIR/.zshrc"\n' + init
            )
            env["ZDOTDIR"] = tmp
            argv = ["zsh", "-i"]
        try:
            return subprocess.call(argv, env=env, cwd=state.cwd)
        except OSError as e:
            raise RwError(f"cannot start {shell}: {e}") from None

"""How `rw record` starts the shell: with the user's rc files as usual and rw's
hooks loaded after them when they do not load them themselves (the hooks mark
each step's output; a shell without them records nothing).

bash gets an rc file of rw's (`--rcfile`) that sources `~/.bashrc` and then
evaluates `rw init bash` unless the hooks are there; zsh gets a `ZDOTDIR` of
rw's whose `.zshenv` and `.zshrc` source the user's own (from the user's
`ZDOTDIR`, or `$HOME`), put `ZDOTDIR` back as it was, and then do the same.
Evaluating the hooks twice is harmless, so an rc file that loads them later
(`.zlogin`) changes nothing. Both live in the private runtime directory.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path

from ..paths import ensure_private_dir

# The user's own ZDOTDIR while zsh reads rw's (unset: they had none).
USER_ZDOTDIR = "RW_USER_ZDOTDIR"

_BASHRC = """\
# rw record: your ~/.bashrc, then rw's hooks if it did not load them.
if [[ -f ~/.bashrc ]]; then
	. ~/.bashrc
fi
\\builtin declare -F __rw_precmd >/dev/null || eval "$({rw} init bash)"
"""

_ZSHENV = """\
# rw record: your .zshenv, read from your ZDOTDIR (or $HOME).
if (( ${{+{user}}} )); then
	ZDOTDIR=${user}
	\\builtin unset {user}
else
	\\builtin unset ZDOTDIR
fi
if [[ -f ${{ZDOTDIR:-$HOME}}/.zshenv ]]; then
	\\builtin source ${{ZDOTDIR:-$HOME}}/.zshenv
fi
# zsh reads .zshrc from ZDOTDIR: rw's, which reads yours.
typeset -g __rw_zdot_set=${{+ZDOTDIR}} __rw_zdot=${{ZDOTDIR-}}
ZDOTDIR={here}
"""

_ZSHRC = """\
# rw record: your .zshrc with your ZDOTDIR, then rw's hooks if it did not load them.
if (( __rw_zdot_set )); then
	ZDOTDIR=$__rw_zdot
else
	\\builtin unset ZDOTDIR
fi
\\builtin unset __rw_zdot_set __rw_zdot
if [[ -f ${{ZDOTDIR:-$HOME}}/.zshrc ]]; then
	\\builtin source ${{ZDOTDIR:-$HOME}}/.zshrc
fi
(( ${{+functions[__rw_precmd]}} )) || eval "$({rw} init zsh)"
"""


def _write(path: Path, text: str) -> None:
    """Written whole under a temporary name, then renamed: a shell starting at
    the same time reads the old file or the new one."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)
    os.replace(tmp, path)


def with_hooks(kind: str, env: dict[str, str], runtime_dir: Path, rw: str) -> list[str]:
    """The arguments that start `kind` interactive with rw's hooks loaded after
    the user's rc files; `env` is changed to match (zsh: ZDOTDIR)."""
    rw_q = shlex.quote(rw)
    if kind == "bash":
        rc = ensure_private_dir(runtime_dir) / "record.bashrc"
        _write(rc, _BASHRC.format(rw=rw_q))
        return ["--rcfile", str(rc), "-i"]
    here = ensure_private_dir(runtime_dir / "record-zsh")
    _write(here / ".zshenv", _ZSHENV.format(user=USER_ZDOTDIR, here=shlex.quote(str(here))))
    _write(here / ".zshrc", _ZSHRC.format(rw=rw_q))
    env.pop(USER_ZDOTDIR, None)
    if "ZDOTDIR" in env:
        env[USER_ZDOTDIR] = env["ZDOTDIR"]
    env["ZDOTDIR"] = str(here)
    return ["-i"]

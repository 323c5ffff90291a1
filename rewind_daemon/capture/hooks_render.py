"""Rendering the shell hook templates for `rw init`."""

from __future__ import annotations

import getpass
import os
import shlex
import shutil
import sqlite3
import sys
from importlib import resources

from ..config import Config
from ..errors import RwError
from ..paths import Paths, ensure_private_dir

SHELLS = ("bash", "zsh")

# The shell function `rw` runs the installed program by absolute path, so a
# PATH change cannot break it. Commands that change this shell (going back,
# branching from the last failure: `rw branch` with options only) print
# shell code, which the function evaluates.
_FUNCTION = """
function rw {
	local __rw_eval= __rw_a __rw_lost=
	case ${1-} in
	doctor)
		# Only this shell can tell that its prompt hook was replaced after init.
		[[ " ${PROMPT_COMMAND[*]-} ${precmd_functions[*]-} " == *__rw_precmd* ]] ||
			__rw_lost=@PROMPT_HOOK@ ;;
	back) __rw_eval=1 ;;
	rewind) [[ " $* " == *" --exec "* ]] || __rw_eval=1 ;;
	branch)
		__rw_eval=1
		for __rw_a in "${@:2}"; do
			[[ $__rw_a == -* ]] || __rw_eval=
		done ;;
	esac
	if [[ -n $__rw_eval ]]; then
		local __rw_code
		__rw_code=$(RW_EVAL=@SHELL@ "$__rw_bin" "$@") || return
		eval "$__rw_code"
	else
		RW_PROMPT_HOOK_LOST=$__rw_lost "$__rw_bin" "$@"
	fi
}
"""


def rw_executable() -> str:
    argv0 = sys.argv[0] if sys.argv else ""
    if os.path.basename(argv0) == "rw" and os.path.exists(argv0):
        return os.path.abspath(argv0)
    found = shutil.which("rw")
    if found:
        return os.path.abspath(found)
    raise RwError("cannot find the rw program on PATH; reinstall with install.sh")


def _tty() -> str:
    for fd in (0, 2, 1):
        try:
            return os.ttyname(fd)
        except OSError:
            continue
    return ""


def _watching(paths: Paths, config: Config) -> bool:
    """Whether paths are watched: then the shell makes its acknowledgement FIFO
    at once, so its first commands wait for their checkpoints even while the
    daemon is still starting."""
    if config.watch_paths:
        return True
    from ..store import Store

    try:
        store = Store.open_for_reading(paths.db)
    except RwError:
        return False
    if store is None:
        return False
    try:
        return bool(store.watches())
    except sqlite3.Error:  # a store from before watched paths
        return False
    finally:
        store.close()


def render(shell: str, paths: Paths, config: Config, record: bool = False) -> str:
    """The hook code for `shell`; with `record` (or `[record] output = true`),
    a new terminal shell runs under `rw record`."""
    if shell not in SHELLS:
        raise RwError(f"unsupported shell {shell!r}; choose one of: {', '.join(SHELLS)}")
    ensure_private_dir(paths.data_dir)
    ensure_private_dir(paths.spool_dir)
    ensure_private_dir(paths.runtime_dir)  # which is the scratch dir too
    template = resources.files("rewind_daemon.hooks").joinpath(f"rw.{shell}").read_text()
    values = {
        "@RW_BIN@": rw_executable(),
        "@RW_SPOOL_DIR@": str(paths.spool_dir),
        "@RW_SCRATCH_DIR@": str(paths.scratch_dir),
        "@RW_WATCHING@": "1" if _watching(paths, config) else "",
        "@RW_TIMEOUT@": f"{config.watch_timeout:g}",
        "@RW_PID_FILE@": str(paths.pid_file),
        "@RW_STOP_FILE@": str(paths.stop_file),
        "@RW_AUTOSTART@": "1" if config.autostart else "0",
        "@RW_TTY@": _tty(),
        "@RW_USER@": getpass.getuser(),
        "@RW_RECORD@": "1" if record or config.record_output else "",
    }
    for key, value in values.items():
        template = template.replace(key, shlex.quote(value))
    completion = resources.files("rewind_daemon.hooks").joinpath(f"complete.{shell}").read_text()
    hook = "precmd_functions" if shell == "zsh" else "PROMPT_COMMAND"
    function = _FUNCTION.replace("@SHELL@", shell).replace("@PROMPT_HOOK@", hook)
    return template + function + completion

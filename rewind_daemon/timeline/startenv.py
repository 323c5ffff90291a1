"""What a recorded environment may carry into the shell that runs steps.

A recorded environment is data. Given to a new bash as its environment, some
of it would be code: bash sources `$BASH_ENV` (expanded, command substitution
and all) before its first command, imports `BASH_FUNC_name%%` as functions,
and takes its options from `SHELLOPTS` and `BASHOPTS`. None of that ran in the
live, interactive shell the steps were typed in either. So the executor's
shell starts without the variables a shell acts on at start-up; the user's
own are set inside it once it runs, as plain exported variables, so that the
programs the steps start see them as they did live.

A session from elsewhere (an imported file, a session pulled from a host) is
not the user's: its environment also loses, at import and again when it is
replayed, the variables that make the programs a step runs load or run code
of the file's choosing (the dynamic loader's, interpreters' start-up hooks,
commands that tools run: `LD_PRELOAD`, `PYTHONPATH`, `GIT_SSH_COMMAND`,
`EDITOR`, ...) and `PATH`; a replay gives those names the replaying user's own
values. A list like this cannot name every program's variables: what is left
is data that a command typed in the session may read, as it did there."""

from __future__ import annotations

import re

_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")

# Acted on by bash (bash(1): INVOCATION, Shell Variables, FUNCTIONS) or zsh
# (zsh(1): STARTUP/SHUTDOWN FILES, zshparam(1)) as a non-interactive shell
# starts, or as it runs its first commands: start-up files, options, prompts
# expanded under xtrace, where xtrace goes, compatibility and POSIX modes.
# Functions exported by bash (BASH_FUNC_*) are not valid names: never passed.
SHELL_STARTUP = frozenset({
    "BASH_ENV", "ENV", "SHELLOPTS", "BASHOPTS", "POSIXLY_CORRECT", "BASH_COMPAT",
    "PS4", "BASH_XTRACEFD", "BASH_LOADABLES_PATH", "EXECIGNORE", "GLOBIGNORE",
    "PROMPT_COMMAND", "PS0", "PS1", "PS2", "PS3", "PROMPT", "INPUTRC", "HISTFILE",
    "ZDOTDIR", "FPATH", "MODULE_PATH", "STTY", "NULLCMD", "READNULLCMD",
})  # fmt: skip

# Make the programs a step runs load or run code named by the value: the
# dynamic loader and glibc (every LD_ name, and glibc's list of variables it
# ignores in set-uid programs), interpreters, and the commands tools run.
_LOADER_PREFIX = "LD_"
RUNS_CODE = frozenset({
    "PATH", "GCONV_PATH", "GETCONF_DIR", "HOSTALIASES", "LOCALDOMAIN", "LOCPATH",
    "MALLOC_TRACE", "NIS_PATH", "NLSPATH", "RESOLV_HOST_CONF", "RES_OPTIONS", "TZDIR",
    "PYTHONSTARTUP", "PYTHONPATH", "PYTHONHOME", "PYTHONUSERBASE", "PYTHONBREAKPOINT",
    "PERL5OPT", "PERL5LIB", "PERLLIB", "PERL5DB", "RUBYOPT", "RUBYLIB",
    "NODE_OPTIONS", "NODE_PATH", "JAVA_TOOL_OPTIONS", "_JAVA_OPTIONS", "JDK_JAVA_OPTIONS",
    "LUA_INIT", "LUA_PATH", "LUA_CPATH", "TCLLIBPATH", "R_PROFILE", "R_PROFILE_USER",
    "GIT_SSH", "GIT_SSH_COMMAND", "GIT_EXTERNAL_DIFF", "GIT_PAGER", "GIT_EDITOR",
    "GIT_ASKPASS", "GIT_EXEC_PATH", "GIT_CONFIG_GLOBAL", "GIT_CONFIG_SYSTEM",
    "GIT_CONFIG_COUNT", "GIT_TEMPLATE_DIR", "GIT_PROXY_COMMAND", "SSH_ASKPASS",
    "EDITOR", "VISUAL", "PAGER", "MANPAGER", "MANOPT", "LESSOPEN", "LESSCLOSE",
    "BROWSER", "SUDO_ASKPASS", "RSYNC_RSH", "RSYNC_CONNECT_PROG", "CVS_RSH",
    "SHELL", "XDG_CONFIG_DIRS", "OPENSSL_CONF", "OPENSSL_ENGINES",
})  # fmt: skip


def is_name(name: str) -> bool:
    """A name a shell can hold as a variable (BASH_FUNC_x%% is not one)."""
    return bool(_NAME.match(name))


def at_startup(name: str) -> bool:
    """Whether a shell acts on `name` as it starts, or cannot hold it at all."""
    return name in SHELL_STARTUP or not is_name(name)


def runs_code(name: str) -> bool:
    """Whether programs run or load code named by `name`'s value."""
    return name.startswith(_LOADER_PREFIX) or name in RUNS_CODE or name.startswith("GIT_CONFIG_")


def untrusted(name: str) -> bool:
    """Whether a session from elsewhere may not set `name`."""
    return at_startup(name) or runs_code(name)


def foreign_env(env: dict[str, str]) -> tuple[dict[str, str], list[str]]:
    """A foreign session's environment without what it may not set, and the
    names left out (sorted)."""
    dropped = sorted(n for n in env if untrusted(n))
    return {k: v for k, v in env.items() if not untrusted(k)}, dropped


def split_start_env(env: dict[str, str]) -> tuple[dict[str, str], dict[str, str]]:
    """The environment a shell may start with, and the variables to set inside
    it once it runs (valid names only: the others are dropped)."""
    start = {k: v for k, v in env.items() if not at_startup(k)}
    later = {k: v for k, v in env.items() if k in SHELL_STARTUP}
    return start, later


def export_code(variables: dict[str, str]) -> str:
    """bash and zsh code that exports `variables` (valid names), values quoted."""
    return "\n".join(
        f"\\builtin export {name}={_quote(value)}" for name, value in sorted(variables.items())
    )


def _quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"

"""Going back in a live shell: what `rw back` and `rw branch` restore, and the
shell code that restores it."""

from __future__ import annotations

import os
import re
import shlex
from dataclasses import dataclass, field

from .. import display
from ..errors import NotFound, RwError
from ..redact import MASK
from ..store import StepRow, Store
from . import startenv
from .rw_commands import is_rw_command

# Variables bound to the terminal (or multiplexer pane, or connection) a shell
# runs in: copied into another terminal's shell they would point it at the
# first one's pane, window, tty or display. The README lists them.
TERMINAL_BOUND = frozenset({
    "TERM", "COLORTERM", "TERM_PROGRAM", "TERM_PROGRAM_VERSION", "TERM_SESSION_ID",
    "TMUX", "TMUX_PANE", "STY", "WINDOW", "ZELLIJ", "ZELLIJ_PANE_ID", "ZELLIJ_SESSION_NAME",
    "WINDOWID", "DISPLAY", "WAYLAND_DISPLAY", "XAUTHORITY",
    "SSH_TTY", "SSH_CONNECTION", "SSH_CLIENT", "SSH_AUTH_SOCK", "GPG_TTY",
    "VTE_VERSION", "GNOME_TERMINAL_SCREEN", "GNOME_TERMINAL_SERVICE",
    "KONSOLE_DBUS_SERVICE", "KONSOLE_DBUS_SESSION", "KONSOLE_DBUS_WINDOW", "KONSOLE_VERSION",
    "ITERM_SESSION_ID", "KITTY_WINDOW_ID", "KITTY_PID", "KITTY_LISTEN_ON",
    "ALACRITTY_WINDOW_ID", "ALACRITTY_SOCKET", "WEZTERM_PANE", "WEZTERM_UNIX_SOCKET",
    "TERMINATOR_UUID", "TILIX_ID", "WT_SESSION", "WT_PROFILE_ID", "INSIDE_EMACS",
    "VSCODE_IPC_HOOK_CLI", "VSCODE_GIT_IPC_HANDLE",
})  # fmt: skip
# Variables that describe the running shell or terminal rather than the work
# done in it: going back leaves them alone.
UNTOUCHED = (
    frozenset({"_", "PWD", "OLDPWD", "SHLVL", "RW_SESSION", "RW_EVAL", "COLUMNS", "LINES"})
    | TERMINAL_BOUND
)
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")


@dataclass
class Restore:
    """The state just before `target`, and how it differs from now."""

    session: str
    target: StepRow
    branch_point: int
    cwd: str | None = None  # where to cd, when it differs from now
    cwd_missing: bool = False  # the directory no longer exists
    env_known: bool = True
    set_env: dict[str, str] = field(default_factory=dict)
    was: dict[str, str] = field(default_factory=dict)  # values now, of the changed names
    unset_env: list[str] = field(default_factory=list)
    redacted: list[str] = field(default_factory=list)  # stored redacted: left as they are
    edit: str | None = None  # a command to put in front of the user
    edit_partial: bool = False  # the failed command is not put there: known only in part

    @property
    def changes_nothing(self) -> bool:
        return self.cwd is None and not self.set_env and not self.unset_env


def here() -> str:
    """The current directory, or where the shell thinks it is ($PWD, "" unset)
    when it was deleted (os.getcwd() raises then)."""
    try:
        return os.getcwd()
    except OSError:
        return os.environ.get("PWD", "")


_ANSI_C = re.compile(r"[\\']|" + display.CONTROL_BUT_LINES.pattern)


def _ansi_c_char(m: re.Match[str]) -> str:
    c = m.group()
    if c in "\\'":
        return "\\" + c
    if c == "\x1b":
        return "\\e"
    # a byte that was not UTF-8 (a surrogate) is that byte again
    return "".join(f"\\x{b:02x}" for b in c.encode("utf-8", "surrogateescape"))


def quote(text: str) -> str:
    """`text` as one bash or zsh word that gives back its exact bytes:
    single-quoted, or `$'...'` when it holds control characters or bytes that
    are not UTF-8, so that the code shows them as escapes."""
    if not display.has_control(text, lines=True):
        return shlex.quote(text)
    return "$'" + _ANSI_C.sub(_ansi_c_char, text) + "'"


def env_changes(
    before: dict[str, str], after: dict[str, str]
) -> list[tuple[str, str | None, str | None]]:
    """(name, value before, value after) of the variables that differ (None: unset),
    leaving out UNTOUCHED names and names a shell cannot assign."""
    return [
        (name, before.get(name), after.get(name))
        for name in sorted(set(before) | set(after))
        if name not in UNTOUCHED and _NAME.match(name) and before.get(name) != after.get(name)
    ]


def _completed_steps(store: Store, sid: str) -> list[StepRow]:
    """The finished steps a user counts: rw's own (`rw log`, `rw back 2 --dry-run`)
    are not among them, so a dry run and the real one land on the same step."""
    steps = store.steps(sid)
    # The last step still running is the `rw back` (or `rw branch`) asking.
    if steps and steps[-1].ended_at is None:
        steps.pop()
    return [s for s in steps if not is_rw_command(s.command)]


def restore_before(
    store: Store, sid: str, target: StepRow, now_env: dict[str, str], now_cwd: str
) -> Restore:
    plan = Restore(session=sid, target=target, branch_point=target.number - 1)
    cwd = target.cwd_before
    if cwd and not os.path.isdir(cwd):
        plan.cwd_missing = True  # (also when the shell is still in it, deleted)
    elif cwd and os.path.realpath(cwd) != os.path.realpath(now_cwd):
        plan.cwd = cwd
    env_id = store.env_before(sid, target.number)
    if env_id is None:
        plan.env_known = False
        return plan
    # Going from now (new) back to then (old).
    for name, new, old in env_changes(now_env, store.env(env_id)):
        if old is not None and MASK in old:
            plan.redacted.append(name)
        elif old is None:
            plan.unset_env.append(name)
        else:
            plan.set_env[name] = old
            if new is not None:
                plan.was[name] = new
    return plan


def plan_back(store: Store, sid: str, n: int, now_env: dict[str, str], now_cwd: str) -> Restore:
    steps = _completed_steps(store, sid)
    if n > len(steps):
        raise RwError(
            f"session {sid} has {len(steps)} finished step(s) besides rw's own; cannot go back {n}"
        )
    return restore_before(store, sid, steps[-n], now_env, now_cwd)


def plan_branch_from_failure(
    store: Store, sid: str, now_env: dict[str, str], now_cwd: str
) -> Restore:
    failed = [s for s in _completed_steps(store, sid) if s.exit_code not in (None, 0)]
    if not failed:
        raise NotFound(f"session {sid} has no failed step to branch from")
    plan = restore_before(store, sid, failed[-1], now_env, now_cwd)
    # (Half a line is not put back as if it were the line: describe says why.)
    plan.edit = None if failed[-1].partial else failed[-1].command
    plan.edit_partial = failed[-1].partial
    return plan


def step_checkpoint(store: Store, sid: str, step: int) -> int | None:
    """The file checkpoint taken just before `step`; a branch's copied steps
    have theirs in the session they were copied from."""
    seen = set()
    while sid not in seen:
        seen.add(sid)
        cid = store.step_checkpoint(sid, step)
        if cid is not None:
            return cid
        session = store.get_session(sid)
        if session is None or not session.parent_id or (session.branch_point or 0) < step:
            return None
        sid = session.parent_id
    return None


def shell_code(plan: Restore, shell: str) -> str:
    """Code for the `rw` shell function to evaluate (bash and zsh alike)."""
    q = quote
    lines = []
    if plan.cwd is not None:
        lines.append(f"\\builtin cd -- {q(plan.cwd)}")
    for name, value in plan.set_env.items():
        lines.append(f"\\builtin export {name}={q(value)}")
    if plan.unset_env:
        lines.append("\\builtin unset " + " ".join(plan.unset_env))
    lines.append(f"__rw_branch {plan.branch_point} {q(plan.session)}")
    if plan.edit is not None:
        if shell == "zsh":
            lines.append(f"\\builtin print -z -- {q(plan.edit)}")
        else:
            lines.append(f"\\builtin history -s -- {q(plan.edit)}")
    return "\n".join(lines) + "\n"


def describe(plan: Restore, dry_run: bool, shell: str | None = None) -> list[str]:
    t = plan.target
    first = t.command.split("\n", 1)[0]
    verb = "would go" if dry_run else "went"
    out = [f"{verb} back to before step {t.number} of {plan.session}: {first}"]
    if plan.cwd is not None:
        out.append(f"  cd {plan.cwd}")
    if plan.cwd_missing:
        out.append(f"  cannot cd to {t.cwd_before}: it no longer exists; staying here")
    if not plan.env_known:
        out.append("  the environment before that step was not recorded; it is left as it is")
    for name, value in plan.set_env.items():
        was = f" (was {_short(plan.was[name])})" if name in plan.was else ""
        out.append(f"  export {name}={_short(value)}{was}")
    for name in plan.unset_env:
        out.append(f"  unset {name}")
    for name in plan.redacted:
        out.append(f"  {name} left as it is: its recorded value was redacted")
    if plan.changes_nothing and plan.env_known and not plan.cwd_missing:
        out.append("  the directory and environment were already as they were then")
    if not dry_run:
        out.append(
            f"  what you run next records into a new branch of this session (after step "
            f"{plan.branch_point}); the history so far is kept"
        )
        if plan.edit is not None:
            where = "on your command line" if shell == "zsh" else "one Up-arrow away"
            out.append(f"  the failed command is {where}: {first}")
        elif plan.edit_partial:
            out.append(
                "  the failed command is not put back: only the first command of its line "
                "was recorded (bash with history off)"
            )
    return out


def _short(value: str, width: int = 60) -> str:
    value = value.replace("\n", "\\n")
    return value if len(value) <= width else value[: width - 1] + "…"


@dataclass
class ShellState:
    """Where a step left the shell: its directory and exported environment."""

    cwd: str
    env: dict[str, str]
    redacted: list[str]
    foreign: bool = False  # an imported (or pulled) session's state


def is_foreign(store: Store, sid: str) -> bool:
    """Whether a session came from elsewhere (an imported file, a pulled host):
    its record is another's word, not what was typed here."""
    row = store.get_session(sid)
    return row is not None and row.origin == "import"


def state_after(store: Store, sid: str, step: int, now_env: dict[str, str]) -> ShellState:
    """The state after `step` (0: as the session started); values that were
    redacted, and the names in UNTOUCHED, keep their value from `now_env`; so do,
    in a foreign session, the names it may not set (startenv.untrusted)."""
    session = store.get_session(sid)
    if session is None:
        raise NotFound(f"no session {sid!r}")
    foreign = session.origin == "import"
    if step == 0:
        cwd = session.cwd or here()
    else:
        row = store.step(sid, step)
        if row is None:
            raise NotFound(f"session {sid} has no step {step}")
        cwd = row.cwd_after or row.cwd_before or here()
    env_id = store.env_before(sid, step + 1)
    recorded = store.env(env_id) if env_id is not None else dict(now_env)
    env = {k: v for k, v in now_env.items() if k in UNTOUCHED}
    redacted = []
    for name, value in recorded.items():
        if name in UNTOUCHED:
            continue
        if foreign and startenv.untrusted(name):
            if name in now_env:
                env[name] = now_env[name]
            continue
        if MASK in value:
            redacted.append(name)
            if name in now_env:
                env[name] = now_env[name]
            continue
        env[name] = value
    if foreign:  # what it may not set is yours, set or not in its record
        env.update({k: v for k, v in now_env.items() if startenv.runs_code(k) and k not in env})
    # A directory gone since: here, or home when here is gone too.
    cwd = next((d for d in (cwd, here(), os.path.expanduser("~")) if os.path.isdir(d)), "/")
    return ShellState(cwd, env, redacted, foreign)

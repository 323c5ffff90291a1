"""Re-running recorded sessions: replay and breakpoints."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import click

from ..capture import records
from ..display import escaped
from ..errors import EXIT_PROBLEM, RwError
from ..redact import MASK
from ..store import StepRow
from ..timeline import breakpoints as bps
from ..timeline.history import current_session_id
from ..timeline.replay import (
    BACK,
    CONTINUE,
    EDIT,
    NEXT,
    QUIT,
    SHELL,
    SKIP,
    Action,
    Controller,
    Pause,
    Replay,
    Secret,
    foreign_notice,
    replaying_sessions,
)
from ..timeline.rw_commands import is_rw_command
from ..timeline.travel import is_foreign
from . import CONTEXT, cli
from .common import (
    ID,
    POSITIVE,
    complete_session,
    complete_step,
    get_config,
    get_paths,
    json_option,
    print_json,
    resolve_session,
    synced_store,
    synced_store_for_writing,
)

_KEYS = {"c": CONTINUE, "n": NEXT, "s": SKIP, "e": EDIT, "h": SHELL, "b": BACK, "q": QUIT}


class TerminalController(Controller):
    """Asks at each pause, on the terminal."""

    def __init__(self, shell: str):
        self.shell = shell

    def pause(
        self, pause: Pause, state: tuple[str, dict[str, str]], definitions: Callable[[], str]
    ) -> Action:
        click.echo(f"\nrw: paused before step {pause.number} ({pause.reason})", err=True)
        click.echo(f"rw:   {escaped(pause.command, lines=True)}", err=True)
        while True:
            answer = click.prompt(
                "rw: [c]ontinue [n]ext [s]kip [e]dit s[h]ell [b]ack [q]uit",
                default="c", show_default=False, err=True,
            ).strip().lower()  # fmt: skip
            kind = _KEYS.get(answer[:1]) or (answer if answer in _KEYS.values() else None)
            if kind is None:
                click.echo("rw: answer c, n, s, e, h, b or q", err=True)
                continue
            if kind == EDIT:
                shown = escaped(pause.command)
                return Action(EDIT, command=click.prompt(f"rw: command [{shown}]",
                              default=pause.command, show_default=False, err=True))  # fmt: skip
            if kind == SHELL:
                if not os.path.isdir(state[0]):
                    click.echo(f"rw: no shell: the paused directory {escaped(state[0])} "
                               "no longer exists", err=True)  # fmt: skip
                    continue
                cwd, env, defs = _subshell(self.shell, *state, definitions())
                return Action(SHELL, state=(cwd, env), definitions=defs)
            return Action(kind)

    def secret(self, secret: Secret) -> str:
        click.echo(
            f"rw: step {secret.step} holds a value stored redacted: {escaped(secret.where)}",
            err=True,
        )
        what = secret.name or f"value {secret.index}, as it stood in the command"
        return click.prompt(f"rw: {what} (not shown, not stored)", hide_input=True, err=True)


def _subshell(
    shell: str, cwd: str, env: dict[str, str], definitions: str
) -> tuple[str, dict[str, str], str]:
    """An interactive shell in the paused state (with its functions and aliases);
    the directory, environment and definitions it leaves carry on."""
    with tempfile.TemporaryDirectory(prefix="rw-paused-") as tmp:
        out = Path(tmp)
        (out / "defs").write_text(definitions)
        click.echo("rw: a shell in the paused state; exit it to go on", err=True)
        if shell == "zsh":
            (out / ".zshrc").write_text(
                f". {out}/defs\nPS1='(rw paused) %~%# '\n"
                "zshexit() {\n"
                f"  pwd > {out}/cwd; {{ typeset -f; alias -L; }} > {out}/defs\n"
                "  local k; for k in ${(k)parameters[(R)*export*]}; do "
                f'print -rN -- "$k=${{(P)k}}"; done > {out}/env\n'
                "}\n"
            )
            subprocess.call(["zsh", "-i"], env={**env, "ZDOTDIR": tmp}, cwd=cwd)
        else:
            (out / "rc").write_text(
                f". {out}/defs\nPS1='(rw paused) \\w\\$ '\n"
                f"trap 'pwd > {out}/cwd; export -p > {out}/env; "
                f"{{ declare -f; alias -p; }} > {out}/defs' EXIT\n"
            )
            subprocess.call(["bash", "--rcfile", str(out / "rc"), "-i"], env=env, cwd=cwd)
        try:
            text = (out / "env").read_bytes().decode("utf-8", "surrogateescape")
            new_env = (
                records.parse_list(text.split("\0")) if shell == "zsh"
                else records.parse_declare(text)
            )  # fmt: skip
            if "ZDOTDIR" not in env:
                new_env.pop("ZDOTDIR", None)  # ours, for the paused shell only
            return (out / "cwd").read_text().strip() or cwd, new_env, (out / "defs").read_text()
        except OSError:
            return cwd, env, definitions


def _stream(chunk: bytes) -> None:
    sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()


@cli.command("replay", context_settings=CONTEXT)
@click.argument("session", shell_complete=complete_session)
@click.option(
    "--from", "first", type=POSITIVE, shell_complete=complete_step,
    help="First step to run.",
)  # fmt: skip
@click.option(
    "--to", "last", type=POSITIVE, shell_complete=complete_step,
    help="Last step to run.",
)  # fmt: skip
@click.option("--step", "every_step", is_flag=True, help="Pause before every step.")
@click.option("--no-breakpoints", is_flag=True, help="Ignore the session's breakpoints.")
@click.option(
    "--create-dirs", is_flag=True,
    help="Make a step's directory when it no longer exists (default: stop before the step).",
)  # fmt: skip
@click.option(
    "--env-secrets", is_flag=True,
    help="Take a redacted NAME=<redacted> value from the variable NAME of this environment.",
)  # fmt: skip
@click.option("--dry-run", is_flag=True, help="List the steps that would run; run nothing.")
def replay_cmd(
    session: str,
    first: int | None,
    last: int | None,
    every_step: bool,
    no_breakpoints: bool,
    create_dirs: bool,
    env_secrets: bool,
    dry_run: bool,
) -> None:
    """Re-run SESSION's steps in one persistent shell, from the state before --from.

    cd, export, functions and aliases carry from step to step as they did
    live. Output streams as it comes and is recorded per step; the run
    becomes a new session (origin replay). At a breakpoint, or every step
    with --step, it pauses and asks what to do; without a terminal a
    breakpoint stops the replay with exit status 1.

    rw's own commands (rw log, rw back 2, rw replay ...) are not run again:
    each is shown, and what it changed in the shell is applied. A step runs
    only in the directory it ran in: when that is gone the replay stops
    (or, with --create-dirs, makes it). A value stored redacted is asked
    for (or, with --env-secrets, taken from the environment); without a
    terminal the replay stops before that step.

    \b
    Example:
        rw breakpoint add deploy --on-error
        rw replay deploy --from 40
        API_TOKEN=... rw replay deploy --env-secrets
    """
    p = get_paths()
    store = synced_store_for_writing(p)
    sid = resolve_session(store, session)
    steps = [s for s in store.steps(sid) if (first or 1) <= s.number <= (last or s.number)]
    if not steps:
        raise RwError(f"session {sid} has no steps in that range")
    if dry_run:
        if is_foreign(store, sid):
            _say(foreign_notice(sid))
        for s in steps:
            click.echo(f"{s.number:>5}  {escaped(s.command, lines=True)}{_note(s)}")
        return
    if sid == current_session_id() or sid in replaying_sessions(store):
        raise RwError(
            f"this rw replay runs inside session {sid}, so it cannot replay it (that would "
            "replay itself); replay it from another shell"
        )
    points = bps.BreakpointSet([] if no_breakpoints else bps.listing(store, sid))
    interactive = sys.stdin.isatty() and sys.stderr.isatty()
    row = store.get_session(sid)
    shell = "zsh" if row and row.shell == "zsh" else "bash"
    config = get_config(p)
    replay = Replay(
        store, sid, steps, breakpoints=points, every_step=every_step,
        controller=TerminalController(shell) if interactive else Controller(), sink=_stream,
        shell=shell, create_dirs=create_dirs, env_secrets=env_secrets,
        redactor=config.redactor(), max_output=config.max_step_output, say=_say,
    )  # fmt: skip
    click.echo(f"rw: replaying {len(steps)} step(s) of {escaped(sid)}", err=True)
    try:
        result = replay.run()
    except RwError as e:
        click.echo(f"rw: {escaped(str(e))}", err=True)
        raise SystemExit(e.exit_code) from None
    click.echo(f"rw: recorded as session {result.session}", err=True)
    if result.stopped:
        click.echo(f"rw: {escaped(result.stopped)}", err=True)
        raise SystemExit(EXIT_PROBLEM)


def _note(step: StepRow) -> str:
    """What a dry run says of a step that will not simply run."""
    if is_rw_command(step.command):
        return "  (rw's own: not run)"
    notes = []
    if MASK in step.command:
        notes.append("asks for a value stored redacted")
    if step.cwd_before and not os.path.isdir(step.cwd_before):
        notes.append(f"its directory {escaped(step.cwd_before)} no longer exists")
    return f"  ({'; '.join(notes)})" if notes else ""


def _say(line: str) -> None:
    click.echo(f"rw: {escaped(line)}", err=True)


@cli.group("breakpoint", context_settings=CONTEXT)
def breakpoint_group() -> None:
    """Breakpoints of a session, used by replay and rewind.

    \b
    Example:
        rw breakpoint add deploy --pattern 'ERROR' --in output
    """


@breakpoint_group.command("add", context_settings=CONTEXT)
@click.argument("session", shell_complete=complete_session)
@click.option(
    "--step",
    type=POSITIVE,
    shell_complete=complete_step,
    help="Break before step N.",
)
@click.option("--pattern", help="Break where this regex matches.")
@click.option(
    "--in", "target", type=click.Choice(["command", "output"]), default="command",
    help="What --pattern looks at (default: the command, before it runs).",
)  # fmt: skip
@click.option("--on-error", is_flag=True, help="Break after a step that fails.")
def breakpoint_add(
    session: str, step: int | None, pattern: str | None, target: str, on_error: bool
) -> None:
    """Add a breakpoint to SESSION (an invalid regex is refused).

    \b
    Example:
        rw breakpoint add deploy --step 47
        rw breakpoint add deploy --on-error
    """
    p = get_paths()
    store = synced_store_for_writing(p)
    sid = resolve_session(store, session)
    for bp in bps.add(store, sid, step=step, pattern=pattern, target=target, on_error=on_error):
        click.echo(f"breakpoint {bp.id}: {escaped(bp.describe())}")


@breakpoint_group.command("list", context_settings=CONTEXT)
@click.argument("session")
@json_option
def breakpoint_list(session: str, as_json: bool) -> None:
    """List SESSION's breakpoints.

    \b
    Example:
        rw breakpoint list deploy
    """
    store = synced_store(get_paths())
    sid = resolve_session(store, session)
    assert store is not None
    points = bps.listing(store, sid)
    if as_json:
        print_json([bp.to_json() for bp in points])
        return
    for bp in points:
        click.echo(f"{bp.id:>4}  {escaped(bp.describe())}")


@breakpoint_group.command("rm", context_settings=CONTEXT)
@click.argument("session")
@click.argument("bp_id", metavar="ID", type=ID)
def breakpoint_rm(session: str, bp_id: int) -> None:
    """Remove breakpoint ID from SESSION.

    \b
    Example:
        rw breakpoint rm deploy 2
    """
    p = get_paths()
    store = synced_store_for_writing(p)
    bps.remove(store, resolve_session(store, session), bp_id)
    click.echo(f"removed breakpoint {bp_id}")

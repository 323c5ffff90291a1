"""Commands that move a live shell through its history: back, branch."""

from __future__ import annotations

import os

import click

from ..capture import client
from ..capture.hooks_render import rw_executable
from ..display import escaped
from ..errors import EXIT_INCOMPLETE, EXIT_PROBLEM, NotFound, RwError
from ..timeline import subshell, travel
from ..timeline.history import current_session_id
from ..timeline.rw_commands import is_rw_command
from . import CONTEXT, cli
from .common import (
    POSITIVE,
    complete_session,
    complete_step,
    get_paths,
    one_line,
    resolve_session,
    synced_store,
)


def _live_shell(dry_run: bool) -> tuple[str, str]:
    """(session id, shell) of the calling hooked shell."""
    sid = current_session_id()
    if not sid:
        raise NotFound("this shell is not recorded by rw (no RW_SESSION); see rw doctor")
    shell = os.environ.get("RW_EVAL", "")
    if shell not in ("bash", "zsh") and not dry_run:
        raise RwError(
            "this command changes your shell, so it runs through the rw shell function: "
            'use it in a shell set up with eval "$(rw init bash)" (or zsh)'
        )
    return sid, shell


def _apply(plan: travel.Restore, shell: str, dry_run: bool, yes: bool) -> None:
    for line in travel.describe(plan, dry_run, shell):
        click.echo(f"rw: {escaped(line)}", err=True)
    restore_files(plan.session, plan.target.number, dry_run, yes)
    if not dry_run:
        click.echo(travel.shell_code(plan, shell), nl=False)


def restore_files(sid: str, step: int, dry_run: bool, yes: bool) -> None:
    """Watched files back as they were before `step`: shown, asked, applied.
    Everything goes to stderr: stdout is the shell code the rw function runs."""
    from ..checkpoints.checkpoint import watches
    from .checkpoint import confirm, open_checkpoints, print_report

    def say(line: str) -> None:
        click.echo(f"rw: {escaped(line)}", err=True)

    cps = open_checkpoints()
    if not watches(cps.store, cps.config):
        say("  files are not reverted: no paths are watched (rw watch add PATH)")
        return
    cid = travel.step_checkpoint(cps.store, sid, step)
    if cid is None:
        say(f"  files are left as they are: no checkpoint was taken before step {step}")
        return
    cmp = cps.compare(cid)
    if cmp.empty:
        say("  watched files are already as they were then")
        return
    say(f"  {'would restore' if dry_run else 'restoring'} watched files (checkpoint {cid}):")
    for t in cmp.trees:
        for c in t.changes:
            say(f"    {c.describe(t.root)}")
    if dry_run:
        return
    if not yes and not confirm("rw: restore these files?"):
        raise RwError("nothing changed (pass --yes to restore without asking)", EXIT_PROBLEM)
    report = cps.restore(cid)
    if not report.complete:
        print_report(report)
        raise RwError(
            f"files only partly restored (checkpoint {cid}); the shell was not moved",
            EXIT_INCOMPLETE,
        )
    say(f"  watched files restored and verified ({len(report.restored)} change(s))")


@cli.command("back", context_settings=CONTEXT)
@click.argument("n", type=POSITIVE, default=1, required=False)
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
@click.option("--yes", "-y", is_flag=True, help="Restore watched files without asking.")
def back_cmd(n: int, dry_run: bool, yes: bool) -> None:
    """Put this shell back as it was just before the Nth most recent command.

    Restores the working directory, the exported environment (set, changed
    and unset variables) and the files of watched paths (shown first, and
    asked unless --yes). What you run next goes to a new branch session;
    the history so far is kept. N defaults to 1 and counts the commands you
    ran: rw's own (rw log, rw back --dry-run ...) are not counted.

    \b
    Example:
        rw back 3
        rw back 3 --yes
        rw back --dry-run
    """
    sid, shell = _live_shell(dry_run)
    store = synced_store(get_paths())
    resolve_session(store, sid)
    assert store is not None
    _apply(travel.plan_back(store, sid, n, dict(os.environ), travel.here()), shell, dry_run, yes)


@cli.command("branch", context_settings=CONTEXT)
@click.argument("session", required=False, shell_complete=complete_session)
@click.argument("step", type=POSITIVE, required=False, shell_complete=complete_step)
@click.option("--name", help="Name of the new session (default: <name>-branch-<STEP>).")
@click.option("--exec", "exec_", is_flag=True, help="Open a shell in the state after STEP.")
@click.option("--dry-run", is_flag=True, help="Only say what would change.")
@click.option("--yes", "-y", is_flag=True, help="Restore watched files without asking.")
def branch_cmd(
    session: str | None,
    step: int | None,
    name: str | None,
    exec_: bool,
    dry_run: bool,
    yes: bool,
) -> None:
    """Branch a session: from the last failure of this shell, or at SESSION STEP.

    With no arguments, in a recorded shell: restores the state before the
    last failed command, records what you run next into a new branch
    session, and puts the failed command in front of you to edit (zsh: on
    the command line; bash: one Up-arrow away).

    With SESSION STEP: makes a new session holding steps 1..STEP of SESSION.
    With --exec, opens an interactive shell in the state after STEP that
    records into the branch; leaving it returns here.

    \b
    Example:
        make deploy                # fails
        rw branch                  # back to before it; fix, then run it again
        rw branch deploy 46 --exec
    """
    if session is None:
        if name or exec_:
            raise RwError("--name and --exec go with SESSION STEP")
        sid, shell = _live_shell(dry_run)
        store = synced_store(get_paths())
        resolve_session(store, sid)
        assert store is not None
        plan = travel.plan_branch_from_failure(store, sid, dict(os.environ), travel.here())
        _apply(plan, shell, dry_run, yes)
        return
    if step is None:
        raise RwError("usage: rw branch [SESSION STEP] [--name NAME] [--exec]")
    p = get_paths()
    store = synced_store(p)
    parent = resolve_session(store, session)
    assert store is not None
    row = store.get_session(parent)
    assert row is not None
    if step > row.steps:
        raise RwError(f"session {parent} has steps 1 to {row.steps}, not {step}")
    if dry_run:
        click.echo(f"would make a branch of {escaped(parent)} holding its steps 1 to {step}")
        return
    client.ensure_running(p)
    reply = client.request(p, "branch", session=parent, step=step, name=name, open=exec_)
    sid = reply["session"]
    label = f"{sid} ({reply['name']})"
    click.echo(f"session {escaped(label)}: a branch of {escaped(parent)} after step {step}")
    if exec_:
        state = travel.state_after(store, parent, step, dict(os.environ))
        for var in state.redacted:
            click.echo(
                f"rw: {var} keeps its current value: its recorded value was redacted", err=True
            )
        code = subshell.run(row.shell or "bash", state, sid, rw_executable())
        raise SystemExit(code)


@cli.command("rewind", context_settings=CONTEXT)
@click.argument("session", shell_complete=complete_session)
@click.argument("step", type=POSITIVE, shell_complete=complete_step)
@click.option("--exec", "exec_", is_flag=True, help="Replay SESSION from STEP.")
@click.option("--dry-run", is_flag=True, help="Only show; change nothing.")
@click.option("--yes", "-y", is_flag=True, help="Restore watched files without asking.")
def rewind_cmd(session: str, step: int, exec_: bool, dry_run: bool, yes: bool) -> None:
    """Show SESSION up to STEP and how the state before STEP differs from now.

    In a recorded shell it then puts this shell in that state (directory,
    environment, and watched files from the checkpoint taken before STEP),
    and what you run next records into a branch of SESSION after step
    STEP-1. With --exec it replays SESSION from STEP instead.

    \b
    Example:
        rw rewind deploy 47
        rw rewind deploy 47 --exec
    """
    if exec_:
        from .replay import replay_cmd

        click.get_current_context().invoke(replay_cmd, session=session, first=step)
        return
    store = synced_store(get_paths())
    sid = resolve_session(store, session)
    assert store is not None
    target = store.step(sid, step)
    if target is None:
        raise NotFound(f"session {sid} has no step {step}")
    shell = os.environ.get("RW_EVAL", "")
    live = shell in ("bash", "zsh") and current_session_id() is not None

    def say(line: str) -> None:
        click.echo(line, err=live)

    say(f"session {escaped(sid)}, up to step {step}:")
    for row in store.steps(sid):
        if row.number >= step:
            break
        mark = "  " if row.exit_code in (0, None) else "✗ "
        code = "-" if row.exit_code is None else str(row.exit_code)
        line = f"  {mark}{row.number:>4}  {code:>4}  {one_line(row.command)}"
        say(click.style(line, dim=True) if is_rw_command(row.command) else line)
    say(f"  → {step:>4}        {one_line(target.command)}")
    failed = [r.number for r in store.steps(sid, failed=True) if r.number < step]
    say(f"failed before step {step}: {', '.join(map(str, failed)) if failed else 'none'}")
    plan = travel.restore_before(store, sid, target, dict(os.environ), travel.here())
    lines = travel.describe(plan, dry_run or not live, shell)
    for line in lines[1:]:
        say(escaped(line))
    if live:
        restore_files(sid, step, dry_run, yes)
    if live and not dry_run:
        click.echo(travel.shell_code(plan, shell), nl=False)
    elif not dry_run:
        say('(in a shell set up with eval "$(rw init bash)", rw rewind also restores it)')

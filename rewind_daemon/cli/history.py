"""Commands that look at what was recorded: sessions, log, show, name."""

from __future__ import annotations

import socket
import sys
import time

import click

from ..capture import client
from ..display import escaped
from ..errors import NotFound, RwError
from ..timeline import history
from . import CONTEXT, cli
from .common import (
    MAX_INT,
    POSITIVE,
    complete_session,
    complete_session_or_step,
    get_paths,
    json_option,
    one_line,
    print_json,
    resolve_session,
    synced_store,
)

session_arg = click.argument("session", required=False, shell_complete=complete_session)


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _took(ms: float | None) -> str:
    if ms is None:
        return "running"
    if ms < 1000:
        return f"{ms:.0f}ms"
    if ms < 60_000:
        return f"{ms / 1000:.1f}s"
    return f"{ms / 60_000:.0f}m{(ms % 60_000) / 1000:02.0f}s"


@cli.command("sessions", context_settings=CONTEXT)
@click.option("--limit", type=POSITIVE, default=None, help="Show the N most recent.")
@json_option
def sessions_cmd(limit: int | None, as_json: bool) -> None:
    """List recorded sessions, most recent first.

    \b
    Example:
        rw sessions --limit 10
    """
    sessions = history.list_sessions(synced_store(get_paths()), limit)
    if as_json:
        print_json([s.to_json() for s in sessions])
        return
    current = history.current_session_id()
    here = socket.gethostname()
    for s in sessions:
        r = s.row
        mark = "*" if r.id == current else " "
        name = escaped(r.name or "-")
        state = "" if r.ended_at else "  (open)"
        parent = f"  from {escaped(r.parent_id)}" if r.parent_id else ""
        if r.parent_id and r.branch_point is not None:
            parent += f" after step {r.branch_point}"
        if r.host and r.host != here:  # another host's (rw guard --host, rw pull, an import)
            parent += f"  on {escaped(r.host)}"
        click.echo(
            f"{mark} {escaped(r.id)}  {name:<16} {escaped(r.shell or '?'):<4} {r.origin:<6} "
            f"{_when(r.started_at)}"
            f"  {r.steps:>5} steps{state}{parent}"
        )


@cli.command("log", context_settings=CONTEXT)
@session_arg
@click.option("--failed", is_flag=True, help="Only steps that exited non-zero.")
@click.option("--limit", "-n", type=POSITIVE, default=None, help="Only the last N.")
@json_option
def log_cmd(session: str | None, failed: bool, limit: int | None, as_json: bool) -> None:
    """Show the steps of SESSION (this shell's session, or the last one).

    SESSION is a name, an id or id prefix, `current` or `last`.

    \b
    Example:
        rw log --failed --limit 20
        rw log deploy-prod --json
    """
    store = synced_store(get_paths())
    sess, steps = history.session_log(
        store, resolve_session(store, session), failed=failed, limit=limit
    )
    if as_json:
        print_json([s.to_json() for s in steps])
        return
    label = sess.row.id + (f" ({sess.row.name})" if sess.row.name else "")
    click.echo(f"session {escaped(label)}: {sess.row.steps} steps")
    for s in steps:
        r = s.row
        code = "-" if r.exit_code is None else str(r.exit_code)
        line = (
            f"{r.number:>5}  {code:>4}  {_when(r.started_at)}  {_took(s.duration_ms):>7}  "
            f"{one_line(r.command, 100)}{'  [partial]' if r.partial else ''}"
        )
        # rw's own steps (not counted by rw back): dimmed, on a terminal.
        click.echo(click.style(line, dim=True) if s.rw_command is not None else line)


@cli.command("show", context_settings=CONTEXT)
@click.argument(
    "args", nargs=-1, required=True, metavar="[SESSION] STEP",
    shell_complete=complete_session_or_step,
)  # fmt: skip
@click.option("--env", "full_env", is_flag=True, help="Print the whole environment after the step.")
@click.option("--output", "all_output", is_flag=True, help="Print all the step's output, as text.")
@click.option(
    "--raw", is_flag=True, help="Print the step's output as the terminal got it (colours too)."
)
@json_option
def show_cmd(
    args: tuple[str, ...], full_env: bool, all_output: bool, raw: bool, as_json: bool
) -> None:
    """Show one step: command, cwd, timing, exit codes, environment changes, and
    the last lines of its output where it was recorded (rw record, replays and
    guard runs record it). --output prints all of the output as text (escapes
    removed, progress bars as they ended); --raw the bytes as the terminal got
    them, colours and all.

    \b
    Example:
        rw show 12
        rw show deploy-prod 47 --env
        rw show 47 --output | grep -i error
        rw show 47 --raw | less -R
    """
    if len(args) > 2:
        raise RwError("usage: rw show [SESSION] STEP")
    if sum((all_output, raw, as_json)) > 1:
        raise RwError("--output, --raw and --json are one or the other")
    session, step_s = (None, args[0]) if len(args) == 1 else args
    try:
        step = int(step_s)
    except ValueError:
        raise RwError(f"STEP must be a number, not {step_s!r}") from None
    if not 0 < step <= MAX_INT:
        raise RwError(f"STEP must be from 1 to {MAX_INT}, not {step_s}")
    store = synced_store(get_paths())
    detail = history.step_detail(store, resolve_session(store, session), step)
    if as_json:
        print_json(detail.to_json())
        return
    out = detail.output
    if all_output or raw:
        if out is None:
            raise NotFound(f"step {step} of {detail.step.row.session} has no recorded output")
        if raw:
            _write_raw(out.raw)
        else:
            click.echo(escaped(out.text, lines=True), nl=False)
        if out.omitted:
            click.echo(
                f"rw: {out.omitted} bytes of this output were left out (the middle)", err=True
            )
        return
    r = detail.step.row
    click.echo(f"session   {escaped(r.session)}")
    click.echo(f"step      {r.number}")
    click.echo("command   " + escaped(r.command, lines=True).replace("\n", "\n          "))
    if r.partial:
        click.echo(
            "partial   only the first command of the line was recorded (bash with history off)"
        )
    click.echo(f"cwd       {'unknown' if r.cwd_before is None else escaped(r.cwd_before)}")
    if r.cwd_after and r.cwd_after != r.cwd_before:
        click.echo(f"cwd after {escaped(r.cwd_after)}")
    click.echo(f"started   {_when(r.started_at)}")
    click.echo(f"took      {_took(detail.step.duration_ms)}")
    click.echo(f"exit      {'-' if r.exit_code is None else r.exit_code}")
    if len(detail.step.pipestatus) > 1:
        click.echo(f"pipestatus {' '.join(map(str, detail.step.pipestatus))}")
    if detail.checkpoint is not None:
        click.echo(f"files     checkpoint {detail.checkpoint} (taken before the step)")
    for key, (before, after) in detail.env_changes.items():
        if before is None:
            click.echo(f"env       +{escaped(f'{key}={after}')}")
        elif after is None:
            click.echo(f"env       -{escaped(key)}")
        else:
            click.echo(f"env       ~{escaped(f'{key}={after}')}")
    if full_env:
        for key, value in sorted(detail.env.items()):
            click.echo(f"  {escaped(f'{key}={value}')}")
    if out is not None:
        _show_output_tail(out)


TAIL_LINES = 20


def _show_output_tail(out: history.Output) -> None:
    text, before = out.tail(TAIL_LINES)
    notes = [f"{out.size} bytes"]
    if before:
        notes.append(f"last {TAIL_LINES} lines; rw show --output for all")
    if out.omitted:
        notes.append(f"{out.omitted} bytes left out in the middle")
    if not out.complete:
        notes.append("cut off: its end was not recorded")
    click.echo(f"output    ({'; '.join(notes)})")
    click.echo(escaped(text, lines=True), nl=False)
    if text and not text.endswith("\n"):
        click.echo()


# What --raw adds after the bytes on a terminal: colours off, out of the alternate
# screen, the cursor shown (a step cut off mid-way must not leave the terminal so).
_TERMINAL_RESET = b"\x1b[0m\x1b[?1049l\x1b[?25h"


def _write_raw(data: bytes) -> None:
    """The bytes exactly, to a file or a pipe; to a terminal, then its state reset."""
    sys.stdout.flush()
    sys.stdout.buffer.write(data)
    if sys.stdout.isatty():
        sys.stdout.buffer.write(_TERMINAL_RESET)
    sys.stdout.buffer.flush()


@cli.command("name", context_settings=CONTEXT)
@click.argument("name")
def name_cmd(name: str) -> None:
    """Name this shell's session, so commands can address it by NAME.

    \b
    Example:
        rw name deploy-prod
        rw log deploy-prod
    """
    sid = history.current_session_id()
    if not sid:
        raise NotFound("this shell is not recorded by rw (no RW_SESSION); see rw doctor")
    if not name.strip() or name.strip() in ("current", "last"):
        raise RwError(f"{name!r} cannot be a session name")
    p = get_paths()
    client.ensure_running(p)
    reply = client.request(p, "name", session=sid, name=name)
    click.echo(f"session {escaped(reply['session'])} is now named {escaped(reply['name'])}")

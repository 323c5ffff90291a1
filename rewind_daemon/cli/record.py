"""`rw record`: a shell whose output is recorded, step by step."""

from __future__ import annotations

import os

import click

from ..errors import RwError
from . import CONTEXT, cli
from .common import get_paths


@cli.command("record", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("shell", required=False, metavar="[bash|zsh]")
@click.argument("shell_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS]...")
def record_cmd(shell: str | None, shell_args: tuple[str, ...]) -> None:
    """Start a new interactive SHELL (your login shell by default) whose output
    is recorded, each command's apart, and exit with its status.

    The shell reads its rc files as usual. In a terminal already recorded,
    this says so and does nothing: a shell started there is recorded too.
    ARGS after -- go to the shell instead of -i.

    \b
    Example:
        rw record              # your login shell, recorded; exit to stop
        rw record zsh
        rw record bash -- --login
        rw record -- --login   # your login shell, with ARGS
    """
    from ..recorder import proxy

    args = list(shell_args)
    if shell is not None and shell not in proxy.SHELLS:
        if not shell.startswith("-"):
            raise RwError(f"rw record records bash or zsh, not {shell!r}")
        args.insert(0, shell)  # `rw record -- --login`: the login shell, with ARGS
        shell = None
    env = dict(os.environ)
    pid = proxy.recorder_of(env)
    if pid is not None:
        click.echo(
            f"rw: this terminal is already recorded (rw record, pid {pid}); "
            "a shell started in it is recorded too",
            err=True,
        )
        return
    path = proxy.resolve_shell(shell, env)
    raise SystemExit(proxy.record(path, args, env, get_paths().spool_dir))

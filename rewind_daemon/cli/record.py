"""`rw record`: a shell whose output is recorded, step by step."""

from __future__ import annotations

import os
from typing import Callable, NoReturn

import click

from ..errors import RwError
from . import CONTEXT, cli
from .common import get_paths


@cli.command("record", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.argument("shell", required=False, metavar="[bash|zsh]")
@click.argument("shell_args", nargs=-1, type=click.UNPROCESSED, metavar="[-- ARGS]...")
@click.option(
    "--or-shell", is_flag=True, hidden=True,
    help="The hooks' exec: when the recorder cannot run, start the shell unrecorded.",
)  # fmt: skip
def record_cmd(shell: str | None, shell_args: tuple[str, ...], or_shell: bool) -> None:
    """Start a new interactive SHELL (your login shell by default) whose output
    is recorded, each command's apart, and exit with its status.

    The shell reads its rc files as usual, and rw's hooks are loaded after
    them when they do not load them. In a terminal already recorded, this
    says so and does nothing: a shell started there is recorded too. ARGS
    after -- go to the shell instead of -i (then it starts exactly as they
    say: the hooks come only from its rc files).

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
    if or_shell:
        _record_or_shell(shell or "bash", env)
    pid = proxy.recorder_of(env)
    if pid is not None:
        click.echo(
            f"rw: this terminal is already recorded (rw record, pid {pid}); "
            "a shell started in it is recorded too",
            err=True,
        )
        return
    path = proxy.resolve_shell(shell, env)
    raise SystemExit(proxy.record(path, args, env, get_paths().spool_dir, _hooks(path)))


def _hooks(shell: str) -> Callable[[dict[str, str]], list[str]]:
    from ..capture.hooks_render import rw_executable
    from ..recorder.startup import with_hooks

    kind = os.path.basename(shell)
    return lambda env: with_hooks(kind, env, get_paths().runtime_dir, rw_executable())


def _record_or_shell(kind: str, env: dict[str, str]) -> NoReturn:
    """What the hooks exec in a new terminal shell when recording is switched
    on: the shell, recorded; if the recorder cannot start, the shell unrecorded
    (the terminal must get its shell whatever happens)."""
    from ..recorder import proxy

    try:
        if proxy.recorder_of(env) is not None:
            proxy.shell_instead(kind, env, "this terminal is already recorded")
        path = proxy.resolve_shell(kind, env)
        hooks, spool_dir = _hooks(path), get_paths().spool_dir
    except Exception as e:  # noqa: BLE001 - whatever it is, the terminal gets its shell
        proxy.shell_instead(kind, env, str(e))
    try:
        status = proxy.record(path, [], env, spool_dir, hooks)
    except proxy.NotStarted as e:
        proxy.shell_instead(kind, env, str(e))
    raise SystemExit(status)

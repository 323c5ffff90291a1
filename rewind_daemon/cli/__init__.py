"""The `rw` command line. Commands are declared here and in the verb modules;
the work is done by the domain modules."""

from __future__ import annotations

import importlib
import sqlite3
import sys

import click

from .. import __version__
from ..errors import EXIT_PROBLEM, EXIT_USAGE, RwError, StoreBusy
from ..store import is_busy

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

# Which module declares each command: only that one is imported to run it, so
# start-up (which `rw log` pays every time) does not grow with every command.
COMMAND_MODULES = {
    "init": "capture", "daemon": "capture", "config": "capture", "doctor": "capture",
    "sessions": "history", "log": "history", "show": "history", "name": "history",
    "search": "search",
    "back": "travel", "branch": "travel", "rewind": "travel",
    "replay": "replay", "breakpoint": "replay",
    "diff": "compare", "export": "share", "import": "share",
    "watch": "checkpoint", "checkpoint": "checkpoint", "gc": "checkpoint",
    "guard": "guard", "pull": "remote",
    "record": "record",
    "dap": "dap",
}  # fmt: skip


def _one_line(e: RwError) -> str:
    """An error's message as shown: escaped, since it may quote what another
    host or a file said (rw guard --host, rw import)."""
    from ..display import escaped

    return escaped(str(e))


class RwGroup(click.Group):
    """Loads commands when asked for; turns RwError into a one-line message and
    its exit code."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(COMMAND_MODULES))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in self.commands and name in COMMAND_MODULES:
            importlib.import_module(f"{__name__}.{COMMAND_MODULES[name]}")
        return super().get_command(ctx, name)

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RwError as e:
            click.echo(f"rw: {_one_line(e)}", err=True)
            ctx.exit(e.exit_code)
        except sqlite3.DatabaseError as e:
            if is_busy(e):  # a lock another rw holds is not damage
                click.echo(f"rw: {StoreBusy()}", err=True)
                ctx.exit(StoreBusy.exit_code)
            click.echo(f"rw: the store is damaged or unreadable ({e}); see rw doctor", err=True)
            ctx.exit(EXIT_PROBLEM)
        except BrokenPipeError:
            sys.stderr.close()
            ctx.exit(0)
        except KeyboardInterrupt:
            click.echo("rw: interrupted", err=True)
            ctx.exit(130)


@click.group(cls=RwGroup, context_settings=CONTEXT)
@click.version_option(__version__, "-V", "--version", prog_name="rw")
def cli() -> None:
    """rw: rewind for your shell.

    Records every command of your bash and zsh sessions, and lets you look
    back at them.

    \b
    Example:
        eval "$(rw init bash)"    # in ~/.bashrc
        rw log --failed
    """


def main() -> None:
    try:
        cli.main(prog_name="rw")
    except RwError as e:  # raised while parsing, before invoke
        click.echo(f"rw: {_one_line(e)}", err=True)
        sys.exit(e.exit_code or EXIT_USAGE)

"""The `rw` command line. Commands are declared here and in the verb modules;
the work is done by the domain modules."""

from __future__ import annotations

import sqlite3
import sys

import click

from .. import __version__
from ..errors import EXIT_PROBLEM, EXIT_USAGE, RwError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


class RwGroup(click.Group):
    """Turns RwError into a one-line message and its exit code."""

    def invoke(self, ctx: click.Context):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except RwError as e:
            click.echo(f"rw: {e}", err=True)
            ctx.exit(e.exit_code)
        except sqlite3.DatabaseError as e:
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
    from . import capture, compare, history, replay, share, travel  # noqa: F401 - registers

    try:
        cli.main(prog_name="rw")
    except RwError as e:  # raised while parsing, before invoke
        click.echo(f"rw: {e}", err=True)
        sys.exit(e.exit_code or EXIT_USAGE)

"""Commands that move sessions in and out of rw: export, import."""

from __future__ import annotations

import os
import re
import stat

import click

from ..display import escaped
from ..errors import RwError
from ..progress import TerminalProgress
from ..store import Store
from ..timeline import exporting, importing
from . import CONTEXT, cli
from .common import (
    POSITIVE,
    complete_session,
    complete_step,
    get_config,
    get_paths,
    json_option,
    print_json,
    resolve_session,
    synced_store,
)


def _write(path: str, text: str, mode: int) -> None:
    """`text` into `path` (`-`: stdout). A regular file gets `mode` before anything
    is written to it, also when it was already there with another."""
    if path == "-":
        click.echo(text, nl=False)
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with open(fd, "w", encoding="utf-8") as fh:
            if stat.S_ISREG(os.fstat(fd).st_mode):
                os.fchmod(fd, mode)
            fh.write(text)
    except OSError as e:
        raise RwError(f"cannot write {path}: {e.strerror or e}") from None


def _file_mode(ctx: click.Context, param: click.Parameter, value: str | None) -> int | None:
    if value is None:
        return None
    if not re.fullmatch(r"0?[0-7]{3}", value):
        raise click.BadParameter(f"{value!r} is not a mode like 0600 or 0755")
    return int(value, 8)


@cli.command("export", context_settings=CONTEXT)
@click.argument("session", required=False, shell_complete=complete_session)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(exporting.FORMATS),
    default="sh",
    show_default=True,
    help="sh: a bash script; md: a Markdown runbook; json: everything, for rw import json; "
    "cast: the recorded output as an asciicast v2 file, for asciinema.",
)
@click.option(
    "-o", "--output", default="-", metavar="FILE", help="Write to FILE (default: stdout)."
)
@click.option(
    "--mode",
    metavar="MODE",
    callback=_file_mode,
    help="Permissions of the -o FILE, in octal (default: 0600; 0700 makes a script executable).",
)
@click.option(
    "--from", "first", type=POSITIVE, shell_complete=complete_step,
    help="First step (default: 1).",
)  # fmt: skip
@click.option(
    "--to", "last", type=POSITIVE, shell_complete=complete_step,
    help="Last step (default: the last).",
)  # fmt: skip
@click.option(
    "--include-failed",
    is_flag=True,
    help="sh: keep failed steps, commented out with their exit codes (md and json keep them "
    "anyway).",
)
def export_cmd(
    session: str | None, fmt: str, output: str, mode: int | None, first: int | None,
    last: int | None, include_failed: bool,
) -> None:  # fmt: skip
    """Export SESSION (this shell's session, or the last one) as a script,
    a runbook, JSON or an asciinema cast.

    The sh script changes directory where the session did, sets what failed
    or left-out steps changed in the environment, and stops at a value that
    was redacted when recorded. rw commands and failed steps are left out.
    Each step runs as it was typed (no -e, -u or pipefail unless it set
    them), and the script stops at a step that succeeded when recorded and
    fails now. A file written with -o is readable by you only (0600)
    unless --mode says otherwise.

    The cast (asciicast v2) holds what the steps printed, at the times they
    printed it, the terminal's resizes, and a marker at each step named by
    its command; --from/--to make its time start at 0 at the first step.
    It needs the session's output recorded (rw record).

    \b
    Example:
        rw export deploy --format sh -o deploy.sh --mode 0700
        rw export deploy --format md --from 3 --to 9 > runbook.md
        rw export deploy --format json | ssh other rw import json
        rw export deploy --format cast -o deploy.cast && asciinema play deploy.cast
    """
    if mode is not None and output == "-":
        raise RwError("--mode goes with -o FILE")
    store = synced_store(get_paths())
    sid = resolve_session(store, session)
    assert store is not None
    text = exporting.export_session(
        store, sid, fmt, first=first, last=last, include_failed=include_failed
    )
    _write(output, text, 0o600 if mode is None else mode)


@cli.command("import", context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(importing.KINDS), metavar="bash|zsh|json")
@click.argument("file", required=False)
@click.option(
    "--name", help="Name of the session (default: import-<shell>-history, or as recorded)."
)
@click.option(
    "--new-id", is_flag=True, hidden=True, help="Accepted for old scripts: imports get new ids."
)
@json_option
def import_cmd(kind: str, file: str | None, name: str | None, new_id: bool, as_json: bool) -> None:
    """Import a shell history file, or a session exported as JSON, as a new session.

    A history FILE (default: $HISTFILE, else ~/.bash_history or
    ~/.zsh_history) becomes one session of origin `import` whose exit codes,
    directories and environment are unknown: bash `#<epoch>` lines and zsh
    extended history give the times. Lines typed with a leading space, and
    commands the config ignores, are left out; secrets are redacted.

    A json FILE (default: stdin) made by `rw export --format json` comes back
    with its name, steps, times, exit codes, directories and environments,
    checked field by field. It gets a new id and origin `import`, whatever the
    file says, and never shadows what you recorded: a session recorded here
    wins a name both have, and `last` is the last one recorded here; address
    the import by its id, or by its name when no recorded session has it.
    `-` reads stdin.

    \b
    Example:
        rw import bash
        rw import zsh ~/old-laptop/.zsh_history --name laptop
        rw export deploy --format json > deploy.json
        rw import json deploy.json --name deploy-copy
    """
    p = get_paths()
    config = get_config(p)
    path = file or importing.default_file(kind)
    progress = TerminalProgress()
    with progress, progress.waiting("reading the history"):
        data, mtime = importing.read_source(path)
        session = importing.parse(
            kind, data, mtime, "stdin" if path == "-" else path, config.ignore_regexes()
        )
    store = Store(p.db)
    try:
        with progress:
            result = importing.save(store, session, config.redactor(), name=name, progress=progress)
    finally:
        store.close()
    if as_json:
        print_json(result.to_json())
        return
    label = result.session + (f" ({result.name})" if result.name else "")
    left_out = (
        f"; {result.left_out} left out (leading space, ignored, or longer than rw records)"
        if result.left_out
        else ""
    )
    source = "stdin" if path == "-" else path
    click.echo(f"imported {result.steps} steps from {source} into session {label}{left_out}")
    if result.env_left_out:
        names = ", ".join(escaped(n) for n in result.env_left_out)
        click.echo(f"left out of its environment (a shell or program would run them): {names}")

"""Commands that move sessions in and out of rw: export, import."""

from __future__ import annotations

import os

import click

from .. import exporting, importing
from ..errors import RwError
from ..history import resolve_session
from ..store import Store
from . import CONTEXT, cli
from .common import get_config, get_paths, json_option, print_json, synced_store


def _write(path: str, text: str, executable: bool) -> None:
    if path == "-":
        click.echo(text, nl=False)
        return
    try:
        with open(path, "w", encoding="utf-8") as fh:
            fh.write(text)
        if executable:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(path, 0o777 & ~umask)
    except OSError as e:
        raise RwError(f"cannot write {path}: {e.strerror or e}") from None


@cli.command("export", context_settings=CONTEXT)
@click.argument("session", required=False)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(exporting.FORMATS),
    default="sh",
    show_default=True,
    help="sh: a bash script; md: a Markdown runbook; json: everything, for rw import json.",
)
@click.option(
    "-o", "--output", default="-", metavar="FILE", help="Write to FILE (default: stdout)."
)
@click.option("--from", "first", type=click.IntRange(min=1), help="First step (default: 1).")
@click.option("--to", "last", type=click.IntRange(min=1), help="Last step (default: the last).")
@click.option(
    "--include-failed",
    is_flag=True,
    help="sh: keep failed steps, commented out with their exit codes (md and json keep them "
    "anyway).",
)
def export_cmd(
    session: str | None, fmt: str, output: str, first: int | None, last: int | None,
    include_failed: bool,
) -> None:  # fmt: skip
    """Export SESSION (this shell's session, or the last one) as a script,
    a runbook or JSON.

    The sh script changes directory where the session did, sets what failed
    or left-out steps changed in the environment, and stops at a value that
    was redacted when recorded. rw commands and failed steps are left out.
    A script written with -o is made executable.

    \b
    Example:
        rw export deploy --format sh -o deploy.sh
        rw export deploy --format md --from 3 --to 9 > runbook.md
        rw export deploy --format json | ssh other rw import json
    """
    store = synced_store(get_paths())
    sid = resolve_session(store, session)
    assert store is not None
    text = exporting.export_session(
        store, sid, fmt, first=first, last=last, include_failed=include_failed
    )
    _write(output, text, executable=fmt == "sh")


@cli.command("import", context_settings=CONTEXT)
@click.argument("kind", type=click.Choice(importing.KINDS), metavar="bash|zsh|json")
@click.argument("file", required=False)
@click.option(
    "--name", help="Name of the session (default: import-<shell>-history, or as recorded)."
)
@click.option("--new-id", is_flag=True, help="json: store under a new id, so a copy can coexist.")
@json_option
def import_cmd(kind: str, file: str | None, name: str | None, new_id: bool, as_json: bool) -> None:
    """Import a shell history file, or a session exported as JSON, as a new session.

    A history FILE (default: $HISTFILE, else ~/.bash_history or
    ~/.zsh_history) becomes one session of origin `import` whose exit codes,
    directories and environment are unknown: bash `#<epoch>` lines and zsh
    extended history give the times. Lines typed with a leading space, and
    commands the config ignores, are left out; secrets are redacted.

    A json FILE (default: stdin) made by `rw export --format json` comes back
    as the same session: same id, steps, times, exit codes, directories,
    environments and origin. If that id is already stored, the import fails
    unless --new-id gives the copy a new one. `-` reads stdin.

    \b
    Example:
        rw import bash
        rw import zsh ~/old-laptop/.zsh_history --name laptop
        rw export deploy --format json > deploy.json
        rw import json deploy.json --new-id --name deploy-copy
    """
    p = get_paths()
    config = get_config(p)
    path = file or importing.default_file(kind)
    data, mtime = importing.read_source(path)
    session = importing.parse(
        kind, data, mtime, "stdin" if path == "-" else path, config.ignore_regexes()
    )
    store = Store(p.db)
    try:
        result = importing.save(store, session, config.redactor(), name=name, new_id=new_id)
    finally:
        store.close()
    if as_json:
        print_json(result.to_json())
        return
    label = result.session + (f" ({result.name})" if result.name else "")
    left_out = f"; {result.left_out} left out (leading space or ignored)" if result.left_out else ""
    source = "stdin" if path == "-" else path
    click.echo(f"imported {result.steps} steps from {source} into session {label}{left_out}")

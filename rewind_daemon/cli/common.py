"""Helpers shared by the command modules."""

from __future__ import annotations

import sqlite3
import sys
from typing import TYPE_CHECKING

import click

from .. import paths
from ..capture import client
from ..config import Config, load
from ..display import escaped, json_text
from ..errors import RwError
from ..store import Store
from ..timeline import history

if TYPE_CHECKING:  # imported at TAB time only
    from click.shell_completion import CompletionItem

# The largest integer SQLite stores: no id or step is above it, and asking for
# one would overflow. Every id, step and count argument is bounded by it.
MAX_INT = 2**63 - 1
ID = click.IntRange(0, MAX_INT)
POSITIVE = click.IntRange(1, MAX_INT)


def get_paths() -> paths.Paths:
    return paths.resolve()


def get_config(p: paths.Paths) -> Config:
    return load(p.config_file)


# How long a reading command waits for the daemon to ingest (and index) what
# is spooled: beyond, it reads what is stored and says why.
SYNC_WAIT = 3.0


def synced_store(p: paths.Paths, index: bool = False) -> Store | None:
    """The store for reading, after the daemon ingested what shells have spooled
    (and brought the search index up to date, `index`); None when nothing was
    ever recorded. A daemon that runs but cannot answer (stopped, busy) is not
    waited for long, and not started again: what is stored is read as it is."""
    hung = client.stopped(p)
    if hung is None:
        try:
            client.request(p, "sync", timeout=SYNC_WAIT, **({"index": True} if index else {}))
            return Store.open_for_reading(p.db)
        except RwError:
            hung = client.not_answering(p)
    if hung is not None:
        click.echo(f"rw: {hung}; showing what is stored so far", err=True)
    else:
        try:
            autostart = get_config(p).autostart
        except RwError:
            autostart = False
        started = False
        if autostart:
            try:
                client.ensure_running(p)
                client.request(p, "sync", timeout=10)
                started = True
            except RwError:
                pass
        if not started:
            click.echo(
                "rw: the daemon is not running; showing what is stored so far "
                "(rw daemon start ingests the rest)",
                err=True,
            )
    return Store.open_for_reading(p.db)


def resolve_session(store: Store | None, ref: str | None) -> str:
    """The id of the session `ref` names (see history.resolve); when a name was
    shared, which one was taken is said on stderr. Every option or argument that
    takes a session goes through here."""
    found = history.resolve(store, ref)
    if found.note:
        click.echo(f"rw: {escaped(found.note)}", err=True)
    return found.id


def print_json(data: object) -> None:
    sys.stdout.write(json_text(data) + "\n")


def one_line(command: str, width: int | None = None) -> str:
    """The first line of `command` for a listing: escaped, ` …` when more lines
    follow, cut at `width`."""
    first, _, rest = command.partition("\n")
    text = escaped(first) + (" …" if rest else "")
    if width is not None and len(text) > width:
        text = text[: width - 1] + "…"
    return text


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


# TAB completion (click's machinery, at TAB time only): sessions and steps from
# the store as it is, with no sync, so that it answers at once. Any trouble
# completes nothing rather than print into the user's command line.
def _store_as_is() -> Store | None:
    return Store.open_for_reading(get_paths().db)


def _items(found: list) -> list[CompletionItem]:
    from click.shell_completion import CompletionItem

    return [CompletionItem(c.value, help=c.help or None) for c in found]


def complete_session(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    from . import completion

    try:
        return _items(completion.sessions(_store_as_is(), incomplete))
    except (RwError, sqlite3.Error, OSError):
        return []


def complete_step(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """Steps of the session the command line names already (its `session`
    argument), else of this shell's or the last session."""
    from . import completion

    # (Before an option's value, click leaves the arguments unparsed, in ctx.args.)
    words = [a for a in ctx.args if not a.startswith("-")]
    ref = ctx.params.get("session") or (words[0] if words else None)
    try:
        return _items(completion.steps(_store_as_is(), ref, incomplete))
    except (RwError, sqlite3.Error, OSError):
        return []


def complete_session_or_step(
    ctx: click.Context, param: click.Parameter, incomplete: str
) -> list[CompletionItem]:
    """For `[SESSION] STEP`: first a session, or a step of this shell's when a
    few digits are typed (ids are long); after a session, its steps."""
    from . import completion

    typed = ctx.params.get(param.name or "") or ()
    try:
        store = _store_as_is()
        if typed:
            return _items(completion.steps(store, typed[0], incomplete))
        if incomplete.isdigit() and len(incomplete) < 8:
            return _items(completion.steps(store, None, incomplete))
        return _items(completion.sessions(store, incomplete))
    except (RwError, sqlite3.Error, OSError):
        return []


def synced_store_for_writing(p: paths.Paths) -> Store:
    """The store, writable (replays, breakpoints, imports), after a sync."""
    reader = synced_store(p)
    if reader is None:
        raise RwError("nothing has been recorded yet")
    reader.close()
    return Store(p.db)

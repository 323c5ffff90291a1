"""Helpers shared by the command modules."""

from __future__ import annotations

import sys

import click

from .. import client, history, paths
from ..config import Config, load
from ..display import escaped, json_text
from ..errors import RwError
from ..store import Store


def get_paths() -> paths.Paths:
    return paths.resolve()


def get_config(p: paths.Paths) -> Config:
    return load(p.config_file)


def synced_store(p: paths.Paths) -> Store | None:
    """The store for reading, after the daemon ingested what shells have spooled
    (None when nothing was ever recorded)."""
    try:
        client.request(p, "sync", timeout=10)
    except RwError:
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


def synced_store_for_writing(p: paths.Paths) -> Store:
    """The store, writable (replays, breakpoints, imports), after a sync."""
    reader = synced_store(p)
    if reader is None:
        raise RwError("nothing has been recorded yet")
    reader.close()
    return Store(p.db)

"""rw pull: sessions recorded on other hosts, brought into this store."""

from __future__ import annotations

import click

from ..display import escaped
from . import CONTEXT, cli
from .common import get_config, get_paths, print_json


@cli.command("pull", context_settings=CONTEXT)
@click.argument("host", metavar="[USER@]HOST")
@click.argument("session", required=False)
@click.option("--ssh-config", metavar="FILE", help="ssh's -F FILE (default: ssh's own config).")
@click.option("--json", "as_json", is_flag=True, help="Print what was pulled as JSON.")
@click.option(
    "--max-bytes",
    type=click.IntRange(min=1),
    metavar="N",
    help="Stop before the sessions sent add up to more than N bytes (default 1 GiB); "
    "those before are kept.",
)
def pull_cmd(
    host: str, session: str | None, ssh_config: str | None, as_json: bool, max_bytes: int | None
) -> None:
    """Bring the sessions recorded on HOST (or its SESSION) into this store.

    Over your ssh, as rw guard --host does (rw ships itself there when it is
    not there). Each session is stored as an import with HOST as its host,
    under its id there when that is free here, as it arrives; a session pulled
    before is not stored again. SESSION is a name, an id or id prefix, or
    `last`, as named there.

    \b
    Example:
        rw pull deploy@web1
        rw pull web1 last --json     # the last session recorded on web1
    """
    from ..remote import checks, client, sessions
    from ..store import Store

    p = get_paths()
    config = get_config(p)
    redactor = config.redactor()
    pulled: list[sessions.Pulled] = []

    def take(doc: bytes) -> None:
        x = sessions.pull_home(store, host, doc, redactor)
        pulled.append(x)
        if not as_json:
            state = "pulled" if x.new else "here already"
            click.echo(
                f"{escaped(x.session)}  {escaped(x.name or '-'):<16} {x.steps:>5} steps  {state}"
            )

    store = Store(p.db)
    try:
        run = client.pull_remote(
            host,
            session,
            ssh=client.ssh_program(ssh_config),
            notify=lambda msg: click.echo(f"rw: {host}: {escaped(msg)}", err=True),
            take=take,
            max_bytes=max_bytes or checks.MAX_PULL,
        )
    finally:
        store.close()
        if as_json:
            print_json([{"session": x.session, "name": x.name, "steps": x.steps, "new": x.new}
                        for x in pulled])  # fmt: skip
    if run.lost:
        click.echo(f"rw: {host}: {escaped(run.lost)}", err=True)
        raise SystemExit(1)
    if as_json:
        return
    new = sum(x.new for x in pulled)
    click.echo(f"rw: {host}: {new} session{'' if new == 1 else 's'} pulled, "
               f"{len(pulled) - new} here already", err=True)  # fmt: skip

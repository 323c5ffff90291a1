"""rw pull: sessions recorded on other hosts, brought into this store."""

from __future__ import annotations

from collections.abc import Callable

import click

from ..display import escaped
from ..errors import RwError
from . import CONTEXT, cli
from .common import get_config, get_paths, print_json


@cli.command("pull", context_settings=CONTEXT)
@click.argument("host", metavar="[USER@]HOST", required=False)
@click.argument("session", required=False)
@click.option(
    "--hosts-file",
    metavar="FILE",
    help="Pull from each host of FILE in turn, one a line (# comments), after HOST.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="NAME",
    help="Pull from the hosts of the ssh config's Host lines marked '# rw-group: NAME' "
    "(or a glob: 'web-*').",
)
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
    host: str | None,
    session: str | None,
    hosts_file: str | None,
    groups: tuple[str, ...],
    ssh_config: str | None,
    as_json: bool,
    max_bytes: int | None,
) -> None:
    """Bring the sessions recorded on HOST (or its SESSION) into this store.

    Over your ssh, as rw guard --host does (rw ships itself there when it is
    not there). Each session is stored as an import with HOST as its host,
    under its id there when that is free here, as it arrives; a session pulled
    before is not stored again. SESSION is a name, an id or id prefix, or
    `last`, as named there.

    With --hosts-file or --group, every session of each host is pulled, one
    host after the other; a host that cannot be reached is said and skipped,
    and the exit status is then 1 (2 when none could be).

    \b
    Example:
        rw pull deploy@web1
        rw pull web1 last --json     # the last session recorded on web1
        rw pull --group web          # every host marked '# rw-group: web'
    """
    from ..remote import checks, client, sessions
    from ..store import Store
    from .guard import group_hosts, read_hosts_file

    hosts: tuple[str, ...] = (host,) if host else ()
    if hosts_file is not None or groups:
        if session is not None:
            raise RwError(
                "a SESSION is pulled from one HOST; with --hosts-file or --group every "
                "session of each host is"
            )
        if hosts_file is not None:
            hosts += read_hosts_file(hosts_file)
        if groups:
            hosts += group_hosts(groups, ssh_config)
        hosts = tuple(dict.fromkeys(hosts))  # (each once, in order)
    elif not hosts:
        raise RwError("which host? give HOST, --hosts-file FILE or --group NAME")

    p = get_paths()
    config = get_config(p)
    redactor = config.redactor()
    pulled: list[tuple[str, sessions.Pulled]] = []
    failed: list[str] = []

    def taker(where: str) -> Callable[[bytes], None]:
        def take(doc: bytes) -> None:
            x = sessions.pull_home(store, where, doc, redactor)
            pulled.append((where, x))
            if not as_json:
                state = "pulled" if x.new else "here already"
                click.echo(
                    f"{escaped(x.session)}  {escaped(x.name or '-'):<16} {x.steps:>5} steps  "
                    f"{state}{'' if len(hosts) == 1 else '  ' + escaped(where)}"
                )

        return take

    def notifier(where: str) -> Callable[[str], None]:
        return lambda msg: click.echo(f"rw: {escaped(where)}: {escaped(msg)}", err=True)

    store = Store(p.db)
    try:
        for where in hosts:
            before = len(pulled)
            try:
                run = client.pull_remote(
                    where,
                    session,
                    ssh=client.ssh_program(ssh_config),
                    notify=notifier(where),
                    take=taker(where),
                    max_bytes=max_bytes or checks.MAX_PULL,
                )
            except RwError as e:
                if len(hosts) == 1:
                    raise
                click.echo(f"rw: {escaped(str(e))}", err=True)  # (it names the host)
                failed.append(where)
                continue
            if run.lost:
                click.echo(f"rw: {escaped(where)}: {escaped(run.lost)}", err=True)
                failed.append(where)
                continue
            if not as_json:
                mine = [x for _, x in pulled[before:]]
                new = sum(x.new for x in mine)
                click.echo(f"rw: {escaped(where)}: {new} session{'' if new == 1 else 's'} "
                           f"pulled, {len(mine) - new} here already", err=True)  # fmt: skip
    finally:
        store.close()
        if as_json:
            print_json([
                {"session": x.session, "name": x.name, "steps": x.steps, "new": x.new,
                 "host": where}
                for where, x in pulled
            ])  # fmt: skip
    if failed:
        raise SystemExit(2 if len(failed) == len(hosts) else 1)

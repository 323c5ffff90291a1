"""rw guard: the circuit breaker."""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile

import click

from ..checkpoints.checkpoint import normalise
from ..display import escaped
from ..errors import RwError
from ..guard.runner import GuardRequest, guard, last_request, render_markdown, render_text
from ..progress import TerminalProgress
from ..store import Store
from . import CONTEXT, cli
from .common import POSITIVE, get_config, get_paths

REPORT_FORMATS = {".md": "md", ".markdown": "md", ".json": "json"}


def _report_format(path: str | None) -> str | None:
    if path is None:
        return None
    fmt = REPORT_FORMATS.get(os.path.splitext(path)[1].lower())
    if fmt is None:
        raise RwError(f"--report {path}: name it .md (Markdown) or .json (JSON)")
    return fmt


@cli.command("guard", context_settings={**CONTEXT, "allow_interspersed_args": False})
@click.option("--paths", "paths_", multiple=True, metavar="PATH", help="Also checkpoint PATH.")
@click.option("--packages/--no-packages", default=None, help="Checkpoint dpkg and pip packages.")
@click.option("--services/--no-services", default=None, help="Checkpoint service states.")
@click.option(
    "--timeout", type=float, metavar="SECONDS", help="Halt after this long without output (30)."
)
@click.option("--allow", multiple=True, metavar="REGEX", help="A line that is fine (whitelist).")
@click.option(
    "--expect", multiple=True, metavar="REGEX", help="An expected line; others halt (strict)."
)
@click.option("--strict", is_flag=True, default=None, help="Halt on lines --expect misses.")
@click.option("--no-rollback", is_flag=True, default=None, help="Halt and report; restore nothing.")
@click.option("--report", "report_file", metavar="FILE", help="Write the report (.md or .json).")
@click.option("--again", is_flag=True, help="Run the last guarded command again (new checkpoint).")
@click.option(
    "--host",
    "hosts",
    multiple=True,
    metavar="[USER@]HOST",
    help="Run it there over ssh (repeat: one host at a time, up to the first halt).",
)
@click.option(
    "--hosts-file",
    metavar="FILE",
    help="Hosts for --host, one a line (# comments), after those given with --host.",
)
@click.option(
    "--group",
    "groups",
    multiple=True,
    metavar="NAME",
    help="The hosts of the ssh config's Host lines marked '# rw-group: NAME' (or a glob: 'web-*').",
)
@click.option(
    "--ssh-config", metavar="FILE", help="ssh's -F FILE for --host (default: ssh's own config)."
)
@click.option(
    "--parallel",
    type=POSITIVE,
    default=1,
    metavar="N",
    help="With several --host: N at a time; one halting halts and rolls back the others.",
)
@click.option(
    "--attach", is_flag=True, help="With --host: the report of the last run there (waits for it)."
)
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def guard_cmd(
    paths_: tuple[str, ...],
    packages: bool | None,
    services: bool | None,
    timeout: float | None,
    allow: tuple[str, ...],
    expect: tuple[str, ...],
    strict: bool | None,
    no_rollback: bool | None,
    report_file: str | None,
    again: bool,
    hosts: tuple[str, ...],
    hosts_file: str | None,
    groups: tuple[str, ...],
    ssh_config: str | None,
    parallel: int,
    attach: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND; on the first issue, halt it and roll the machine back.

    Takes a checkpoint (watched and given paths; packages and services as
    configured), runs COMMAND on a terminal streaming its output, and halts
    it at the first error, warning, skipped step, prompt, stall (--timeout)
    or, with --strict/--expect, unexpected line: kills its whole process
    tree, restores the checkpoint, verifies it and reports the line that
    tripped. Exit status: 0 the command passed (the checkpoint is kept);
    1 halted and rolled back; 3 no checkpoint could be taken (the command
    did not run) or the rollback is incomplete. Rules: [guard] in the config.

    With --host, the whole breaker runs on that host over your ssh (rw ships
    itself there; the host needs only python3): --paths and COMMAND are the
    remote's, `~` its user's home, the rules and options are yours; the output
    and the report come here, and the run is stored here with its host.

    \b
    Example:
        rw guard --paths /etc/myapp --packages -- ./install.sh --verbose
        rw guard --allow 'WARNING: cache is cold' --report run.md -- make deploy
        rw guard --again          # the last guarded command, after a fix
        rw guard --host deploy@web1 --paths '~/site' -- ./install.sh
        rw guard --host deploy@web1 --attach   # after the connection dropped
        rw guard --group web -- ./deploy.sh    # Host lines marked '# rw-group: web'
    """
    fmt = _report_format(report_file)
    p = get_paths()
    config = get_config(p)
    if hosts_file is not None:
        hosts += read_hosts_file(hosts_file)
    if groups:
        hosts += group_hosts(groups, ssh_config)
    if attach and not hosts:
        raise RwError("--attach goes with --host: rw guard --host HOST --attach")
    if hosts and attach:
        if command:
            raise RwError("--attach reports the last run there: give no COMMAND")
        raise SystemExit(
            _guard_hosts(p, config, None, hosts, ssh_config, report_file, fmt, parallel)
        )
    if hosts:
        if again:
            raise RwError("--again runs here: give no --host")
        if not command:
            raise RwError("nothing to run: rw guard --host HOST [OPTIONS] -- COMMAND [ARGS...]")
        request = GuardRequest(
            list(command), "~", list(paths_), allow=list(allow), expect=list(expect),
            packages=packages, services=services, timeout=timeout, strict=bool(strict),
            rollback=not no_rollback,
        )  # fmt: skip
        code = _guard_hosts(p, config, request, hosts, ssh_config, report_file, fmt, parallel)
        raise SystemExit(code)
    elif ssh_config is not None or parallel != 1:
        raise RwError("--ssh-config and --parallel go with --host")
    if again:
        if command:
            raise RwError("--again runs the last guarded command: give no COMMAND")
        store = Store.open_for_reading(p.db)
        try:
            request = last_request(store)
        finally:
            if store is not None:
                store.close()
        request.paths += [normalise(x) for x in paths_ if normalise(x) not in request.paths]
        request.allow += list(allow)
        request.expect += list(expect)
        click.echo(f"rw: again: {request.command_line}  (in {request.cwd})", err=True)
    elif not command:
        raise RwError("nothing to run: rw guard [OPTIONS] -- COMMAND [ARGS...]")
    else:
        request = GuardRequest(
            list(command), os.getcwd(), [normalise(x) for x in paths_],
            allow=list(allow), expect=list(expect),
        )  # fmt: skip
    for name, value in (("packages", packages), ("services", services), ("timeout", timeout)):
        if value is not None:
            setattr(request, name, value)
    if strict:
        request.strict = True
    if no_rollback:
        request.rollback = False
    sys.stdout.flush()

    def notify(msg: str) -> None:
        progress.close()  # (the checkpoint or the rollback goes on below the message)
        click.echo(escaped(f"rw: {msg}"), err=True)

    with TerminalProgress() as progress:
        report = guard(
            p,
            config,
            request,
            out_fd=sys.stdout.fileno(),
            in_fd=_stdin_fd(),
            notify=notify,
            progress=progress,
        )
    click.echo("\n" + render_text(report), err=True, nl=False)
    if report_file is not None:
        _write_report(report_file, fmt, report.to_json(), render_markdown(report))
    raise SystemExit(report.exit_code)


def read_hosts_file(path: str) -> tuple[str, ...]:
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.read().splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise RwError(f"--hosts-file {path}: cannot read it: {getattr(e, 'strerror', e)}") from None
    hosts = tuple(x.split("#", 1)[0].strip() for x in lines)
    hosts = tuple(h for h in hosts if h)
    if not hosts:
        raise RwError(f"--hosts-file {path}: no host in it")
    return hosts


def group_hosts(groups: tuple[str, ...], ssh_config: str | None) -> tuple[str, ...]:
    from ..remote import inventory

    inv = inventory.read_inventory(ssh_config)
    for note in inv.notes:
        click.echo(f"rw: {note}", err=True)
    hosts: list[str] = []
    for group in groups:
        hosts += [h for h in inventory.group_hosts(inv, group) if h not in hosts]
    return tuple(hosts)


def _write_report(report_file: str, fmt: str | None, doc: object, markdown: str) -> None:
    text = json.dumps(doc, indent=2) + "\n" if fmt == "json" else markdown
    # 0600 (the report holds the command line as typed), whatever was there:
    # written to a new file beside it, then renamed over the name (a symlink
    # there is replaced, never followed).
    head, name = os.path.split(os.path.abspath(report_file))
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=head)
        with open(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            fh.write(text)
        os.replace(tmp, report_file)
    except OSError as e:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        why = e.strerror or str(e)
        click.echo(escaped(f"rw: cannot write the report to {report_file}: {why}"), err=True)


def _guard_hosts(
    p,
    config,
    request,
    hosts: tuple[str, ...],
    ssh_config: str | None,
    report_file,
    fmt,
    parallel: int,
) -> int:
    from ..remote import client, fleet

    def done(run: fleet.HostRun) -> None:
        if run.report is not None:
            click.echo("\n" + render_text(run.report), err=True, nl=False)
        elif run.state == fleet.NO_REPORT and run.going_on:
            click.echo(
                f"rw: {run.host}: {escaped(run.describe())} (rw guard --host {run.host} --attach "
                "reports it)",
                err=True,
            )
        elif run.state in (fleet.NO_REPORT, fleet.NOT_RUN):
            click.echo(f"rw: {run.host}: {escaped(run.describe())}", err=True)
        sys.stdout.flush()

    def earlier(host: str, report) -> None:
        click.echo(
            f"rw: {host}: the run {escaped(str(report.session))} there ended after the "
            "connection was lost; its report:",
            err=True,
        )
        click.echo(render_text(report), err=True, nl=False)

    runs = fleet.guard_hosts(
        p, config, request, list(hosts), ssh=client.ssh_program(ssh_config),
        output=client.write_to(sys.stdout.fileno()), done=done, parallel=parallel,
        notify=lambda host, msg: click.echo(f"rw: {host}: {escaped(msg)}", err=True),
        earlier=earlier, keys_fd=_stdin_fd(),
    )  # fmt: skip
    if len(runs) > 1:
        lines = [f"  {r.host}: {escaped(r.describe())}" for r in runs]
        click.echo("\nrw guard: hosts\n" + "\n".join(lines), err=True)
    if report_file is not None and len(runs) > 1:
        _write_report(report_file, fmt, fleet.summary_json(runs), fleet.summary_markdown(runs))
    elif report_file is not None and runs[0].report is not None:
        report = runs[0].report
        _write_report(report_file, fmt, report.to_json(), render_markdown(report))
    return max(r.exit_code for r in runs)


def _stdin_fd() -> int | None:
    try:
        return sys.stdin.fileno()
    except (AttributeError, ValueError, OSError):
        return None

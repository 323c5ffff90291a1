"""Commands that set up capture: init, daemon, config, doctor."""

from __future__ import annotations

import click

from ..capture import client
from ..config import DEFAULT_TEXT
from ..errors import EXIT_PROBLEM
from . import CONTEXT, cli

# The daemon, doctor and hook modules are imported where used, to keep the
# start-up of every other command short.
from .common import get_config, get_paths, json_option, print_json


@cli.command("init", context_settings=CONTEXT)
@click.argument("shell", type=click.Choice(["bash", "zsh"]))
@click.option(
    "--record", is_flag=True,
    help="Run each new terminal shell under rw record (as [record] output = true does).",
)  # fmt: skip
def init_cmd(shell: str, record: bool) -> None:
    """Print the hook code for SHELL, to be evaluated by your shell's rc file.

    It also sets up TAB completion of rw's commands, options, sessions and
    steps (in zsh, with the completion system compinit loads). With --record,
    a new interactive terminal shell becomes `rw record` at that line, once
    (RW_RECORD=off in its environment: not that shell).

    \b
    Example (~/.bashrc, ~/.zshrc):
        eval "$(rw init bash)"
        eval "$(rw init zsh --record)"
    """
    from ..capture.hooks_render import render

    p = get_paths()
    code = render(shell, p, get_config(p), record=record)
    if p.notice:  # said at one shell's start, not at every one
        click.echo(f"rw: {p.notice} (see: rw doctor)", err=True)
        p.notice_told()
    click.echo(code, nl=False)


@cli.group("daemon", context_settings=CONTEXT)
def daemon_group() -> None:
    """Start, stop or inspect the rw daemon.

    \b
    Example:
        rw daemon status
    """


@daemon_group.command("start", context_settings=CONTEXT)
@click.option("--no-wait", is_flag=True, help="Return at once instead of waiting for it to answer.")
@click.option("--auto", is_flag=True, hidden=True, help="The shells' autostart: not after a stop.")
def daemon_start(no_wait: bool, auto: bool) -> None:
    """Start the daemon in the background unless it is already running (after
    `rw daemon stop`, the shells start it again only after this).

    \b
    Example:
        rw daemon start
    """
    p = get_paths()
    if no_wait:
        if not auto or not client.ping(p, timeout=0.5):
            client.spawn(p, explicit=not auto)
        return
    reply = client.ping(p)
    if reply:
        client.end_stop(p)
        click.echo(f"rw daemon already running (pid {reply['pid']})")
        return
    reply = client.ensure_running(p, explicit=True)
    click.echo(f"rw daemon started (pid {reply['pid']})")


@daemon_group.command("stop", context_settings=CONTEXT)
def daemon_stop() -> None:
    """Stop the daemon after it has ingested everything spooled; it stays
    stopped (shells keep spooling) until `rw daemon start`.

    \b
    Example:
        rw daemon stop
    """
    pid = client.stop(get_paths())
    done = "rw daemon was not running" if pid is None else f"rw daemon stopped (pid {pid})"
    click.echo(f"{done}; it stays stopped until: rw daemon start")


@daemon_group.command("status", context_settings=CONTEXT)
@json_option
def daemon_status(as_json: bool) -> None:
    """Say whether the daemon answers on its socket (exit 1 when it does not).

    \b
    Example:
        rw daemon status --json
    """
    p = get_paths()
    try:
        hung = client.stopped(p)
        if hung is not None:
            raise client.DaemonUnavailable(hung)
        reply = client.request(p, "status", timeout=2)
    except client.DaemonUnavailable as e:
        hung = client.not_answering(p)
        if hung is not None:  # its process runs (it holds the lock): it does not answer
            if as_json:
                print_json(
                    {"running": True, "answering": False, "pid": client.daemon_pid(p),
                     "socket": str(p.socket), "error": hung}
                )  # fmt: skip
            else:
                click.echo(f"rw daemon is not answering: {hung}")
            raise SystemExit(EXIT_PROBLEM) from None
        held = client.stopped_on_purpose(p)
        if as_json:
            print_json(
                {"running": False, "stopped_on_purpose": held, "socket": str(p.socket),
                 "error": str(e)}
            )  # fmt: skip
        else:
            why = "stopped on purpose; rw daemon start" if held else str(p.socket)
            click.echo(f"rw daemon is not running ({why})")
        raise SystemExit(EXIT_PROBLEM) from None
    reply.pop("ok", None)
    if as_json:
        print_json({"running": True, **reply})
        return
    click.echo(f"rw daemon running: pid {reply['pid']}, up {reply['uptime']:.0f}s")
    for key in ("socket", "scratch", "watching", "records", "dropped", "dropped_output"):
        if key in reply:  # (a daemon older than recorded output has no dropped_output)
            click.echo(f"  {key}: {reply[key]}")
    click.echo(f"  redactions: {reply['redactions']}")
    if reply.get("lost_commands"):
        click.echo(f"  lost: {reply['lost_commands']} command(s) could not be recorded (rw doctor)")
    for problem in reply.get("problems", []):
        click.echo(f"  PROBLEM: {problem}")


@daemon_group.command("run", context_settings=CONTEXT)
@click.option("--quiet", is_flag=True, help="Log warnings and errors only.")
def daemon_run(quiet: bool) -> None:
    """Run the daemon in the foreground, logging to stderr.

    \b
    Example:
        rw daemon run
    """
    from ..capture import worker_spawn

    p = get_paths()
    config = get_config(p)
    # A backlog's output worker starts first: its start overlaps the daemon's.
    recipe = (config.redact_regexes(), config.redact_env_name_regexes())
    worker = worker_spawn.early(p.spool_dir, recipe)
    from ..capture import daemon

    raise SystemExit(daemon.main(p, config, verbose=not quiet, worker=worker))


@cli.group("config", context_settings=CONTEXT)
def config_group() -> None:
    """Where the configuration lives and what it says.

    \b
    Example:
        rw config show
    """


@config_group.command("path", context_settings=CONTEXT)
def config_path() -> None:
    """Print the path of the configuration file.

    \b
    Example:
        $EDITOR "$(rw config path)"
    """
    click.echo(str(get_paths().config_file))


@config_group.command("show", context_settings=CONTEXT)
@json_option
def config_show(as_json: bool) -> None:
    """Print the configuration in effect (the defaults when there is no file).

    \b
    Example:
        rw config show --json
    """
    p = get_paths()
    cfg = get_config(p)
    if as_json:
        print_json(
            {
                "path": str(p.config_file),
                "exists": p.config_file.exists(),
                "ignore": cfg.ignore,
                "redact": cfg.redact,
                "daemon": {"autostart": cfg.autostart},
            }
        )
    elif p.config_file.exists():
        click.echo(f"# {p.config_file}")
        click.echo(p.config_file.read_text(), nl=False)
    else:
        click.echo(f"# {p.config_file} does not exist; these are the defaults")
        click.echo(DEFAULT_TEXT, nl=False)


@cli.command("doctor", context_settings=CONTEXT)
@json_option
def doctor_cmd(as_json: bool) -> None:
    """Check that the daemon, the hooks, the spool and the store are healthy.

    Exits 1 when a check fails, and says how to fix it. Run outside a recorded
    shell (cron, monitoring), it skips this shell's hook check.

    \b
    Example:
        rw doctor
        rw doctor --json     # from cron
    """
    from ..capture import doctor
    from ..recorder import relay

    checks = doctor.run_checks(get_paths(), recorder_in_c=relay.in_c())
    if as_json:
        print_json([c.to_json() for c in checks])
    else:
        for c in checks:
            click.echo(f"{'ok ' if c.ok else 'BAD'}  {c.name}: {c.detail}")
            if not c.ok and c.fix:
                click.echo(f"     fix: {c.fix}")
    if not all(c.ok for c in checks):
        raise SystemExit(EXIT_PROBLEM)

"""rw search: find steps by their command and output, across sessions."""

from __future__ import annotations

import os
import time

import click

from ..display import escaped
from ..errors import EXIT_PROBLEM, RwError
from ..timeline import search
from . import CONTEXT, cli
from .common import POSITIVE, complete_session, get_paths, json_option, print_json, synced_store


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _highlighted(m: search.Match) -> str:
    """The matching line, escaped, its matches in bold red (on a terminal only:
    click leaves styles out elsewhere)."""
    out, at = [], 0
    for a, b in m.spans:
        out.append(escaped(m.line[at:a]))
        out.append(click.style(escaped(m.line[a:b]), fg="red", bold=True))
        at = b
    out.append(escaped(m.line[at:]))
    return ("…" if m.cut else "") + "".join(out) + ("…" if m.cut else "")


@cli.command("search", context_settings=CONTEXT)
@click.argument("pattern")
@click.option(
    "--output", "in_output", is_flag=True,
    help="Search what the steps printed too (recorded by rw record, replays, guard runs).",
)  # fmt: skip
@click.option("--regex", "-E", is_flag=True, help="PATTERN is a Python regular expression.")
@click.option("--ignore-case", "-i", is_flag=True, help="Match case-insensitively.")
@click.option("--case-sensitive", "-s", is_flag=True, help="Match case-sensitively.")
@click.option("--session", metavar="S", shell_complete=complete_session, help="Only session S.")
@click.option("--cwd", metavar="DIR", help="Only steps run in DIR or below it.")
@click.option("--since", metavar="WHEN", help="Only steps started since WHEN (2h, 3d, 2026-12-01).")
@click.option("--until", metavar="WHEN", help="Only steps started before WHEN.")
@click.option("--failed", is_flag=True, help="Only steps that exited non-zero.")
@click.option(
    "--limit", "-n", type=POSITIVE, default=search.DEFAULT_LIMIT, metavar="N",
    show_default=True,
    help="Show at most N steps (the newest).",
)  # fmt: skip
@json_option
def search_cmd(
    pattern: str, in_output: bool, regex: bool, ignore_case: bool, case_sensitive: bool,
    session: str | None, cwd: str | None, since: str | None, until: str | None, failed: bool,
    limit: int, as_json: bool,
) -> None:  # fmt: skip
    """Find steps whose command matches PATTERN, in every session, newest first;
    with --output, also steps whose output has a matching line. Each is shown
    with its session, step number, exit code, when it ran, and the matching
    line (the command, or the output's line below it).

    PATTERN is found where a word starts (`unable to`, `E: Unable`,
    `/etc/nginx`, `nginx.co` find "E: Unable to…", "/etc/nginx/nginx.conf"),
    not inside a word; --regex finds anything, reading every step it
    considers. Case is ignored unless PATTERN has a capital (-i and -s say
    otherwise). Exits 1 when nothing is found.

    \b
    Example:
        rw search 'docker compose'
        rw search --output 'E: Unable to locate' --failed --since 3d
        rw search --output -E 'timed? out' --cwd /srv/app --session deploy
    """
    if ignore_case and case_sensitive:
        raise RwError("--ignore-case and --case-sensitive are one or the other")
    case = "ignore" if ignore_case else "sensitive" if case_sensitive else "smart"
    compiled = search.Pattern.of(pattern, regex=regex, case=case)
    start = None if since is None else search.parse_when(since)
    end = None if until is None else search.parse_when(until)
    p = get_paths()
    # (The daemon ingests, and brings the index up to date for a moment at most.)
    store = synced_store(p, index=True)
    found = search.search(
        store, compiled, output=in_output, session=session,
        cwd=None if cwd is None else os.path.normpath(os.path.abspath(cwd)),
        since=start, until=end, failed=failed, limit=limit,
    )  # fmt: skip
    if found.more:
        click.echo(f"rw: more than {limit} steps match; --limit N shows more", err=True)
    if as_json:
        print_json([h.to_json() for h in found.hits])
    else:
        labels = [escaped(h.session_name or h.step.row.session[:16]) for h in found.hits]
        width = max(map(len, labels), default=0)
        for h, label in zip(found.hits, labels):
            r = h.step.row
            code = "-" if r.exit_code is None else str(r.exit_code)
            m = h.match
            if m.where == "command":
                text = _highlighted(m)
                if m.line_number > 1:  # (a line further down a command of several)
                    text = "… " + text
                elif "\n" in r.command:
                    text += " …"
            else:
                first, _, rest = r.command.partition("\n")
                text = escaped(first) + (" …" if rest else "")
            click.echo(f"{label:<{width}} {r.number:>5}  {code:>4}  {_when(r.started_at)}  {text}")
            if m.where == "output":  # (below the command, its line number first)
                click.echo(f"{'':<{width}} {m.line_number:>11}: {_highlighted(m)}")
    if not found.hits:
        raise click.exceptions.Exit(EXIT_PROBLEM)

"""rw diff: where two runs diverged."""

from __future__ import annotations

import click

from ..display import escaped
from ..errors import EXIT_PROBLEM
from ..timeline import diffing
from . import CONTEXT, cli
from .common import (
    complete_session,
    get_paths,
    json_option,
    one_line,
    print_json,
    resolve_session,
    synced_store,
)

_MARK = {"same": "=", "command": "~", "exit_code": "!", "output": "o", "only_a": "-",
         "only_b": "+"}  # fmt: skip


@cli.command("diff", context_settings=CONTEXT)
@click.argument("a", shell_complete=complete_session)
@click.argument("b", shell_complete=complete_session)
@click.option("--all", "show_all", is_flag=True, help="List the steps that are the same too.")
@json_option
def diff_cmd(a: str, b: str, show_all: bool, as_json: bool) -> None:
    """Compare two sessions step by step; exit 1 when they differ.

    Steps are aligned by command, so a step inserted or removed in one run
    does not shift the comparison of every later step. Marks: = same,
    ~ different command, ! different exit code, o different output (where
    both runs recorded it: replays do), - only in A, + only in B.

    \b
    Example:
        rw diff deploy deploy-branch-46
        rw diff deploy deploy-retry --json
    """
    store = synced_store(get_paths())
    sid_a, sid_b = resolve_session(store, a), resolve_session(store, b)
    assert store is not None
    result = diffing.compare(
        store.steps(sid_a),
        store.steps(sid_b),
        lambda s: store.output(sid_a, s.number),
        lambda s: store.output(sid_b, s.number),
    )
    if as_json:
        print_json(result.to_json())
    else:
        click.echo(f"A: {escaped(sid_a)}\nB: {escaped(sid_b)}")
        if result.divergence is None:
            click.echo("the runs are the same")
        else:
            da, db = result.divergence
            click.echo(f"they diverge at A step {da or '-'}, B step {db or '-'}")
        for p in result.pairs:
            if p.status == "same" and not show_all:
                continue
            row = p.a or p.b
            assert row is not None
            na = p.a.number if p.a else "-"
            nb = p.b.number if p.b else "-"
            line = f"{_MARK[p.status]} {na:>5} {nb:>5}  {one_line(row.command)}"
            if p.status == "command" and p.b is not None:
                line += f"  →  {one_line(p.b.command)}"
            if p.status == "exit_code" and p.a and p.b:
                line += f"   exit {_code(p.a.exit_code)} → {_code(p.b.exit_code)}"
            click.echo(line)
    if result.differs:
        raise SystemExit(EXIT_PROBLEM)


def _code(value: int | None) -> str:
    return "?" if value is None else str(value)

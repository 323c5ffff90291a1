"""rw diff: where two runs diverged."""

from __future__ import annotations

from collections import Counter

import click

from ..display import escaped
from ..errors import EXIT_PROBLEM
from ..timeline import diffing
from . import CONTEXT, cli
from .common import (
    ID,
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
@click.option(
    "--output-lines",
    type=ID,
    default=diffing.OUTPUT_LINES,
    show_default=True,
    metavar="N",
    help="Lines of each step's output diff to show (0: only say that it differs).",
)
@click.option("--full", is_flag=True, help="Show the whole diff of every output that differs.")
@json_option
def diff_cmd(a: str, b: str, show_all: bool, output_lines: int, full: bool, as_json: bool) -> None:
    """Compare two sessions step by step; exit 1 when they differ.

    Steps are aligned by command, so a step inserted or removed in one run
    does not shift the comparison of every later step. Marks: = same,
    ~ different command, ! different exit code, o different output, - only
    in A, + only in B. Where both runs recorded a step's output (rw record,
    replays, guard runs), the text of the two is compared, and the first
    lines that differ are shown as a unified diff (- A, + B, with a few
    lines of context) under the step; --output-lines N shows more, --full
    all of it.

    \b
    Example:
        rw diff deploy deploy-branch-46
        rw diff deploy deploy-retry --full
        rw diff deploy deploy-retry --json
    """
    store = synced_store(get_paths())
    sid_a, sid_b = resolve_session(store, a), resolve_session(store, b)
    assert store is not None
    result = diffing.compare(
        store.steps(sid_a),
        store.steps(sid_b),
        diffing.StoredOutputs(store, sid_a, sid_b),
        output_lines=None if full else output_lines,
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
            if p.output is not None:
                for text in _output_lines(p.output, full):
                    click.echo(text)
        only = Counter(p.recorded for p in result.pairs if p.recorded)
        for side, sid in (("a", sid_a), ("b", sid_b)):
            if only[side]:
                click.echo(
                    f"(the output of {only[side]} matched step(s) was recorded only in "
                    f"{side.upper()} ({escaped(sid)}): not compared)"
                )
    if result.differs:
        raise SystemExit(EXIT_PROBLEM)


_INDENT = " " * 14  # under the command of the step's line
_COLOUR = {"-": "red", "+": "green", "@": "cyan"}


def _output_lines(d: diffing.OutputDiff, full: bool) -> list[str]:
    """The lines under a step that show how its two outputs differ (coloured on
    a terminal only: click.echo leaves the colours out elsewhere)."""
    out = []
    for side, name in ((d.a, "A"), (d.b, "B")):
        if side.omitted:
            out.append(f"{name}'s output: {side.omitted} of its {side.size} bytes left out "
                       "when recorded (over the cap); compared as kept")  # fmt: skip
        if not side.complete:
            out.append(f"{name}'s output: its end was not recorded")
    if d.a.binary or d.b.binary:
        out.append(f"binary output differs: A {d.a.size} bytes, B {d.b.size} bytes")
    elif not d.lines:
        count = "" if d.changed is None else f": {d.changed} line(s)"
        out.append(f"output differs{count} (rw diff --output-lines N shows them)")
        return [_INDENT + x for x in out]
    for line in d.lines:
        colour = _COLOUR.get(line[:1])
        text = escaped(line, lines=True)
        out.append(click.style(text, fg=colour) if colour else text)
    if d.more is None:
        out.append("... and maybe more: the outputs are long (rw diff --full compares all of them)")
    elif d.more:
        how = "" if full else " (rw diff --full shows all)"
        out.append(f"... {d.more} more line(s) differ{how}")
    return [_INDENT + x for x in out]


def _code(value: int | None) -> str:
    return "?" if value is None else str(value)

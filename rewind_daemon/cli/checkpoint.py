"""Checkpoint commands: watch, checkpoint create/list/show/diff/restore/rm, gc."""

from __future__ import annotations

import datetime
import json
import os

import click

from ..capture import client
from ..checkpoints.checkpoint import (
    Checkpoints,
    Comparison,
    GcReport,
    RestoreReport,
    Watch,
    normalise,
    watches,
)
from ..display import escaped
from ..errors import EXIT_INCOMPLETE, EXIT_PROBLEM, DaemonUnavailable, NotFound, RwError
from ..progress import TerminalProgress
from ..store import Store
from . import CONTEXT, cli
from .common import (
    ID,
    complete_session,
    get_config,
    get_paths,
    json_option,
    print_json,
    resolve_session,
    synced_store,
)


def open_checkpoints() -> Checkpoints:
    p = get_paths()
    return Checkpoints(p, Store(p.db), get_config(p))


def _tell_daemon() -> None:
    """The daemon follows the watched trees: tell it they changed (if it runs)."""
    try:
        client.request(get_paths(), "watches", timeout=5)
    except RwError:
        pass


@cli.group("watch", context_settings=CONTEXT)
def watch_group() -> None:
    """Paths whose files every command checkpoints.

    In a hooked shell, each command gets a checkpoint of the watched trees as
    they were just before it began, so rw back and rw rewind restore files
    too. Watches are also read from the config ([watch] paths).

    \b
    Example:
        rw watch add ~/project --exclude node_modules/ --exclude '*.log'
        rw watch list
    """


@watch_group.command("add", context_settings=CONTEXT)
@click.argument("path")
@click.option("--exclude", "excludes", multiple=True, help="Gitignore-style pattern to leave out.")
def watch_add(path: str, excludes: tuple[str, ...]) -> None:
    """Watch PATH (a directory or a file).

    \b
    Example:
        rw watch add /etc/nginx
    """
    full = normalise(path)
    if not os.path.lexists(full):
        raise NotFound(f"{path}: no such file or directory")
    cps = open_checkpoints()
    for own in cps.own_dirs():
        if own == full or own.startswith(full.rstrip("/") + "/"):
            click.echo(escaped(f"rw: {own} (rw's own data) inside it is left out"), err=True)
    with cps.store.transaction():
        cps.store.add_watch(full, json.dumps(list(excludes)), datetime.datetime.now().timestamp())
    _tell_daemon()
    excluding = f" (excluding {', '.join(excludes)})" if excludes else ""
    click.echo(escaped(f"watching {full}{excluding}"))


@watch_group.command("rm", context_settings=CONTEXT)
@click.argument("path")
def watch_rm(path: str) -> None:
    """Stop watching PATH (existing checkpoints are kept).

    \b
    Example:
        rw watch rm /etc/nginx
    """
    cps = open_checkpoints()
    full = normalise(path)
    with cps.store.transaction():
        removed = cps.store.remove_watch(full)
    if not removed:
        if full in {normalise(p) for p in cps.config.watch_paths}:
            raise RwError(f"{full} is watched by the config ({cps.config.source}): edit it there")
        raise NotFound(f"{full} is not watched (see rw watch list)")
    _tell_daemon()
    click.echo(escaped(f"no longer watching {full}"))


@watch_group.command("list", context_settings=CONTEXT)
@json_option
def watch_list(as_json: bool) -> None:
    """List watched paths.

    \b
    Example:
        rw watch list --json
    """
    cps = open_checkpoints()
    ws = watches(cps.store, cps.config)
    if as_json:
        print_json([{"path": w.path, "exclude": list(w.excludes), "source": w.source} for w in ws])
        return
    if not ws:
        click.echo("no watched paths (rw watch add PATH)")
    for w in ws:
        extra = f"  exclude: {', '.join(w.excludes)}" if w.excludes else ""
        click.echo(escaped(f"{w.path}  ({w.source}){extra}"))


@cli.group("checkpoint", context_settings=CONTEXT)
def checkpoint_group() -> None:
    """Take, inspect and restore checkpoints of files, packages and services.

    \b
    Example:
        rw checkpoint create --paths /etc --packages --label "before upgrade"
        rw checkpoint diff 3
        rw checkpoint restore 3 --dry-run
    """


@checkpoint_group.command("create", context_settings=CONTEXT)
@click.option("--paths", "paths_", multiple=True, help="A path to include (default: watched).")
@click.option("--packages", is_flag=True, default=None, help="Include dpkg and pip packages.")
@click.option("--services", is_flag=True, default=None, help="Include service states.")
@click.option("--label", help="A note to remember it by.")
@click.option("--keep-debs", is_flag=True, default=None, help="Keep a copy of installed .debs.")
@json_option
def checkpoint_create(
    paths_: tuple[str, ...],
    packages: bool | None,
    services: bool | None,
    label: str | None,
    keep_debs: bool | None,
    as_json: bool,
) -> None:
    """Take a checkpoint now.

    Without --paths it covers the watched paths. Packages and services come
    from the config's [checkpoint] defaults unless given.

    \b
    Example:
        rw checkpoint create --paths ./site --label "before deploy"
    """
    cps = open_checkpoints()
    if paths_:
        trees = []
        for p in paths_:
            full = normalise(p)
            if not os.path.lexists(full):
                raise NotFound(f"{p}: no such file or directory")
            trees.append(Watch(full))
    else:
        trees = watches(cps.store, cps.config)
    with TerminalProgress() as progress:
        made = cps.create(
            trees,
            packages=cps.config.packages if packages is None else packages,
            services=cps.config.services if services is None else services,
            label=label,
            keep_debs=keep_debs,
            progress=progress,
        )
    if as_json:
        print_json(
            {
                "id": made.id,
                "paths": [{"path": t.root, "entries": t.entries} for t in made.trees],
                "probes": made.probes,
                "unavailable": dict(made.unavailable),
                "warnings": made.warnings,
            }
        )
        return
    parts = [f"{t.root} ({t.entries} entries)" for t in made.trees] + made.probes
    click.echo(escaped(f"checkpoint {made.id}: {', '.join(parts)}"))
    for name, reason in made.unavailable:
        click.echo(escaped(f"rw: {name} not included: {reason}"), err=True)
    for w in made.warnings:
        click.echo(escaped(f"rw: {w}"), err=True)


def _when(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts).isoformat(timespec="seconds")


@checkpoint_group.command("list", context_settings=CONTEXT)
@click.option(
    "--session",
    shell_complete=complete_session,
    help="Only the step checkpoints of this session (name, id prefix, current, last).",
)
@json_option
def checkpoint_list(session: str | None, as_json: bool) -> None:
    """List checkpoints, oldest first.

    \b
    Example:
        rw checkpoint list
    """
    cps = open_checkpoints()
    if session is not None:  # a name, id prefix, current or last, as everywhere
        session = resolve_session(synced_store(get_paths()), session)
    rows = cps.store.checkpoints(session=session)
    docs: list[dict] = []
    for r in rows:
        trees = cps.store.checkpoint_trees(r.id)
        docs.append(
            {
                "id": r.id,
                "created_at": _when(r.created_at),
                "origin": r.origin,
                "label": r.label,
                "session": r.session,
                "step": r.step,
                "paths": [t.root for t in trees],
                "probes": sorted(cps.store.checkpoint_probes(r.id)),
            }
        )
    if as_json:
        print_json(docs)
        return
    if not docs:
        click.echo("no checkpoints")
    for d in docs:
        where = f"step {d['step']} of {d['session']}" if d["session"] else d["origin"]
        what = ", ".join(d["paths"] + d["probes"])
        label = f"  {d['label']}" if d["label"] else ""
        click.echo(escaped(f"{d['id']:>5}  {d['created_at']}  {where:<24} {what}{label}"))


@checkpoint_group.command("show", context_settings=CONTEXT)
@click.argument("cid", type=ID, metavar="ID")
@json_option
def checkpoint_show(cid: int, as_json: bool) -> None:
    """Show what a checkpoint holds.

    \b
    Example:
        rw checkpoint show 3
    """
    cps = open_checkpoints()
    row = cps.get(cid)
    trees: list[dict] = []
    for row_t in cps.store.checkpoint_trees(cid):
        snap = cps.tree(row_t)
        trees.append(
            {
                "path": row_t.root,
                "entries": len(snap.entries),
                "files": sum(1 for e in snap.entries.values() if e.kind == "file"),
                "bytes": sum(e.size for e in snap.entries.values() if e.kind == "file"),
                "special": [f"{p} ({k})" for p, k in snap.specials],
                "not_restorable": [f"{p} ({n})" for p, n in snap.not_kept],
            }
        )
    probes = {k: json.loads(v) for k, v in cps.store.checkpoint_probes(cid).items()}
    doc = {
        "id": row.id,
        "created_at": _when(row.created_at),
        "origin": row.origin,
        "label": row.label,
        "session": row.session,
        "step": row.step,
        "paths": trees,
        "probes": probes,
    }
    if as_json:
        print_json(doc)
        return
    click.echo(f"checkpoint {row.id}  {doc['created_at']}  ({row.origin})")
    if row.label:
        click.echo(escaped(f"  label: {row.label}"))
    if row.session:
        click.echo(escaped(f"  before step {row.step} of session {row.session}"))
    for t in trees:
        click.echo(
            escaped(
                f"  {t['path']}: {t['entries']} entries, {t['files']} files, {t['bytes']} bytes"
            )
        )
        for s in t["special"]:
            click.echo(escaped(f"    special file, content not kept: {s}"))
        for s in t["not_restorable"]:
            click.echo(escaped(f"    not restorable: {s}"))
    for name, state in probes.items():
        click.echo(f"  {name}: {_probe_summary(state)}")


def _probe_summary(state: dict) -> str:
    for key in ("packages", "services", "environments"):
        value = state.get(key)
        if isinstance(value, (dict, list)):
            return f"{len(value)} {key}"
    return "recorded"


def _print_comparison(cmp: Comparison, heading: str) -> None:
    for t in cmp.trees:
        if t.changes:
            click.echo(escaped(f"{heading} {t.root}:"))
            for c in t.changes:
                click.echo(escaped(f"  {c.describe(t.root)}"))
    for p in cmp.probes:
        if p.unavailable:
            click.echo(escaped(f"{p.probe}: cannot compare here: {p.unavailable}"))
        for pc in p.changes:
            click.echo(escaped(f"  {pc.describe()}"))


def _comparison_json(cmp: Comparison) -> dict:
    return {
        "checkpoint": cmp.checkpoint.id,
        "paths": [
            {
                "path": t.root,
                "changes": [
                    {"path": os.path.join(t.root, c.path), "change": c.what, "detail": c.detail}
                    for c in t.changes
                ],
            }
            for t in cmp.trees
        ],
        "probes": [
            {
                "probe": p.probe,
                "unavailable": p.unavailable,
                "changes": [
                    {"item": c.item, "action": c.action, "recorded": c.recorded, "now": c.current}
                    for c in p.changes
                ],
            }
            for p in cmp.probes
        ],
    }


@checkpoint_group.command("diff", context_settings=CONTEXT)
@click.argument("cid", type=ID, metavar="ID")
@json_option
def checkpoint_diff(cid: int, as_json: bool) -> None:
    """What changed since checkpoint ID. Exits 1 when something did.

    Files are listed as created, deleted, modified, mode (changed) since the
    checkpoint; packages and services as what a restore would do.

    \b
    Example:
        rw checkpoint diff 3
    """
    cps = open_checkpoints()
    with TerminalProgress() as progress:
        cmp = cps.compare(cid, since=True, progress=progress)
    if as_json:
        print_json(_comparison_json(cmp))
    elif cmp.empty:
        click.echo(f"nothing changed since checkpoint {cid}")
    else:
        _print_comparison(cmp, "changed since the checkpoint in")
    if not cmp.empty:
        raise SystemExit(EXIT_PROBLEM)


def confirm(question: str) -> bool:
    """Ask on the terminal (stdout may be captured by the rw shell function)."""
    try:
        with open("/dev/tty", "w") as out, open("/dev/tty") as answer:
            out.write(f"{question} [y/N] ")
            out.flush()
            return answer.readline().strip().lower() in ("y", "yes")
    except OSError:
        raise RwError("no terminal to ask on: pass --yes to apply, or --dry-run") from None


def print_report(report: RestoreReport, out=None) -> None:
    echo = out or (lambda s: click.echo(s, err=True))
    for line in report.restored:
        echo(escaped(f"  restored  {line}"))
    if report.complete:
        echo(f"checkpoint {report.checkpoint.id} restored and verified")
    else:
        echo(f"restore from checkpoint {report.checkpoint.id} is INCOMPLETE; not restored:")
        for line in report.failed:
            echo(escaped(f"  {line}"))


@checkpoint_group.command("restore", context_settings=CONTEXT)
@click.argument("cid", type=ID, metavar="ID")
@click.option("--dry-run", is_flag=True, help="Only show what would change.")
@click.option("--yes", "-y", is_flag=True, help="Apply without asking.")
def checkpoint_restore(cid: int, dry_run: bool, yes: bool) -> None:
    """Put files, packages and services back as checkpoint ID recorded them.

    Shows what will change and asks first (unless --yes). Packages are
    restored first, then files, then services; then everything is checked
    again. Exits 3, listing what is left, if the restore is incomplete.

    \b
    Example:
        rw checkpoint restore 3 --dry-run
        rw checkpoint restore 3 --yes
    """
    cps = open_checkpoints()
    with TerminalProgress() as progress:
        cmp = cps.compare(cid, progress=progress)
    if cmp.empty:
        click.echo(f"already as checkpoint {cid} recorded it; nothing to do")
        return
    _print_comparison(cmp, "would restore" if dry_run else "will restore")
    if dry_run:
        return
    if not yes and not confirm("apply?"):
        click.echo("rw: nothing changed", err=True)
        raise SystemExit(EXIT_PROBLEM)
    with TerminalProgress() as progress:
        report = cps.restore(cid, progress=progress)
    print_report(report, click.echo)
    if not report.complete:
        raise SystemExit(EXIT_INCOMPLETE)


@checkpoint_group.command("rm", context_settings=CONTEXT)
@click.argument("ids", type=ID, nargs=-1, required=True, metavar="ID...")
def checkpoint_rm(ids: tuple[int, ...]) -> None:
    """Delete checkpoints (their objects go at the next rw gc).

    \b
    Example:
        rw checkpoint rm 3 4
    """
    n = open_checkpoints().remove(ids)
    click.echo(f"removed {n} checkpoint(s); rw gc frees their space")


@cli.command("gc", context_settings=CONTEXT)
@click.option("--dry-run", is_flag=True, help="Only say what would go.")
def gc_cmd(dry_run: bool) -> None:
    """Apply retention and free objects no checkpoint needs.

    Keeps the last [checkpoint] keep_per_session step checkpoints of each
    session, then removes the oldest checkpoints until the stored objects fit
    in max_total_size; drops the oldest steps' recorded output until all of it
    fits in [record] max_total_output (the steps stay).

    \b
    Example:
        rw gc --dry-run
    """
    with TerminalProgress() as progress:
        try:
            # The daemon, when up, collects: it knows what its snapshots still need.
            with progress.waiting("gc (in the daemon)"):
                reply = client.request(get_paths(), "gc", dry_run=dry_run, timeout=600)
            report = GcReport.from_json(reply)
        except DaemonUnavailable:
            report = open_checkpoints().gc(dry_run, progress=progress)
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"{verb} {len(report.checkpoints)} checkpoint(s), {report.objects} object(s) "
        f"({report.bytes} bytes), {len(report.debs)} kept .deb file(s)"
    )
    if report.outputs:
        click.echo(
            f"{verb} the recorded output of {report.outputs} step(s) "
            f"({_size(report.output_bytes)}, compressed): over [record] max_total_output"
        )
    for line in report.kept:
        click.echo(escaped(f"kept {line}"))
    if not dry_run and report.disk_before:
        before, after = _size(report.disk_before), _size(report.disk_after)
        click.echo(f"object store on disk: {before} -> {after}")


def _size(n: int) -> str:
    value, unit = float(n), "bytes"
    for bigger in ("KiB", "MiB", "GiB"):
        if value < 1024:
            break
        value, unit = value / 1024, bigger
    return f"{n} bytes" if unit == "bytes" else f"{value:.1f} {unit}"

"""Checkpoints: file trees of watched paths plus probe states (packages,
services), taken, listed, compared with now, restored and collected.

Restore order is packages, then files, then services; each part is verified
afterwards by taking its state again and expecting no difference.
"""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import sqlite3
import time
from collections.abc import Iterable, Iterator
from collections.abc import Set as AbstractSet
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from ..config import Config
from ..errors import EXIT_INCOMPLETE, EXIT_PROBLEM, NotFound, RwError
from ..paths import Paths
from ..progress import Progress, no_progress
from ..store import CheckpointRow, Store, TreeRow
from . import snapshot
from .objects import ObjectError, ObjectStore, sweep_temporary
from .probes import ProbeChange, ProbeConfig, available_probes
from .snapshot import full_path

PACKAGE_PROBES = ("dpkg", "pip")


@dataclass(frozen=True)
class Watch:
    path: str  # absolute, normalised
    excludes: tuple[str, ...] = ()
    source: str = "rw watch"  # or "config"


def normalise(path: str) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(path)))


def watches(store: Store | None, config: Config) -> list[Watch]:
    """Watched trees: the config's, then those added with `rw watch add`."""
    out: dict[str, Watch] = {}
    for p in config.watch_paths:
        out[normalise(p)] = Watch(normalise(p), (), "config")
    if store is not None:
        for path, excludes in store.watches():
            out[path] = Watch(path, tuple(json.loads(excludes)))
    return list(out.values())


@dataclass
class Created:
    id: int
    trees: list[TreeRow]
    probes: list[str]
    unavailable: list[tuple[str, str]]  # (probe, reason)
    warnings: list[str]  # special files, files too large to keep


@dataclass
class TreeDiff:
    root: str
    changes: list[snapshot.Change]


@dataclass
class ProbeDiff:
    probe: str
    changes: list[ProbeChange]
    unavailable: str | None = None


@dataclass
class Comparison:
    """How now differs from a checkpoint, said as what a restore would do."""

    checkpoint: CheckpointRow
    trees: list[TreeDiff]
    probes: list[ProbeDiff]

    @property
    def empty(self) -> bool:
        return not any(t.changes for t in self.trees) and not any(p.changes for p in self.probes)


@dataclass
class RestoreReport:
    checkpoint: CheckpointRow
    restored: list[str] = field(default_factory=list)  # one line each
    failed: list[str] = field(default_factory=list)  # one line each: what could not be restored

    @property
    def complete(self) -> bool:
        return not self.failed


class Checkpoints:
    """Checkpoints of one rw data directory."""

    def __init__(self, paths: Paths, store: Store, config: Config):
        self.paths = paths
        self.store = store
        self.config = config
        self.objects = ObjectStore(paths.data_dir / "objects")
        self.artifacts = paths.data_dir / "debs"
        self._previous: dict[str, snapshot.Snapshot] = {}
        self._manifest_refs: dict[str, set[str]] = {}  # manifest -> objects it needs
        self._pins: dict[int, list[tuple[int, Path]]] = {}  # checkpoint -> [(fd, pin file)]

    # --- taking ------------------------------------------------------------

    def own_dirs(self) -> list[str]:
        """rw's own data is never part of a checkpoint, even under a watched tree."""
        return [str(self.paths.data_dir), str(self.paths.runtime_dir)]

    def previous(self, root: str) -> snapshot.Snapshot | None:
        prev = self._previous.get(root)
        if prev is None:
            row = self.store.latest_tree(root)
            if row is not None:
                try:
                    prev = snapshot.load(self.objects, row.manifest, row.taken_ns)
                except ObjectError:
                    prev = None  # no digests to lend: every file is read again
        return prev

    def snapshot_trees(
        self, trees: Iterable[Watch], batch, on_dir=None, progress: Progress = no_progress
    ) -> list[snapshot.Snapshot]:
        snaps = []
        excludes = tuple(self.config.watch_exclude)
        for w in trees:
            previous = self.previous(w.path)
            total = len(previous.entries) if previous is not None else None
            what = f"checkpoint {w.path}, entries read"
            snap = snapshot.take(
                w.path,
                batch,
                previous,
                excludes + w.excludes,
                self.config.max_file_size,
                self.own_dirs(),
                on_dir,
                progress=lambda n, what=what, total=total: progress(what, n, total),
            )
            snapshot.store(snap, batch)
            snaps.append(snap)
        return snaps

    def create(
        self,
        trees: list[Watch],
        *,
        packages: bool = False,
        services: bool = False,
        label: str | None = None,
        origin: str = "manual",
        session: str | None = None,
        step: int | None = None,
        keep_debs: bool | None = None,
        progress: Progress = no_progress,
        pin: bool = False,
    ) -> Created:
        """Take a checkpoint; `pin`: kept from gc until unpin() (a guarded run
        rolls back to it), from before gc can see it."""
        if not trees and not packages and not services:
            raise RwError(
                "nothing to checkpoint: no watched paths (rw watch add PATH), "
                "and neither --paths, --packages nor --services given"
            )
        keep = self.config.keep_debs if keep_debs is None else keep_debs
        probe_data: list[tuple[str, bytes]] = []
        unavailable: list[tuple[str, str]] = []
        for probe in self.probes(packages, services):
            reason = probe.unavailable()
            if reason:
                unavailable.append((probe.name, reason))
                continue
            artifacts = None
            if keep and probe.name == "dpkg":
                self.artifacts.mkdir(mode=0o700, parents=True, exist_ok=True)
                artifacts = self.artifacts
            progress(f"checkpoint: {probe.name}")
            state = probe.capture(artifacts, progress)
            probe_data.append((probe.name, json.dumps(state, sort_keys=True).encode()))
        try:
            # Shared: `rw gc` (exclusive) must not take objects written here
            # before the checkpoint that names them is committed.
            with self.objects_lock(exclusive=False):
                with self.objects.batch() as batch:
                    snaps = self.snapshot_trees(trees, batch, progress=progress)
                rows = [
                    TreeRow(s.root, s.manifest or "", s.taken_ns, len(s.entries)) for s in snaps
                ]
                with self.store.transaction():
                    cid = self.store.add_checkpoint(
                        created_at=time.time(),
                        origin=origin,
                        trees=rows,
                        probes=probe_data,
                        label=label,
                        session=session,
                        step=step,
                    )
                if pin:
                    self.pin(cid)
        except (OSError, sqlite3.Error) as e:
            raise RwError(f"cannot write the checkpoint: {_reason(e)}", EXIT_INCOMPLETE) from None
        for s in snaps:
            self._previous[s.root] = s
        warnings = []
        for s in snaps:
            for rel, kind in s.specials:
                warnings.append(f"{full_path(s.root, rel)}: a {kind}, recorded but not its content")
            for rel, note in s.not_kept:
                warnings.append(f"{full_path(s.root, rel)}: {note}, recorded by metadata only")
            for rel in s.changing:
                warnings.append(
                    f"{full_path(s.root, rel)}: kept changing while rw read it (written to all "
                    "the time?): recorded as last read, which may be torn; to leave it out: "
                    f"rw watch add {s.root} --exclude /{rel}"
                )
        return Created(cid, rows, [p for p, _ in probe_data], unavailable, warnings)

    def probes(self, packages: bool, services: bool, recorded: dict[str, bytes] | None = None):
        """The probes to run; given a checkpoint's states, those it recorded, looking
        at the same interpreters and services it did (not today's defaults)."""
        cfg = ProbeConfig(
            pip=list(self.config.pip),
            pip_find_links=list(self.config.pip_find_links),
            services=list(self.config.services_list),
        )
        if recorded is not None:
            packages = bool(set(recorded) & set(PACKAGE_PROBES))
            services = "services" in recorded
            if "pip" in recorded:
                cfg.pip = sorted(json.loads(recorded["pip"]).get("environments", {})) or cfg.pip
            if "services" in recorded:
                cfg.services = sorted(json.loads(recorded["services"]).get("services", {}))
        probes = available_probes(cfg, packages=packages, services=services)
        return [p for p in probes if recorded is None or p.name in recorded]

    # --- reading -------------------------------------------------------------

    def get(self, cid: int) -> CheckpointRow:
        row = self.store.checkpoint(cid)
        if row is None or row.state != "ok":
            raise NotFound(f"no checkpoint {cid} (see rw checkpoint list)")
        return row

    def tree(self, row: TreeRow) -> snapshot.Snapshot:
        return snapshot.load(self.objects, row.manifest, row.taken_ns)

    def compare(
        self, cid: int, since: bool = False, progress: Progress = no_progress
    ) -> Comparison:
        """Now against checkpoint `cid`: file changes as a restore would make them,
        or (`since`) as they happened after the checkpoint."""
        row = self.get(cid)
        trees = []
        for t in self.store.checkpoint_trees(cid):
            then = self.tree(t)
            what, total = f"{then.root}, entries compared", len(then.entries)
            now = snapshot.take(
                then.root, snapshot.DigestOnly(), then, then.excludes, then.size_cap,
                self.own_dirs(), progress=lambda n, w=what, t=total: progress(w, n, t),
            )  # fmt: skip
            changes = snapshot.diff(then, now) if since else snapshot.diff(now, then)
            trees.append(TreeDiff(then.root, changes))
        probes = []
        recorded = self.store.checkpoint_probes(cid)
        for probe in self.probes(False, False, recorded):
            reason = probe.unavailable()
            if reason:
                probes.append(ProbeDiff(probe.name, [], reason))
                continue
            then_state = json.loads(recorded[probe.name])
            probes.append(ProbeDiff(probe.name, probe.diff(then_state, probe.capture(None))))
        return Comparison(row, trees, probes)

    # --- restoring -----------------------------------------------------------

    def restore(
        self, cid: int, comparison: Comparison | None = None, progress: Progress = no_progress
    ) -> RestoreReport:
        with self.objects_lock(exclusive=False):  # (not while gc runs: after, or before it)
            self.get(cid)
            self.pin(cid)
        try:
            return self._restore(cid, progress)
        except (OSError, sqlite3.OperationalError) as e:
            raise RwError(f"the restore stopped: {_reason(e)}", EXIT_INCOMPLETE) from None
        finally:
            self.unpin(cid)

    def _restore(self, cid: int, progress: Progress) -> RestoreReport:
        row = self.get(cid)
        report = RestoreReport(row)
        recorded = self.store.checkpoint_probes(cid)
        probes = {p.name: p for p in self.probes(False, False, recorded)}

        def restore_probe(name: str) -> None:
            probe = probes.get(name)
            if probe is None or name not in recorded:
                return
            reason = probe.unavailable()
            if reason:
                report.failed.append(f"{name}: cannot run here: {reason}")
                return
            then_state = json.loads(recorded[name])
            progress(f"restore: {name}")
            result = probe.restore(then_state, probe.capture(None), self.artifacts)
            report.restored += [c.describe() for c in result.done]
            report.failed += [f"{c.describe()}: {why}" for c, why in result.failed]
            left = probe.diff(then_state, probe.capture(None))
            failed_items = {c.item for c, _ in result.failed}
            report.failed += [
                f"{c.describe()}: still differs after restore"
                for c in left
                if c.item not in failed_items
            ]

        trees = []
        for t in self.store.checkpoint_trees(cid):
            try:
                trees.append(self.tree(t))
            except ObjectError as e:
                report.failed.append(f"{t.root}: {e}")
        for then in trees:  # (before anything is touched)
            snapshot.check_root(then, f"checkpoint {cid}")
        for name in PACKAGE_PROBES:
            restore_probe(name)
        for then in trees:
            result = snapshot.restore(
                then, self.objects, self.own_dirs(), progress, self.restore_journals()
            )
            report.restored += [
                f"removed   {path}  (left by an interrupted restore)" for path in result.swept
            ]
            report.restored += [c.describe(then.root) for c in result.applied]
            report.failed += [f"{full_path(then.root, rel)}: {why}" for rel, why in result.failed]
            self._previous.pop(then.root, None)
        restore_probe("services")
        return report

    def restore_journals(self) -> str:
        """Where restores list the temporary files they make (see snapshot._Journal)."""
        return str(self.paths.data_dir / "restores")

    def sweep_leftovers(self) -> list[str]:
        """Remove what restores killed half-way left (their journals name it)."""
        return snapshot.sweep_leftovers(self.restore_journals())

    # --- removing ------------------------------------------------------------

    def remove(self, ids: Iterable[int]) -> int:
        ids = list(ids)
        for cid in ids:
            self.get(cid)
        with self.store.transaction():
            return self.store.remove_checkpoints(ids)

    # A pin is a file of data_dir/pins, named after its checkpoint and locked
    # by the process that uses it: gc keeps a checkpoint whose pin is locked,
    # and removes pins whose process is gone (a lock dies with it: no pid to reuse).

    def pin(self, cid: int) -> None:
        """Keep checkpoint `cid` from gc until unpin(cid), or until this process ends."""
        pins = self.paths.data_dir / "pins"
        pins.mkdir(mode=0o700, parents=True, exist_ok=True)
        path = pins / f"{cid}.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        self._pins.setdefault(cid, []).append((fd, path))

    def unpin(self, cid: int) -> None:
        held = self._pins.get(cid)
        if held:
            fd, path = held.pop()
            path.unlink(missing_ok=True)
            os.close(fd)

    def pinned(self) -> set[int]:
        """The checkpoints in use (a guarded run or a restore holds them); stale pins removed."""
        out: set[int] = set()
        pins = self.paths.data_dir / "pins"
        try:
            names = os.listdir(pins)
        except FileNotFoundError:
            return out
        for name in names:
            try:
                cid = int(name.split(".")[0])
                fd = os.open(pins / name, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC)
            except (ValueError, OSError):
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                out.add(cid)
            else:
                (pins / name).unlink(missing_ok=True)  # its process has ended
            finally:
                os.close(fd)
        return out

    @contextmanager
    def objects_lock(self, exclusive: bool) -> Iterator[None]:
        self.objects.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.objects.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def gc(
        self,
        dry_run: bool = False,
        in_use: AbstractSet[str] = frozenset(),
        progress: Progress = no_progress,
    ) -> GcReport:
        """Retention, then unreferenced objects: keep the last `keep_per_session`
        checkpoints of each session, then drop the oldest until the objects fit
        in `max_total_size`. Never dropped: a checkpoint in use (pinned: a
        guarded run or a restore), nor, for size, the newest of each tree.
        `in_use`: objects the caller still relies on (the daemon's current
        snapshots of watched trees)."""
        try:
            with self.objects_lock(exclusive=True):
                sweep_temporary(self.objects)  # (first: a crash's partial files take room)
                return self._gc(dry_run, in_use, progress)
        except (OSError, sqlite3.OperationalError) as e:
            raise RwError(f"gc stopped: {_reason(e)}", EXIT_PROBLEM) from None

    def _gc(self, dry_run: bool, in_use: AbstractSet[str], progress: Progress) -> GcReport:
        report = GcReport()
        rows = self.store.checkpoints(state=None)
        pinned = self.pinned()
        busy = "in use (a guarded command or a restore is running)"
        spared: dict[int, str] = {}
        doomed: set[int] = set()
        by_session: dict[str | None, list[CheckpointRow]] = {}
        for r in rows:
            if r.state != "ok" and r.created_at < time.time() - 3600:
                doomed.add(r.id)  # never confirmed
            elif r.session is not None:
                by_session.setdefault(r.session, []).append(r)
        for group in by_session.values():
            # (keep_per_session = 0 keeps none: group[:None] is all of them)
            doomed.update(r.id for r in group[: -self.config.keep_per_session or None])
        spared.update((cid, busy) for cid in doomed & pinned)
        doomed -= pinned
        newest = {t.root: r.id for r in rows if r.state == "ok" and r.id not in doomed
                  for t in self.store.checkpoint_trees(r.id)}  # fmt: skip
        keep = pinned | set(newest.values())
        progress("gc: listing objects")
        sizes = self.objects.sizes()
        kept = [r for r in rows if r.id not in doomed]
        while kept:
            live = self._referenced([r.id for r in kept], progress)
            if sum(sizes.get(d, 0) for d in live) <= self.config.max_total_size:
                break
            oldest = next((r for r in kept if r.id not in keep), None)
            if oldest is None:  # over the limit with only these left: say why they stay
                for root, cid in newest.items():
                    spared.setdefault(cid, f"the newest checkpoint of {root}")
                spared.update((r.id, busy) for r in kept if r.id in pinned)
                break
            kept.remove(oldest)
            doomed.add(oldest.id)
        report.kept = [f"checkpoint {cid}: {why}" for cid, why in sorted(spared.items())]
        live = self._referenced([r.id for r in rows if r.id not in doomed], progress) | in_use
        garbage = [d for d in sizes if d not in live]
        report.checkpoints = sorted(doomed)
        report.objects = len(garbage)
        report.bytes = sum(sizes[d] for d in garbage)
        debs = self._debs_in_use([r.id for r in rows if r.id not in doomed])
        if self.artifacts.is_dir():
            report.debs = [p for p in self.artifacts.iterdir() if p.name not in debs]
        report.disk_before = report.disk_after = self.objects.disk_usage()
        outputs = self._outputs_over_quota()
        report.outputs = len(outputs)
        report.output_bytes = sum(size for _, _, size in outputs)
        if not dry_run:
            with self.store.transaction():
                self.store.remove_checkpoints(doomed)
                self.store.remove_outputs((sid, n) for sid, n, _ in outputs)
            progress(f"gc: removing {len(garbage):,} objects")
            self.objects.remove(garbage)
            for p in report.debs:
                p.unlink(missing_ok=True)
            sweep_temporary(self.objects)
            progress("gc: giving the space back to the disk")
            self.objects.compact()
            report.disk_after = self.objects.disk_usage()
        return report

    def _outputs_over_quota(self) -> list[tuple[str, int, int]]:
        """The recorded outputs to drop, oldest steps' first, until the rest fit
        in `[record] max_total_output` (the steps stay)."""
        _, used = self.store.output_usage()
        doomed = []
        for sid, number, size in (
            self.store.oldest_outputs() if used > self.config.max_total_output else ()
        ):
            if used <= self.config.max_total_output:
                break
            doomed.append((sid, number, size))
            used -= size
        return doomed

    def _referenced(self, ids: list[int], progress: Progress = no_progress) -> set[str]:
        live: set[str] = set()
        manifests = {t.manifest for cid in ids for t in self.store.checkpoint_trees(cid)}
        for i, m in enumerate(manifests):
            progress("gc, checkpoints read", i, len(manifests))
            if m not in self._manifest_refs:
                try:
                    snap = snapshot.Snapshot.from_manifest(self.objects.read(m), 0, m)
                    self._manifest_refs[m] = objects_of(snap)
                except ObjectError:
                    self._manifest_refs[m] = {m}
            live |= self._manifest_refs[m]
        return live

    def _debs_in_use(self, ids: list[int]) -> set[str]:
        names: set[str] = set()
        for cid in ids:
            data = self.store.checkpoint_probes(cid).get("dpkg")
            if data:
                names.update(json.loads(data).get("artifacts", []))
        return names

    # --- checking ------------------------------------------------------------

    def check_objects(self) -> list[str]:
        """Problems with the objects that checkpoints need (missing or corrupt)."""
        problems = []
        rows = self.store.checkpoints()
        files: dict[str, str] = {}  # digest -> a path that has it
        for m in sorted({t.manifest for r in rows for t in self.store.checkpoint_trees(r.id)}):
            try:
                snap = snapshot.Snapshot.from_manifest(self.objects.read(m), 0, m)
            except ObjectError as e:
                problems.append(str(e))
                continue
            for rel, entry in snap.entries.items():
                if entry.kind == "file" and entry.data:
                    files.setdefault(entry.data, full_path(snap.root, rel))
        for digest, path in sorted(files.items(), key=lambda kv: kv[1]):
            why = self.objects.verify(digest)
            if why:
                problems.append(f"{path}: {why}")
        return problems


@dataclass
class GcReport:
    checkpoints: list[int] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0
    debs: list[Path] = field(default_factory=list)
    disk_before: int = 0  # bytes the object store took on disk before and after
    disk_after: int = 0
    outputs: int = 0  # steps whose recorded output went over the quota
    output_bytes: int = 0
    kept: list[str] = field(default_factory=list)  # checkpoints gc would drop, and why not

    def to_json(self) -> dict:
        return {
            "outputs": self.outputs,
            "output_bytes": self.output_bytes,
            "checkpoints": self.checkpoints,
            "objects": self.objects,
            "bytes": self.bytes,
            "debs": [str(p) for p in self.debs],
            "disk_before": self.disk_before,
            "disk_after": self.disk_after,
            "kept": self.kept,
        }

    @classmethod
    def from_json(cls, doc: dict) -> GcReport:
        return cls(
            doc["checkpoints"],
            doc["objects"],
            doc["bytes"],
            [Path(p) for p in doc["debs"]],
            doc.get("disk_before", 0),  # (a daemon started before these were reported)
            doc.get("disk_after", 0),
            doc.get("outputs", 0),
            doc.get("output_bytes", 0),
            doc.get("kept", []),
        )


def _reason(e: OSError | sqlite3.Error) -> str:
    if isinstance(e, OSError):
        return f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")
    return str(e)


def objects_of(snap: snapshot.Snapshot) -> set[str]:
    """The objects a snapshot needs: its manifest and its files' content."""
    refs = {e.data for e in snap.entries.values() if e.kind == "file" and e.data}
    if snap.manifest:
        refs.add(snap.manifest)
    return refs

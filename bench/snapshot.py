"""Checkpoints of file trees: first, no-change and 1%-changed checkpoints and a
restore of 1,000 changed files, against tar, git status and rsync on the same tree.

Each tree (10,000 and 100,000 files by default: about 100 small text files of
varied size per directory, two levels deep, plus a few larger files and
symlinks) is generated in a temporary directory with mtimes in the past. The
engine is measured in-process, as the daemon takes per-command checkpoints
(the previous snapshot in memory); `rw checkpoint create` is timed too, with
interpreter start. Baselines in the same run: `tar -cf - . | wc -c` for the
first checkpoint (a pipe: GNU tar skips reading files when writing to
/dev/null), `git status --porcelain` and `rsync -a --dry-run` for no change,
`rsync -a --delete` from a pristine copy for the restore (--delete: a restore
removes what the checkpoint did not have). Before each timed restore, rw's or
rsync's, the bench syncs: rw's restore syncs the filesystem, and would
otherwise be flushing what rsync and the bench wrote just before it.

Targets: a no-change checkpoint of 10,000 files <= 60 ms and <= 1.5x `git
status` on the same tree; a restore faster than rsync.
"""

from __future__ import annotations

import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from _common import Verdicts, machine, median_wall, parser, rw_env, rw_home, rw_program

from rewind_daemon.checkpoints.checkpoint import snapshot
from rewind_daemon.checkpoints.objects import ObjectStore

TARGET_NO_CHANGE_MS = 60.0  # for 10,000 files; prorated for other sizes
TARGET_VS_GIT = 1.5
FILES_PER_DIR = 100
DIRS_PER_TOP = 10
RESTORE_FILES = 1000
EXTS = ("py", "txt", "md", "json", "c", "h", "toml", "sh")
WORDS = (
    "import def return class self value path file tree index entry snapshot digest "
    "restore config option error result check list dict None True False for in if else "
    "while with open read write close the a of to and is that this it"
).split()


# --- the tree ----------------------------------------------------------------


class Tree:
    """A generated tree: its files, and when anything in it last changed."""

    def __init__(self, root: Path, files: list[Path], nbytes: int, dirs: int, links: int):
        self.root = root
        self.files = files
        self.nbytes = nbytes
        self.dirs = dirs
        self.links = links
        self.changed_ns = time.time_ns()

    def touch(self, paths: list[Path], tag: str) -> None:
        """Append a line to each file (new size, mtime, ctime and content)."""
        for p in paths:
            with open(p, "ab") as f:
                f.write(f"# {tag}\n".encode())
        self.changed_ns = time.time_ns()

    def wait_until_trusted(self) -> None:
        """A snapshot trusts an entry's stat only if it changed more than
        RACY_NS before the snapshot was taken: wait that long, as a user
        between commands would."""
        left = self.changed_ns + snapshot.RACY_NS + 50_000_000 - time.time_ns()
        if left > 0:
            time.sleep(left / 1e9)


def make_tree(root: Path, n: int, rng: random.Random) -> Tree:
    pool = " ".join(rng.choice(WORDS) for _ in range(80_000)).encode()
    pool = b"\n".join(pool[i : i + 72] for i in range(0, len(pool), 72))
    past = time.time_ns() - 400 * 86400 * 10**9
    files: list[Path] = []
    nbytes = 0
    leaves = max(1, n // FILES_PER_DIR)
    dirs: list[Path] = []
    links = 0
    for d in range(leaves):
        top = root / f"pkg{d // DIRS_PER_TOP:03}"
        leaf = top / f"mod{d % DIRS_PER_TOP}"
        leaf.mkdir(parents=True)
        if d % DIRS_PER_TOP == 0:
            dirs.append(top)
            os.symlink(f"mod0/f000.{EXTS[0]}", top / "current")
            links += 1
        dirs.append(leaf)
        count = FILES_PER_DIR if d < leaves - 1 else n - FILES_PER_DIR * (leaves - 1)
        for j in range(count):
            size = min(int(rng.lognormvariate(7.3, 1.0)), 64 * 1024)
            start = rng.randrange(len(pool) - size)
            data = f"# {leaf.name}/{j} of {d}\n".encode() + pool[start : start + size]
            p = leaf / f"f{j:03}.{EXTS[j % len(EXTS)]}"
            p.write_bytes(data)
            t = past + rng.randrange(300 * 86400) * 10**9
            os.utime(p, ns=(t, t))
            files.append(p)
            nbytes += len(data)
    # A few larger files per 10,000: text (compressible) and binary (not).
    big = root / "assets"
    big.mkdir()
    dirs.append(big)
    for k in range(max(1, n // 10_000) * 3):
        if k % 3 == 2:
            data = rng.randbytes(4 * 1024 * 1024)
        else:
            data = pool[: 1024 * 1024]
            data = f"# asset {k}\n".encode() + data
        p = big / f"asset{k}.{'bin' if k % 3 == 2 else 'log'}"
        p.write_bytes(data)
        os.utime(p, ns=(past, past))
        nbytes += len(data)
    (root / "empty").mkdir()
    dirs.append(root / "empty")
    for d in reversed(dirs):
        os.utime(d, ns=(past, past), follow_symlinks=False)
    return Tree(root, files, nbytes, len(dirs), links)


# --- timing ------------------------------------------------------------------


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def median_of(fn: Callable[[], object], runs: int) -> float:
    return statistics.median(timed(fn)[0] for _ in range(runs))


def wall(argv: list[str], cwd: Path | None = None) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"bench: {' '.join(argv[:3])} exited {proc.returncode}: {proc.stderr}")
    return elapsed, proc.stdout


def checkpoint(objects: ObjectStore, root: str, previous: snapshot.Snapshot | None):
    """What the daemon does per watched tree: take, store the manifest, commit."""
    with objects.batch() as b:
        snap = snapshot.take(root, b, previous)
        snapshot.store(snap, b)
    return snap


def verifying_pass(root: str, snap: snapshot.Snapshot) -> list[snapshot.Change]:
    """What restore's last step does: the whole tree checked against `snap`."""
    return snapshot.diff(snapshot.take(root, snapshot.DigestOnly(), snap), snap)


# --- one tree ----------------------------------------------------------------


def bench_tree(n: int, runs: int, work: Path, v: Verdicts, quick: bool) -> None:
    first_runs = min(runs, 3)  # the slowest part, and no target
    rng = random.Random(n)
    tree = make_tree(work / "tree", n, rng)
    root = str(tree.root)
    copy = work / "copy"
    subprocess.run(["cp", "-a", root, str(copy)], check=True)
    git = ["git", "--git-dir", str(work / "git"), "--work-tree", root]
    git_c = ["-c", "user.name=bench", "-c", "user.email=bench@example.invalid",
             "-c", "commit.gpgsign=false", "-c", "gc.auto=0"]  # fmt: skip
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, *git_c, "add", "-A"], check=True)
    subprocess.run([*git, *git_c, "commit", "-q", "-m", "tree"], check=True)
    tree.wait_until_trusted()
    entries = n + tree.dirs + tree.links + len(list((tree.root / "assets").iterdir())) + 1
    print(
        f"\n  tree: {n:,} files in {tree.dirs} directories, {tree.links} symlinks, a few larger"
        f" files; {tree.nbytes / 1e6:.1f} MB; page cache warm; medians (of N runs)"
    )
    rows: list[tuple[str, float, int, str]] = []

    # First checkpoint: an empty object store each time.
    tar = ["sh", "-c", "tar -cf - . | wc -c"]
    wall(tar, tree.root)
    t_tar = statistics.median(wall(tar, tree.root)[0] for _ in range(first_runs))
    firsts = []
    objects = ObjectStore(work / "objects")
    for i in range(first_runs):
        if i:
            objects.close()
            shutil.rmtree(objects.root)
        t, base = timed(partial(checkpoint, objects, root, None))
        firsts.append(t)
    t_first = statistics.median(firsts)
    assert isinstance(base, snapshot.Snapshot)
    if len(base.entries) != entries:
        raise SystemExit(f"bench: {len(base.entries)} entries recorded, {entries} expected")
    rows.append(("first checkpoint (empty store)", t_first, first_runs, ""))
    rows.append(("tar -cf - . | wc -c (a pipe)", t_tar, first_runs, f"rw {t_first / t_tar:.2f}x"))

    # No change: the previous snapshot in memory, every entry old enough to trust.
    def no_change() -> None:
        snap = checkpoint(objects, root, base)
        if not snap.unchanged:
            raise SystemExit("bench: a no-change checkpoint saw a change")

    no_change()
    t_same = median_of(no_change, runs * 3)
    t_load = median_of(lambda: snapshot.load(objects, base.manifest or "", base.taken_ns), runs)
    t_dump = median_of(base.manifest_bytes, runs)
    _, out = wall([*git, "status", "--porcelain"])  # refreshes the index
    if out.strip():
        raise SystemExit(f"bench: git status is not clean: {out[:300]}")
    t_git = median_wall([*git, "status", "--porcelain"], dict(os.environ), runs * 3, warm_up=False)
    dry = ["rsync", "-a", "--dry-run", f"{root}/", f"{copy}/"]
    t_dry = median_wall(dry, dict(os.environ), runs * 3)
    rows.append(("no-change checkpoint (in-process)", t_same, runs * 3, ""))
    rows.append(("git status --porcelain", t_git, runs * 3, f"rw {t_same / t_git:.2f}x"))
    rows.append(("rsync -a --dry-run tree/ copy/", t_dry, runs * 3, f"rw {t_same / t_dry:.2f}x"))
    rows.append(("  load a manifest (snapshot.load)", t_load, runs, ""))
    rows.append(("  serialise a manifest", t_dump, runs, ""))

    # 1% changed: the same files each run, new content each run.
    order = list(tree.files)
    rng.shuffle(order)
    some = order[: max(1, n // 100)]
    restored = order[:RESTORE_FILES]
    changed = []
    for i in range(runs):
        tree.touch(some, f"one percent {i}")
        t, snap = timed(lambda: checkpoint(objects, root, base))
        assert isinstance(snap, snapshot.Snapshot)
        if len(snapshot.diff(base, snap)) != len(some):
            raise SystemExit("bench: the 1% checkpoint did not see the changed files")
        changed.append(t)
    t_some = statistics.median(changed)
    rows.append((f"1% changed checkpoint ({len(some):,} files)", t_some, runs, ""))

    # Restore of 1,000 changed files: rw from the snapshot, rsync from the copy.
    t_rw, t_verify, t_rsync = [], [], []
    rereads = 0
    for i in range(runs):
        tree.touch(restored, f"restore {i}")
        os.sync()  # (each starts with nothing of the other's left to write back)
        t, result = timed(lambda: snapshot.restore(base, objects))
        assert isinstance(result, snapshot.RestoreResult)
        if result.failed or len(result.applied) < len(restored):
            raise SystemExit(f"bench: restore failed: {result.failed[:3]}")
        t_rw.append(t)
        rereads += result.reread
        t_verify.append(timed(partial(verifying_pass, root, base))[0])
        tree.touch(restored, f"rsync {i}")
        os.sync()
        t_rsync.append(wall(["rsync", "-a", "--delete", f"{copy}/", f"{root}/"])[0])
    after = snapshot.take(root, snapshot.DigestOnly())
    if snapshot.diff(after, base):
        raise SystemExit("bench: rsync did not give back the tree")
    t_restore, t_rs = statistics.median(t_rw), statistics.median(t_rsync)
    how = f"{rereads} of {runs} verified by reading it all" if rereads else "verified via inotify"
    rows.append((f"restore of {len(restored):,} changed files", t_restore, runs, how))
    rows.append(("  reading the tree again, for comparison", statistics.median(t_verify), runs, ""))
    rows.append(("rsync -a --delete copy/ tree/ (same)", t_rs, runs, f"rw {t_restore / t_rs:.2f}x"))
    objects.close()

    # The real command, interpreter start included: the previous checkpoint
    # comes from the store (a manifest to load), not from memory.
    rw = rw_program()
    with rw_home() as home:
        env = rw_env(home)
        tree.changed_ns = time.time_ns()  # rsync's writes above
        tree.wait_until_trusted()
        argv = [rw, "checkpoint", "create", "--paths", root]
        t_cli_first = median_wall(argv, env, 1, warm_up=False)
        t_cli = median_wall(argv, env, runs * 2)
        t_version = median_wall([rw, "--version"], env, runs * 2)
    rows.append(("rw checkpoint create, first (CLI)", t_cli_first, 1, ""))
    rows.append(("rw checkpoint create, no change (CLI)", t_cli, runs * 2, ""))
    rows.append(("rw --version", t_version, runs * 2, f"create {t_cli / t_version:.2f}x"))

    for label, t, k, note in rows:
        print(f"  {label:<40} {t * 1000:9.1f} ms  ({k:2})  {note}")
    limit = TARGET_NO_CHANGE_MS * n / 10_000
    scaled = "" if n == 10_000 else f" (prorated from {TARGET_NO_CHANGE_MS:g} ms per 10,000)"
    if n == 10_000 or quick:
        v.at_most(f"no-change checkpoint, {n:,} files{scaled}", t_same * 1000, limit, "ms")
        v.at_most(f"no-change checkpoint / git status, {n:,} files", t_same / t_git,
                  TARGET_VS_GIT, "x")  # fmt: skip
    v.at_most(f"restore / rsync, {len(restored):,} files of {n:,}", t_restore / t_rs, 1.0, "x")
    shutil.rmtree(work)


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--files", type=int, action="append",
                   help="Files in a tree (repeatable; default 10,000 and 100,000).")  # fmt: skip
    args = p.parse_args()
    sizes = args.files or ([2_000] if args.quick else [10_000, 100_000])
    runs = 3 if args.quick else 7
    for tool in ("git", "rsync", "tar"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is needed (apt-get install {tool})")
    print(f"snapshot on {machine()}")
    v = Verdicts()
    with tempfile.TemporaryDirectory(prefix="rw-bench-snap-") as tmp:
        for n in sizes:
            bench_tree(n, runs, Path(tmp) / f"n{n}", v, args.quick)
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

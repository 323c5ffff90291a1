"""Wall time of `rw log SESSION --limit 50` on a store of 1,000,000 steps.

The store is built directly with rewind_daemon.store.Store in one
transaction: five sessions, the queried one holding 600,000 of the steps.
The daemon runs (as it does for a user), so each `rw log` also makes its sync
request over the socket. Each figure is the median of several runs of the
program as a subprocess, interpreter start included, after one warm-up run.

Baselines in the same run: `python -c pass`, `python -c 'import
rewind_daemon.cli'` and `rw --version` (the console script, click, no store).
A diagnostic line times the query itself in-process (history.session_log).

    python bench/log_query.py [--quick] [--check] [--steps N]
"""

from __future__ import annotations

import os
import random
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import (
    Verdicts,
    machine,
    median_wall,
    parser,
    rw_env,
    rw_home,
    rw_paths,
    rw_program,
    start_daemon,
)

from rewind_daemon.store import Store, env_blob
from rewind_daemon.timeline import history

MAX_MS = 200.0
LIMIT = 50
COMMANDS = [
    "git status", "make test", "ls -la", "cd src", "pytest -x", "vim README.md",
    "kubectl get pods -n prod", "docker compose up -d", "git push", "grep -rn TODO .",
]  # fmt: skip


def build_store(db: Path, steps: int) -> str:
    """Create the store; return the id of the session `rw log` will show."""
    rng = random.Random(3)
    shares = [steps * 6 // 10] + [steps // 10] * 4
    shares[0] += steps - sum(shares)
    store = Store(db)
    try:
        with store.transaction():
            env_ids = [store.add_env(*env_blob({"PATH": "/usr/bin:/bin", "N": str(i)}))
                       for i in range(200)]  # fmt: skip
            sids = []
            for index, share in enumerate(shares):
                sid = f"17950000000000{index:02d}0bench{index}"
                t = 1_790_000_000.0 + index * 1e6
                store.upsert_session(
                    sid, parent_id=None, shell="bash", shell_version="5.2.15(1)-release",
                    pid=os.getpid(), tty="/dev/pts/1", started_at=t, cwd="/srv/app",
                    host=socket.gethostname(), user="dev",
                )  # fmt: skip
                store.set_session_name(sid, f"bench-{index}")
                store.end_session(sid, t + share * 2.0)
                store.bulk_insert_steps(
                    (sid, n, n, rng.choice(COMMANDS), "/srv/app", "/srv/app", t + n * 2.0,
                     t + n * 2.0 + 0.25, 0 if n % 17 else 1, "0", rng.choice(env_ids))
                    for n in range(1, share + 1)
                )  # fmt: skip
                sids.append(sid)
    finally:
        store.close()
    return sids[0]


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, help="Steps in the store (default 1000000; quick 100000).")
    args = p.parse_args()
    steps = args.steps or (100_000 if args.quick else 1_000_000)
    runs = 5 if args.quick else 10
    print(f"log_query on {machine()}")
    v = Verdicts()
    rw = rw_program()
    with rw_home() as home:
        env = rw_env(home)
        db = rw_paths(home).db
        t0 = time.perf_counter()
        sid = build_store(db, steps)
        size = sum(f.stat().st_size for f in db.parent.iterdir() if f.name.startswith("rw.db"))
        print(
            f"  store: {steps:,} steps in 5 sessions ({steps * 6 // 10:,} in the one shown), "
            f"{size / 1e6:.0f} MB, built in {time.perf_counter() - t0:.1f}s"
        )
        start_daemon(home)
        log_argv = [rw, "log", sid, "--limit", str(LIMIT)]
        out = subprocess.run(log_argv, env=env, capture_output=True, text=True).stdout
        shown = [line for line in out.splitlines() if line[:5].strip().isdigit()]
        if len(shown) != LIMIT:
            raise SystemExit(f"bench: rw log printed {len(shown)} steps, not {LIMIT}:\n{out}")
        log_ms = median_wall(log_argv, env, runs) * 1000
        version_ms = median_wall([rw, "--version"], env, runs) * 1000
        pass_ms = median_wall([sys.executable, "-c", "pass"], env, runs) * 1000
        import_ms = (
            median_wall([sys.executable, "-c", "import rewind_daemon.cli"], env, runs) * 1000
        )
        store = Store.open_for_reading(db)
        assert store is not None
        query = []
        for _ in range(runs):
            t0 = time.perf_counter()
            history.session_log(store, sid, limit=LIMIT)
            query.append((time.perf_counter() - t0) * 1000)
        store.close()
    query_ms = statistics.median(query)
    print(f"  median of {runs} runs, wall clock, daemon running:")
    rows = [
        (f"rw log SESSION --limit {LIMIT}", log_ms),
        ("rw --version", version_ms),
        ("python -c 'import rewind_daemon.cli'", import_ms),
        ("python -c pass", pass_ms),
    ]
    print(f"    {rows[0][0]:<38} {log_ms:7.1f} ms")
    for label, ms in rows[1:]:
        print(f"    {label:<38} {ms:7.1f} ms  (rw log takes {log_ms / ms:.2f}x as long)")
    print(f"  in-process history.session_log(limit={LIMIT}): {query_ms:.1f} ms")
    v.at_most(f"rw log --limit {LIMIT} on {steps:,} steps", log_ms, MAX_MS, "ms")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

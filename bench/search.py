"""Wall time of `rw search` on a store of 1,000,000 steps with 2 GB of output text.

The store is built once with rewind_daemon.store.Store (bulk step inserts,
Store.set_output for each output, then Store.index_pending, as the daemon
indexes) and kept in a cache directory named by its parameters, so later runs
start at once (`--rebuild` builds it again). Steps belong to 20 sessions over
the last year, in eight directories, one in twelve failing; a third of them
have output (build logs, package managers, test runners: lines drawn from a
pool, with hosts, paths and numbers), compressed as rw stores it. A few steps
print a rare line ("E: Unable to locate package rwbench-needle").

Each figure is the median of several runs of `rw search ...` as a
subprocess, interpreter start included, with the daemon running (each run
makes its sync request), after one warm-up run. Baselines in the same run:
`rw --version` (start-up alone) and, in-process, a plain SQLite LIKE over the
commands of the same store, newest first.

    python bench/search.py [--quick] [--check] [--steps N] [--output-mb MB]
                           [--cache DIR] [--rebuild]
"""

from __future__ import annotations

import json
import os
import random
import resource
import shutil
import socket
import sqlite3
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

from rewind_daemon.capture.termtext import text_of
from rewind_daemon.store import OutputRow, Store
from rewind_daemon.timeline import search

MAX_MS = 200.0
SESSIONS = 20
DIRS = ["/srv/app", "/srv/app/web", "/srv/api", "/home/dev/src/rw", "/home/dev", "/etc/nginx",
        "/var/log", "/srv/build"]  # fmt: skip
COMMANDS = [
    "git status", "make test", "ls -la", "cd src", "pytest -x", "vim README.md",
    "kubectl get pods -n prod", "docker compose up -d", "git push", "grep -rn TODO .",
    "sudo apt-get install -y {pkg}", "ssh {host} uptime", "./deploy.sh {host}",
    "tail -n 100 /var/log/{pkg}.log", "cargo build --release", "npm run build",
    "curl -fsS https://{host}/health", "systemctl restart {pkg}", "make -j4", "cat {path}",
]  # fmt: skip
PKGS = ["nginx", "postgresql", "redis-server", "python3-venv", "libssl-dev", "curl", "jq"]
HOSTS = [f"web-{i:02d}.prod.example.net" for i in range(40)] + ["db-01.internal", "10.0.3.7"]
PATHS = ["/etc/nginx/nginx.conf", "/srv/app/config.yml", "/var/log/syslog", "src/main.rs"]
LINE_FORMS = [
    "Get:{n} http://mirror.example.net/debian bookworm/main amd64 {pkg} amd64 {v} [{n} kB]",
    "Setting up {pkg} ({v}) ...", "Unpacking {pkg} ({v}) over ({v}) ...",
    "Reading package lists... Done", "Building dependency tree... Done",
    "   Compiling {pkg} v{v}", "warning: unused variable: `x{n}` --> src/lib.rs:{n}:9",
    "error[E0{n}]: mismatched types in {path}", "tests/test_{pkg}.py::test_{n} PASSED",
    "tests/test_{pkg}.py::test_{n} FAILED", "{host}: up {n} days, load average: 0.{n}",
    "HTTP/1.1 200 OK from {host} in {n} ms", "Connection to {host} port 22 timed out",
    "npm WARN deprecated {pkg}@{v}: no longer supported", "  {path}:{n}: TODO remove this",
    "INFO [{n}] request id={hex} path=/api/v1/items/{n} status=200",
    "ERROR [{n}] request id={hex} upstream {host} returned 502",
]  # fmt: skip
NEEDLE = "E: Unable to locate package rwbench-needle"


def _fill(form: str, rng: random.Random) -> str:
    return form.format(
        n=rng.randrange(1, 5000), v=f"{rng.randrange(1, 9)}.{rng.randrange(30)}-{rng.randrange(9)}",
        pkg=rng.choice(PKGS), host=rng.choice(HOSTS), path=rng.choice(PATHS),
        hex=f"{rng.getrandbits(48):012x}",
    )  # fmt: skip


def build_store(db: Path, steps: int, output_mb: int) -> None:
    rng = random.Random(14)
    pool = [_fill(rng.choice(LINE_FORMS), rng) + "\n" for _ in range(20000)]
    with_output = steps // 3
    per_output = output_mb * 1_000_000 // max(1, with_output)  # bytes of text, on average
    mean_line = sum(map(len, pool)) / len(pool)
    needles = set(rng.sample(range(1, steps + 1), 5))
    store = Store(db)
    now = time.time() - 3600
    t0, span = now - 365 * 86400, 365 * 86400
    per = steps // SESSIONS
    done = 0
    text_bytes = 0
    for index in range(SESSIONS):
        sid = f"17900000000000{index:02d}0bench{index:02d}"
        start = t0 + span * index / SESSIONS
        count = per if index < SESSIONS - 1 else steps - per * (SESSIONS - 1)
        gap = span / SESSIONS / count
        with store.transaction():
            store.upsert_session(
                sid, parent_id=None, shell="bash", shell_version="5.2.15(1)-release",
                pid=os.getpid(), tty="/dev/pts/1", started_at=start, cwd="/srv/app",
                host=socket.gethostname(), user="dev",
            )  # fmt: skip
            store.set_session_name(sid, f"deploy-{index}")
            store.end_session(sid, start + count * gap)
        for first in range(1, count + 1, 20000):
            with store.transaction():
                rows = []
                for n in range(first, min(count, first + 19999) + 1):
                    command = _fill(rng.choice(COMMANDS), rng)
                    at = start + n * gap
                    code = 1 if rng.random() < 1 / 12 else 0
                    rows.append((sid, n, n, command, rng.choice(DIRS), None, at, at + 0.5,
                                 code, str(code), None))  # fmt: skip
                store.bulk_insert_steps(rows)
                for sid_, n, *_rest in rows:
                    done += 1
                    if done % 3 and done not in needles:
                        continue
                    lines = max(1, int(rng.expovariate(1 / (per_output / mean_line))))
                    text = "".join(rng.choices(pool, k=lines))
                    if done in needles:
                        text += NEEDLE + "\n"
                    text_bytes += len(text)
                    data = text.encode()
                    store.set_output(sid_, n, OutputRow(data, text, len(data)))
            print(f"\r  building: {done:,} steps, {text_bytes / 1e6:,.0f} MB of output text",
                  end="", flush=True)  # fmt: skip
    print()
    t = time.perf_counter()
    store.index_pending(text_of, 1e9)
    took = time.perf_counter() - t
    print(f"  indexed (Store.index_pending): {took:.1f}s, {text_bytes / 1e6 / took:.1f} MB/s "
          "of output text")  # fmt: skip
    store.close()


def median_cpu(argv: list[str], env: dict[str, str], runs: int) -> float:
    """Median CPU seconds (user + system) of `runs` runs of `argv`: on a machine
    other work shares, what the program itself costs, which wall time hides."""
    times = []
    for _ in range(runs):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        subprocess.run(argv, env=env, capture_output=True, stdin=subprocess.DEVNULL)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        times.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return statistics.median(times)


def _in_process(store: Store, argv: list[str], runs: int) -> float:
    """Median ms of search.search() for `argv` (the options the bench uses)."""
    opts: dict = {"output": "--output" in argv}
    words = []
    i = 0
    while i < len(argv):
        if argv[i] in ("--cwd", "--session", "--since", "--limit"):
            opts[argv[i][2:]] = argv[i + 1]
            i += 2
            continue
        if argv[i] == "--failed":
            opts["failed"] = True
        elif argv[i] != "--output":
            words.append(argv[i])
        i += 1
    since = opts.pop("since", None)
    kw = {**opts, "limit": int(opts.pop("limit", search.DEFAULT_LIMIT))}
    if since is not None:
        kw["since"] = search.parse_when(since)
    pattern = search.Pattern.of(" ".join(words))
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        search.search(store, pattern, **kw)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def sizes(db: Path) -> dict[str, float]:
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = con.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name").fetchall()
    except sqlite3.OperationalError:
        return {}
    finally:
        con.close()
    out: dict[str, float] = {}
    for name, size in rows:
        key = "index" if name.startswith("search_") else name
        out[key] = out.get(key, 0) + size / 1e6
    return out


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, help="Steps in the store (default 1000000; quick 100000).")
    p.add_argument("--output-mb", type=int, help="MB of output text (default 2000; quick 200).")
    p.add_argument("--cache", type=Path, help="Where built stores are kept (default: "
                   "$XDG_CACHE_HOME/rw-bench).")  # fmt: skip
    p.add_argument("--rebuild", action="store_true", help="Build the store again.")
    args = p.parse_args()
    steps = args.steps or (100_000 if args.quick else 1_000_000)
    output_mb = args.output_mb or (200 if args.quick else 2000)
    runs = 5 if args.quick else 9
    cache = (
        args.cache or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rw-bench"
    )
    built = cache / f"search-{steps}-{output_mb}mb-v3" / "rw.db"
    print(f"search on {machine()}")
    if args.rebuild or not built.exists():
        shutil.rmtree(built.parent, ignore_errors=True)
        built.parent.mkdir(parents=True, mode=0o700)
        t0 = time.perf_counter()
        build_store(built.with_suffix(".building"), steps, output_mb)
        built.with_suffix(".building").rename(built)
        print(f"  built in {time.perf_counter() - t0:.0f}s")
    v = Verdicts()
    rw = rw_program()
    with rw_home() as home:
        env = rw_env(home)
        db = rw_paths(home).db
        db.parent.mkdir(parents=True, mode=0o700, exist_ok=True)
        shutil.copyfile(built, db)
        os.chmod(db, 0o600)
        size = sizes(db)
        total = db.stat().st_size / 1e6
        print(
            f"  store: {steps:,} steps, {output_mb:,} MB of output text, {total:,.0f} MB on "
            f"disk (outputs {size.get('step_outputs', 0):,.0f} MB compressed, steps "
            f"{size.get('steps', 0):,.0f} MB, search index {size.get('index', 0):,.0f} MB)"
        )
        start_daemon(home)
        queries = [
            ("a rare output line", ["--output", "E: Unable to locate package rwbench"], 5),
            ("a common output word, --failed", ["--output", "timed out", "--failed"], 50),
            ("a common command word, --cwd", ["nginx", "--cwd", "/etc/nginx"], 50),
            ("output, --session", ["--output", "upstream", "--session", "deploy-3"], 50),
            ("a command, newest first, --limit 50", ["make", "--limit", "50"], 50),
            ("a rare command", ["ssh db-01.internal"], 50),
            ("output since 30d", ["--output", "FAILED", "--since", "30d"], 50),
        ]
        timed = []
        for label, argv, want in queries:
            out = subprocess.run([rw, "search", *argv, "--json"], env=env, capture_output=True,
                                 text=True)  # fmt: skip
            hits = json.loads(out.stdout or "[]")
            if len(hits) < min(want, 5):
                raise SystemExit(f"bench: rw search {argv} found {len(hits)}: {out.stderr}")
            ms = median_wall([rw, "search", *argv], env, runs) * 1000
            cpu = median_cpu([rw, "search", *argv], env, runs) * 1000
            timed.append((label, argv, ms, len(hits), cpu))
        version_ms = median_wall([rw, "--version"], env, runs) * 1000
        version_cpu = median_cpu([rw, "--version"], env, runs) * 1000
        log_argv = [rw, "log", "deploy-3", "--limit", "50"]
        log_ms = median_wall(log_argv, env, runs) * 1000
        log_cpu = median_cpu(log_argv, env, runs) * 1000
        store = Store.open_for_reading(db)
        assert store is not None
        inside = {}
        for label, argv, *_ in timed:
            inside[label] = _in_process(store, argv, runs)
        like = []
        for _ in range(runs):
            t0 = time.perf_counter()
            store.db.execute(
                "SELECT session, number FROM steps WHERE command LIKE ?"
                " ORDER BY started_at DESC LIMIT 50",
                ("%ssh db-01.internal%",),
            ).fetchall()
            like.append((time.perf_counter() - t0) * 1000)
        store.close()
    like_ms = statistics.median(like)
    print(f"  median of {runs} runs, wall clock, daemon running:")
    for label, argv, ms, n, cpu in timed:
        print(f"    {label:<38} {ms:7.1f} ms  ({ms / version_ms:.2f}x rw --version; CPU "
              f"{cpu:.0f} ms; in-process {inside[label]:.1f} ms; {n} hits)  "
              f"rw search {' '.join(argv)}")  # fmt: skip
    print(f"    {'rw --version':<38} {version_ms:7.1f} ms  (CPU {version_cpu:.0f} ms)")
    print(f"    {'rw log deploy-3 --limit 50':<38} {log_ms:7.1f} ms  (CPU {log_cpu:.0f} ms; the "
          "same start-up, a sync and a query by an index)")  # fmt: skip
    print(f"  in-process SQLite LIKE over the commands, newest 50: {like_ms:.1f} ms")
    for label, _argv, ms, *_ in timed:
        v.at_most(f"rw search, {label}", ms, MAX_MS, "ms")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

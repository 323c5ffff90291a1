"""rw guard: how fast a halt kills the whole process tree, and what streaming costs.

Kill latency: the guarded command starts a tree (a child, a grandchild that
called setsid with a child of its own, a double-forked orphan in a session of
its own), then writes a trigger line. Measured from just before that write to
the moment every process of the tree has exited (watched through pidfds from
outside), with the tree held in a cgroup v2 subtree (when one can be made)
and by the /proc scan alone. Target: median <= 100 ms.

Streaming: `seq N` through rw guard (whose output goes to /dev/null) against
`seq N > /dev/null` in the same run; the rate counts rw's whole run
(start-up and checkpoint included). Target: >= 200,000 lines/s.
"""

from __future__ import annotations

import os
import re
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Verdicts, machine, parser, rw_env, rw_home, rw_program

KILL_TARGET_MS = 100.0
RATE_TARGET = 200_000

TREE = r"""
import os, subprocess, sys, time
pidfile, go = sys.argv[1], sys.argv[2]
child = subprocess.Popen(["sleep", "300"])
subprocess.Popen(["setsid", "sh", "-c", 'sleep 301 & echo $! >> "$0"; echo $$ >> "$0"; wait',
                  pidfile])
subprocess.run(["sh", "-c", "setsid sh -c 'echo $$ >> \"$0\"; exec sleep 302' \"$0\" &", pidfile])
with open(pidfile, "a") as f:
    f.write(f"{os.getpid()}\n{child.pid}\n")
while not os.path.exists(go):
    time.sleep(0.001)
t = time.monotonic()
sys.stdout.write(f"ERROR: tripped at {t:.6f}\n")
sys.stdout.flush()
time.sleep(300)
"""
TREE_SIZE = 5


def config(home: Path, cgroup: bool) -> None:
    (home / "config" / "config.toml").write_text(
        f"[daemon]\nautostart = false\n[guard]\ncgroup = {str(cgroup).lower()}\n"
    )


def kill_latency(home: Path, work: Path, cgroup: bool) -> tuple[float, str]:
    """Seconds from the trigger line to the whole tree dead, and the containment used."""
    config(home, cgroup)
    pidfile, go = work / "pids", work / "go"
    for p in (pidfile, go):
        p.unlink(missing_ok=True)
    script = work / "tree.py"
    script.write_text(TREE)
    report = work / "report.json"
    tree = [sys.executable, str(script), str(pidfile), str(go)]
    argv = [rw_program(), "guard", "--paths", str(work / "site"), "--no-rollback",
            "--report", str(report), "--", *tree]  # fmt: skip
    proc = subprocess.Popen(
        argv, env=rw_env(home), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    pids: list[int] = []
    while len(pids) < TREE_SIZE:
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"bench: the tree did not start: {proc.communicate()[1][-500:]}")
        try:
            pids = [int(x) for x in pidfile.read_text().split()]
        except (OSError, ValueError):
            pass
        time.sleep(0.001)
    fds = [os.pidfd_open(pid) for pid in pids]
    poller = select.poll()
    for fd in fds:
        poller.register(fd, select.POLLIN)
    go.touch()
    dead: set[int] = set()
    while len(dead) < len(fds):
        for fd, _ in poller.poll(30_000):
            dead.add(fd)
            poller.unregister(fd)
    t_dead = time.monotonic()
    for fd in fds:
        os.close(fd)
    out, err = proc.communicate(timeout=60)
    m = re.search(r"tripped at ([0-9.]+)", out)
    if proc.returncode != 1 or m is None:
        raise SystemExit(f"bench: rw guard exited {proc.returncode}: {err[-500:]}")
    containment = re.search(r'"containment": "([^"]*)"', report.read_text())
    return t_dead - float(m.group(1)), containment.group(1) if containment else "?"


def wall(argv: list[str], env: dict[str, str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        proc = subprocess.run(
            argv, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )  # fmt: skip
        times.append(time.perf_counter() - t0)
        if proc.returncode != 0:
            raise SystemExit(f"bench: {' '.join(argv[:4])} exited {proc.returncode}: "
                             f"{proc.stderr[-500:]!r}")  # fmt: skip
    return statistics.median(times)


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    args = p.parse_args()
    kills = 5 if args.quick else 20
    lines = 100_000 if args.quick else 1_000_000
    runs = 3 if args.quick else 5
    print(f"guard on {machine()}")
    v = Verdicts()
    if shutil.which("seq") is None or shutil.which("setsid") is None:
        raise SystemExit("bench: needs seq and setsid")
    with rw_home() as home, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "site").mkdir()
        (work / "site" / "file").write_text("x\n")
        env = rw_env(home)
        print(f"  kill latency: trigger line written -> whole tree ({TREE_SIZE} processes) "
              f"dead; {kills} runs each")  # fmt: skip
        for cgroup in (True, False):
            samples, modes = [], set()
            for _ in range(kills):
                seconds, mode = kill_latency(home, work, cgroup)
                samples.append(seconds * 1000)
                modes.add(mode)
            mode = "/".join(sorted(modes))
            med = statistics.median(samples)
            print(f"    {mode:<13} median {med:7.1f} ms   min {min(samples):7.1f}   "
                  f"max {max(samples):7.1f}")  # fmt: skip
            v.at_most(f"kill latency ({mode})", med, KILL_TARGET_MS, "ms")
            if cgroup and modes != {"cgroup"}:
                print("    (no writable cgroup v2 here: the scan alone holds the tree)")
                break
        config(home, True)
        site = str(work / "site")
        t_plain = wall(["sh", "-c", f"seq {lines} > /dev/null"], env, runs)
        t_guard = wall([rw_program(), "guard", "--paths", site, "--", "seq", str(lines)], env, runs)
        t_start = wall([rw_program(), "guard", "--paths", site, "--", "true"], env, runs)
    rate = lines / t_guard
    streaming = lines / max(t_guard - t_start, 1e-9)
    print(f"  streaming {lines} lines; median of {runs} runs")
    print(f"    seq > /dev/null              {t_plain * 1000:8.1f} ms")
    print(f"    rw guard -- seq (to null)    {t_guard * 1000:8.1f} ms  ({rate:,.0f} lines/s)")
    print(f"    rw guard -- true             {t_start * 1000:8.1f} ms  (start-up and checkpoint)")
    print(f"    streaming alone: {streaming:,.0f} lines/s; "
          f"{t_guard / t_plain:.1f}x the plain run")  # fmt: skip
    v.at_least("lines/s through rw guard", rate, RATE_TARGET, "")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

"""rw diff of two 10,000-step sessions, wall clock with interpreter start (target <= 1 s).

Baselines in the same run: `rw log A --limit 1` (starting rw and reading the
store) and difflib on the two command lists in-process. Then the same two
sessions with every step's output recorded (a few lines each; in B, 50 steps
print something else), which rw diff compares and shows as unified diffs.
"""

from __future__ import annotations

import difflib
import os
import random
import socket
import sys
import time

from _common import (
    Verdicts,
    machine,
    median_wall,
    parser,
    rw_env,
    rw_home,
    rw_paths,
    rw_program,
)  # fmt: skip

from rewind_daemon.store import OutputRow, Store

TARGET_S = 1.0


def build(db, steps: int) -> tuple[str, str, list[str], list[str]]:
    """Two runs of one deploy: B inserts a few steps and changes a few exit codes."""
    rng = random.Random(3)
    a_cmds = [
        f"step {i}: kubectl apply -f manifests/{rng.randrange(500)}.yaml" for i in range(steps)
    ]
    b_cmds = list(a_cmds)
    for k in range(5):
        b_cmds.insert(rng.randrange(len(b_cmds)), f"echo inserted {k}")
    store = Store(db)
    try:
        with store.transaction():
            for sid, cmds, flip in (("bench-a", a_cmds, set()), ("bench-b", b_cmds, {7, 4000})):
                store.upsert_session(
                    sid, parent_id=None, shell="bash", shell_version="5.2", pid=os.getpid(),
                    tty=None, started_at=1.79e9, cwd="/srv", host=socket.gethostname(), user="u",
                )  # fmt: skip
                store.bulk_insert_steps(
                    (sid, n, n, c, "/srv", "/srv", 1.79e9 + n, 1.79e9 + n + 0.5,
                     1 if n in flip else 0, "0", None)
                    for n, c in enumerate(cmds, 1)
                )  # fmt: skip
    finally:
        store.close()
    return "bench-a", "bench-b", a_cmds, b_cmds


def add_outputs(db, a_cmds: list[str], b_cmds: list[str]) -> None:
    """Every step's output, as rw record stores it: B's differs in 50 steps."""
    rng = random.Random(5)
    changed = set(rng.sample(range(1, len(b_cmds) + 1), 50))
    store = Store(db)
    try:
        with store.transaction():
            for sid, cmds in (("bench-a", a_cmds), ("bench-b", b_cmds)):
                for n, c in enumerate(cmds, 1):
                    what = "unchanged" if sid == "bench-a" or n not in changed else "configured"
                    text = f"{c}\ndeployment.apps/web {what}\nservice/web unchanged\n"
                    raw = text.replace("\n", "\r\n").encode()
                    store.set_output(sid, n, OutputRow(raw, text, len(raw)))
    finally:
        store.close()


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    args = p.parse_args()
    steps = 2_000 if args.quick else 10_000
    runs = 3 if args.quick else 7
    print(f"diff on {machine()}")
    v = Verdicts()
    rw = rw_program()
    with rw_home() as home:
        env = rw_env(home)
        a, b, a_cmds, b_cmds = build(rw_paths(home).db, steps)
        t_diff = median_wall([rw, "diff", a, b, "--json"], env, runs, ok=(1,))
        t_log = median_wall([rw, "log", a, "--limit", "1"], env, runs)
        t0 = time.perf_counter()
        difflib.SequenceMatcher(None, a_cmds, b_cmds, autojunk=False).get_opcodes()
        t_lib = time.perf_counter() - t0
        add_outputs(rw_paths(home).db, a_cmds, b_cmds)
        t_out = median_wall([rw, "diff", a, b, "--json"], env, runs, ok=(1,))
        t_text = median_wall([rw, "diff", a, b], env, runs, ok=(1,))
    print(f"  two sessions of {steps:,} steps (B: 5 inserted steps, 2 changed exit codes)")
    print(f"  rw diff A B --json        {t_diff * 1000:8.1f} ms (median of {runs})")
    print(f"  rw log A --limit 1        {t_log * 1000:8.1f} ms  (diff takes {t_diff / t_log:.2f}x)")
    print(f"  difflib alone, in-process {t_lib * 1000:8.1f} ms")
    print("  the same, every step's output recorded (B: 50 outputs differ)")
    ratio = t_out / t_diff
    print(f"  rw diff A B --json        {t_out * 1000:8.1f} ms  ({ratio:.2f}x without outputs)")
    print(f"  rw diff A B               {t_text * 1000:8.1f} ms")
    v.at_most(f"rw diff of two {steps:,}-step sessions", t_diff, TARGET_S, "s")
    v.at_most(f"rw diff of two {steps:,}-step sessions with outputs", t_out, TARGET_S, "s")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

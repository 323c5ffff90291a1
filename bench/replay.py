"""Per-step overhead of rw replay against the same steps run as a plain bash script.

Both run in the same run: a recorded session of N trivial steps (`:` and a
few `cd`/`export`), replayed with `rw replay SESSION`, against `bash
script.sh` holding the same lines. Target: <= 2 ms added per step.
"""

from __future__ import annotations

import os
import socket
import sys
import tempfile
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
)  # fmt: skip

from rewind_daemon.store import Store, env_blob

TARGET_MS = 2.0


def commands(n: int) -> list[str]:
    out = []
    for i in range(n):
        if i % 50 == 0:
            out.append(f"export RW_BENCH_I={i}")
        elif i % 50 == 25:
            out.append("cd /tmp")
        else:
            out.append(":")
    return out


def build(db: Path, cmds: list[str]) -> str:
    store = Store(db)
    try:
        with store.transaction():
            env_id = store.add_env(*env_blob({k: v for k, v in os.environ.items()
                                              if not k.startswith("RW_")}))  # fmt: skip
            store.upsert_session(
                "bench-replay", parent_id=None, shell="bash", shell_version="5.2",
                pid=None, tty=None, started_at=1.79e9, cwd="/tmp",
                host=socket.gethostname(), user="u", env_id=env_id,
            )  # fmt: skip
            store.bulk_insert_steps(
                ("bench-replay", n, n, c, "/tmp", "/tmp", 1.79e9 + n, 1.79e9 + n + 0.001,
                 0, "0", env_id)
                for n, c in enumerate(cmds, 1)
            )  # fmt: skip
    finally:
        store.close()
    return "bench-replay"


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    args = p.parse_args()
    n = 200 if args.quick else 1000
    runs = 3 if args.quick else 5
    print(f"replay on {machine()}")
    v = Verdicts()
    rw = rw_program()
    cmds = commands(n)
    with rw_home() as home, tempfile.TemporaryDirectory() as tmp:
        env = rw_env(home)
        sid = build(rw_paths(home).db, cmds)
        script = Path(tmp) / "script.sh"
        script.write_text("\n".join(cmds) + "\n")
        t_rw = median_wall([rw, "replay", sid], env, runs, warm_up=False)
        t_sh = median_wall(["bash", str(script)], env, runs, warm_up=False)
        t_start = median_wall([rw, "replay", sid, "--to", "1"], env, runs, warm_up=False)
    per_step = (t_rw - t_start) / (n - 1) * 1000
    plain = t_sh / n * 1000
    print(f"  {n} steps; median of {runs} runs")
    print(f"  rw replay, all steps        {t_rw * 1000:9.1f} ms")
    print(f"  rw replay, one step         {t_start * 1000:9.1f} ms  (start-up)")
    print(f"  bash script.sh              {t_sh * 1000:9.1f} ms  ({plain:.3f} ms per step)")
    print(f"  replay per step, past start-up: {per_step:.3f} ms; added vs bash: "
          f"{per_step - plain:.3f} ms")  # fmt: skip
    v.at_most("replay: added per step", per_step - plain, TARGET_MS, "ms")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

"""The debugger's speed: `next` and `stepBack` round trips of `rw dap`, against
the executor's own per-step cost and a checkpoint restore of the same change.

A real `rw dap` on stdio, driven by a raw client (request sent, clock stopped
at the `stopped` event). Baselines in the same run: the executor's per-step
cost as `rw replay` pays it (a step run and recorded, `Replay` in this
process over a session of trivial steps; `Executor.run(":")` alone is shown
too), and
`Checkpoints.restore` of a checkpoint of the same tree with the same 1,000
files changed (in this process: no start-up counted, which is stricter than
`rw checkpoint restore`). Targets (issue 15): `next` on a trivial step
<= 15 ms median and <= 2x the replayed step plus the protocol's round trip
(a request answered at once); `stepBack`
with no watched-file change <= 30 ms; `stepBack` restoring 1,000 changed files
<= 1.2x the restore.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import Verdicts, machine, parser, rw_env, rw_home, rw_paths, rw_program
from replay import build  # noqa: E402  (bench/replay.py: a session of given steps)

from rewind_daemon.checkpoints.checkpoint import Checkpoints, Watch
from rewind_daemon.config import load
from rewind_daemon.dap.framing import Reader, encode
from rewind_daemon.store import Store
from rewind_daemon.timeline.breakpoints import BreakpointSet
from rewind_daemon.timeline.executor import Executor
from rewind_daemon.timeline.replay import Controller, Replay

NEXT_MS, BACK_MS, RESTORE_RATIO = 15.0, 30.0, 1.2


class Client:
    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen(
            [rw_program(), "dap"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
            start_new_session=True,
        )  # fmt: skip
        self.reader = Reader(self.proc.stdout)  # type: ignore[arg-type]
        self.seq = 0

    def send(self, command: str, **args) -> int:
        self.seq += 1
        assert self.proc.stdin is not None
        self.proc.stdin.write(encode({"seq": self.seq, "type": "request", "command": command,
                                      "arguments": args}))  # fmt: skip
        self.proc.stdin.flush()
        return self.seq

    def until(self, what) -> dict:
        while True:
            m = self.reader.read()
            if m is None:
                raise SystemExit("bench: rw dap ended")
            if m.get("type") == "response" and not m.get("success"):
                raise SystemExit(f"bench: rw dap refused {m.get('command')}: {m.get('message')}")
            if what(m):
                return m

    def timed(self, command: str) -> float:
        """ms from the request to the stopped event."""
        t = time.perf_counter()
        self.send(command, threadId=1)
        self.until(lambda m: m.get("event") == "stopped")
        return (time.perf_counter() - t) * 1000

    def start(self, program: Path, **launch) -> None:
        self.send("initialize", adapterID="rw")
        self.send("launch", program=str(program), **launch)
        self.until(lambda m: m.get("event") == "initialized")
        self.send("configurationDone")
        self.until(lambda m: m.get("event") == "stopped")

    def close(self) -> None:
        self.send("disconnect")
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def executor_step_ms(n: int) -> float:
    with Executor("/tmp", dict(os.environ)) as ex:
        ex.run(":")
        times = []
        for _ in range(n):
            t = time.perf_counter()
            ex.run(":")
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def replay_step_ms(home: Path, n: int) -> float:
    """ms per step of the replay engine (run and recorded), past its start-up."""
    db = rw_paths(home).db
    sid = build(db, [":"] * n)
    store = Store(db)
    try:
        steps = store.steps(sid)

        def run(count: int) -> float:
            t = time.perf_counter()
            Replay(store, sid, steps[:count], breakpoints=BreakpointSet([]), every_step=False,
                   controller=Controller(), sink=lambda b: None).run()  # fmt: skip
            return time.perf_counter() - t

        run(1)
        return (statistics.median(run(n) for _ in range(3)) - run(1)) / (n - 1) * 1000
    finally:
        store.close()


def protocol_ms(client: Client, n: int) -> float:
    """A request answered at once (threads): the protocol's own round trip."""
    times = []
    for _ in range(n):
        t = time.perf_counter()
        seq = client.send("threads")
        client.until(lambda m, seq=seq: m.get("request_seq") == seq)
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def change_files(tree: Path) -> None:
    for f in tree.iterdir():
        with open(f, "a") as out:
            out.write("changed\n")


def restore_baseline(home: Path, tree: Path, runs: int) -> float:
    p = rw_paths(home)
    store = Store(p.db)
    cps = Checkpoints(p, store, load(p.config_file))
    times = []
    try:
        for _ in range(runs):
            cid = cps.create([Watch(str(tree))], origin="manual").id
            change_files(tree)
            t = time.perf_counter()
            report = cps.restore(cid)
            times.append((time.perf_counter() - t) * 1000)
            assert not report.failed, report.failed
    finally:
        store.close()
    return statistics.median(times)


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    args = p.parse_args()
    steps = 60 if args.quick else 300
    files = 200 if args.quick else 1000
    backs = 3 if args.quick else 7
    print(f"dap on {machine()}")
    v = Verdicts()
    with rw_home() as home, tempfile.TemporaryDirectory() as tmp:
        env = rw_env(home)
        work = Path(tmp)
        trivial = work / "trivial.sh"
        trivial.write_text(":\n" * (steps + 1))
        ex_ms = executor_step_ms(steps)
        replay_ms = replay_step_ms(home, steps)

        client = Client(env)
        client.start(trivial, watch=[])
        proto = protocol_ms(client, steps)
        nexts = [client.timed("next") for _ in range(steps)]
        client.close()

        empty = work / "empty"
        empty.mkdir()
        (empty / "one").write_text("1\n")
        client = Client(env)
        client.start(trivial, watch=[str(empty)])
        back_plain = []
        for _ in range(backs * 3):
            client.timed("next")
            back_plain.append(client.timed("stepBack"))
        client.close()

        tree = work / "tree"
        tree.mkdir()
        for i in range(files):
            (tree / f"f{i:04}").write_text(f"file {i}\n" * 20)
        changing = work / "changing.sh"
        changing.write_text(f':\nfor f in {tree}/*; do echo changed >> "$f"; done\n:\n')
        client = Client(env)
        client.start(changing, watch=[str(tree)])
        client.timed("next")
        back_files = []
        for _ in range(backs):
            client.timed("next")  # the step that changes every file
            back_files.append(client.timed("stepBack"))
        client.close()
        restore = restore_baseline(home, tree, backs)
        shutil.rmtree(tree)

    next_ms = statistics.median(nexts)
    print(f"  next, trivial step: median {next_ms:.2f} ms over {steps} (a replayed step "
          f"{replay_ms:.2f} ms, Executor.run alone {ex_ms:.2f} ms; protocol round trip "
          f"{proto:.2f} ms)")  # fmt: skip
    print(f"  stepBack, no watched file changed: median {statistics.median(back_plain):.2f} ms")
    print(f"  stepBack restoring {files} changed files: median "
          f"{statistics.median(back_files):.1f} ms; Checkpoints.restore of the same change: "
          f"{restore:.1f} ms")  # fmt: skip
    v.at_most("next: median round trip", next_ms, NEXT_MS, "ms")
    v.at_most("next / (2 x replayed step + protocol)", next_ms / (2 * replay_ms + proto), 1.0,
              "x")  # fmt: skip
    v.at_most("stepBack, no file change", statistics.median(back_plain), BACK_MS, "ms")
    v.at_most(f"stepBack of {files} files / restore", statistics.median(back_files) / restore,
              RESTORE_RATIO, "x")  # fmt: skip
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

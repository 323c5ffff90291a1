"""What `rw record` costs: throughput to a real terminal emulator, keystroke echo
latency, and the recorder's memory while a step prints a lot.

    throughput  `seq 1 N` to the terminal inside tmux (a real terminal emulator,
                so the drawing side drains the bytes as a user's would), in
                three shells side by side: bare bash, bash under util-linux
                `script`, bash under `rw record` (with marks printed around
                each command, as the hooks will, so the splitter and the spool
                do their work). Rounds interleave the three; the figure is the
                median wall time of seq inside the shell ($EPOCHREALTIME).
                Beside it, for the reader (no target): the CPU time a round
                cost each proxy, script's and rw record's own process, which
                varies less than the wall time on a shared machine.
    keystrokes  one byte typed at a time into `cat` (the shell's line discipline
                echoes it), the round trip from writing it to reading its echo,
                for bare bash and under rw record: the added median.
    memory      a step printing GB through rw record (to /dev/null, so the
                terminal is not what is measured): the recorder's peak RSS.

    python bench/record.py [--quick] [--check]
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

import pexpect
from _common import Verdicts, machine, parser, rw_env, rw_home, rw_program

MAX_VS_SCRIPT = 1.1
MAX_VS_BARE = 1.2
MAX_ADDED_ECHO_MS = 0.3
MAX_RSS_MB = 40.0

MARKS = r"""
__t=${RW_RECORD%%:*} __n=0
PS0='\e]133;C;rw=${__t}:S1:$((__n+=1))\a'
__d() { local s=$?; printf '\e]133;D;%s;rw=%s:S1:%s\a' "$s" "$__t" "$__n"; return $s; }
PROMPT_COMMAND=__d
"""


def rcfile(work: Path, marks: bool) -> Path:
    rc = work / ("marks.rc" if marks else "plain.rc")
    rc.write_text("PS1='$ '\n" + (MARKS if marks else ""))
    return rc


def tmux(sock: Path, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-S", str(sock), "-f", "/dev/null", *args],
        capture_output=True, text=True, check=True, timeout=30,
    ).stdout  # fmt: skip


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of the process `pid` so far (not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def throughput(
    work: Path, env: dict[str, str], lines: int, rounds: int
) -> tuple[dict[str, float], dict[str, float]]:
    """The median wall time of a round in each shell, and the median CPU time
    a round cost the two proxies (script, rw record: each its window's process)."""
    plain, marked = rcfile(work, False), rcfile(work, True)
    bash = shutil.which("bash")
    commands = {
        "bare": f"{bash} --rcfile {plain} -i",
        "script": f"script -q -c '{bash} --rcfile {plain} -i' /dev/null",
        "rw record": f"{rw_program()} record bash -- --rcfile {marked} -i",
    }
    sock = work / "tmux.sock"
    envs = " ".join(f"{k}={v}" for k, v in env.items() if k in ("RW_HOME", "PATH", "HOME"))
    tmux(sock, "new-session", "-d", "-s", "bench", "-x", "120", "-y", "40", "sleep 100000")
    try:
        for i, (_name, cmd) in enumerate(commands.items()):
            tmux(sock, "new-window", "-t", f"=bench:{i + 1}", f"env {envs} {cmd}")
        time.sleep(1.0)
        panes = tmux(sock, "list-panes", "-s", "-t", "=bench", "-F", "#{window_index} #{pane_pid}")
        pids = dict(line.split() for line in panes.splitlines())
        proxies = {name: int(pids[str(i + 1)]) for i, name in enumerate(commands) if name != "bare"}
        times: dict[str, list[float]] = {name: [] for name in commands}
        cpu: dict[str, list[float]] = {name: [] for name in proxies}
        for r in range(rounds):
            order = list(enumerate(commands))
            if r % 2:
                order.reverse()
            for i, name in order:
                out = work / f"t{i}-{r}"
                line = (
                    f"s=$EPOCHREALTIME; seq 1 {lines}; e=$EPOCHREALTIME; "
                    f"echo $s $e > {out}.tmp; mv {out}.tmp {out}"
                )
                tmux(sock, "select-window", "-t", f"=bench:{i + 1}")
                before = cpu_seconds(proxies[name]) if name in proxies else 0.0
                tmux(sock, "send-keys", "-t", f"=bench:{i + 1}", line, "Enter")
                deadline = time.monotonic() + 300
                while not out.exists():
                    if time.monotonic() > deadline:
                        raise SystemExit(f"bench: {name} never finished a round")
                    time.sleep(0.02)
                s, e = (float(x) for x in out.read_text().split())
                times[name].append(e - s)
                if name in proxies:
                    cpu[name].append(cpu_seconds(proxies[name]) - before)
        median = statistics.median
        return {n: median(v) for n, v in times.items()}, {n: median(v) for n, v in cpu.items()}
    finally:
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)


def echo_latency(work: Path, env: dict[str, str], keys: int) -> dict[str, float]:
    plain = rcfile(work, False)
    out = {}
    for name, argv in (
        ("bare", ["bash", "--rcfile", str(plain), "-i"]),
        ("rw record", [rw_program(), "record", "bash", "--", "--rcfile", str(plain), "-i"]),
    ):
        p = pexpect.spawn(argv[0], argv[1:], env=env, timeout=10)
        p.expect_exact(b"$ ")
        p.sendline("cat")
        p.expect_exact(b"cat\r\n")
        samples = []
        for i in range(keys):
            key = b"abcdefghij"[i % 10 : i % 10 + 1]
            t0 = time.perf_counter()
            os.write(p.child_fd, key)
            got = b""
            while not got:
                got = os.read(p.child_fd, 64)
            samples.append((time.perf_counter() - t0) * 1000)
            if i % 50 == 49:
                p.send("\r")
                p.expect_exact(b"\r\n")
                p.expect_exact(b"\r\n")
        p.sendcontrol("d")
        p.close(force=True)
        out[name] = statistics.median(samples)
    return out


def peak_rss(work: Path, env: dict[str, str], megabytes: int) -> float:
    marked = rcfile(work, True)
    done = work / "rss.done"
    # stdout to /dev/null: the terminal is not what is measured here.
    sh = f"exec {rw_program()} record bash -- --rcfile {marked} -i > /dev/null"
    p = pexpect.spawn("sh", ["-c", sh], env=env, timeout=600)
    time.sleep(1.0)
    p.sendline(f"head -c {megabytes}M /dev/zero | tr '\\0' x | fold -w 99; touch {done}")
    deadline = time.monotonic() + 600
    while not done.exists():
        if time.monotonic() > deadline:
            raise SystemExit("bench: the big step never finished")
        time.sleep(0.1)
    pid = p.pid
    hwm = 0.0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            hwm = int(line.split()[1]) / 1024
    p.sendline("exit")
    p.expect(pexpect.EOF)
    p.close()
    return hwm


def main() -> int:
    args = parser(__doc__.split("\n\n")[0]).parse_args()
    for tool in ("tmux", "script"):
        if shutil.which(tool) is None:
            raise SystemExit(f"bench: {tool} is not installed")
    lines = 200_000 if args.quick else 2_000_000
    rounds = 3 if args.quick else 7
    keys = 200 if args.quick else 1000
    megabytes = 100 if args.quick else 1024
    print(f"bench/record.py on {machine()}")
    v = Verdicts()
    with rw_home() as home, tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        env = {**rw_env(home), "TERM": "xterm-256color", "HOME": str(work)}
        t, cpu = throughput(work, env, lines, rounds)
        print(f"  throughput: seq 1 {lines} to tmux, median of {rounds} interleaved rounds")
        for name, secs in t.items():
            print(f"    {name:<10} {secs * 1000:8.1f} ms  ({lines / secs:,.0f} lines/s)")
        print("  the proxy's own CPU (user + system) per round, median:")
        for name, secs in cpu.items():
            print(f"    {name:<10} {secs * 1000:8.1f} ms")
        v.at_most("rw record / script", t["rw record"] / t["script"], MAX_VS_SCRIPT, "x")
        v.at_most("rw record / bare", t["rw record"] / t["bare"], MAX_VS_BARE, "x")
        e = echo_latency(work, env, keys)
        print(f"  keystroke echo: median round trip over {keys} keys")
        for name, ms in e.items():
            print(f"    {name:<10} {ms:8.3f} ms")
        v.at_most("echo latency added", e["rw record"] - e["bare"], MAX_ADDED_ECHO_MS, "ms")
        rss = peak_rss(work, env, megabytes)
        print(f"  memory: peak RSS of rw record while a step prints {megabytes} MB: {rss:.1f} MB")
        v.at_most("recorder peak RSS", rss, MAX_RSS_MB, "MB")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

"""Latency rw's shell hooks add to each interactive command, in bash and zsh.

Three interactive shells per kind run side by side under a PTY, each with a
prompt marker:

    none   no hooks at all (the floor)
    fork   a fork-per-command hook: /bin/true in preexec and in precmd, the
           least a process-per-command design such as Atuin's can cost
    rw     eval "$(rw init SHELL)", with the rw daemon running and ingesting
    rw-nodaemon  the same hooks in another RW_HOME whose daemon is stopped
           (not a target: it tells the shell's share from the daemon's,
           which competes for the same CPUs while it ingests)

In each round every shell, in a shuffled order, gets K separate command lines
(`:`), each sent only once the previous prompt is back; the round's figure is
the mean round trip, from writing the line to reading the next prompt. After
the rw shell's round the script has the daemon ingest what is pending (`rw
sessions`), so that none of its work lands in another shell's round. Added
latency is the median over rounds of the difference to `none` in the same
round, which cancels drift. A second line of evidence times the hook
functions themselves inside the rw shell (EPOCHREALTIME, calls in a loop).

Pasted blocks take another path (each line's end is written as the next one
starts): a `none` and an `rw` shell, with a terminal type under which
readline and zsh's line editor turn bracketed paste on, are sent blocks of
P lines (`:`) between the bracketed-paste markers a terminal sends, then
Enter, alternately; the figure is the added time per pasted line (median
over rounds), and every pasted line must be stored as a step of its own.

    python bench/hook_overhead.py [--quick] [--check]
"""

from __future__ import annotations

import os
import random
import select
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pexpect
from _common import (
    Verdicts,
    machine,
    parser,
    quartiles,
    realistic_env,
    rw_env,
    rw_home,
    rw_paths,
    rw_program,
    start_daemon,
)

from rewind_daemon.store import Store

MAX_ADDED_MS = 0.5
MIN_CHEAPER = 5.0

PROMPT = b"<rwp> "
# Typed with the quotes split, so the echo of the line never matches PROMPT.
SET_PROMPT = {
    "bash": "PS1='<''rwp> '",
    "zsh": "PS1='<''rwp> '; unset zle_bracketed_paste; unsetopt prompt_sp",
}
SHELL_ARGS = {"bash": ["--norc", "--noprofile", "-i"], "zsh": ["--no-rcs", "-i"]}

# The fork-per-command baseline. In bash the DEBUG trap fires before every
# simple command, so it is armed by PROMPT_COMMAND and fires once per line
# (as bash-preexec does); the trap also fires for PROMPT_COMMAND's own
# commands, while it is disarmed.
FORK_HOOKS = {
    "bash": "__fb_armed=; __fb_preexec() { [[ -n $__fb_armed ]] || return 0; __fb_armed=; "
    "/bin/true; }; trap __fb_preexec DEBUG; PROMPT_COMMAND='/bin/true; __fb_armed=1'",
    "zsh": "__fb_preexec() { /bin/true; }; __fb_precmd() { /bin/true; }; "
    "preexec_functions+=(__fb_preexec); precmd_functions+=(__fb_precmd)",
}
VARIANTS = ("none", "fork", "rw", "rw-nodaemon")

# Times N calls of rw's hook path inside the shell (its DEBUG trap set aside so
# the loop itself is not recorded), an empty loop, and N pairs of /bin/true.
# Clearing __rw_lasthist makes each bash call take the full path (a new
# history entry: history to file, read back, B record, E record with export -p).
DIRECT = {
    "bash": "__rwb_t=$(trap -p DEBUG); trap - DEBUG; "
    "__rwb_0=$EPOCHREALTIME; for ((__rwb_i = 0; __rwb_i < {n}; __rwb_i++)); do :; done; "
    "__rwb_1=$EPOCHREALTIME; for ((__rwb_i = 0; __rwb_i < {n}; __rwb_i++)); do "
    "__rw_go=1; __rw_lasthist=; __rw_begin : :; __rw_precmd; done; "
    "__rwb_2=$EPOCHREALTIME; for ((__rwb_i = 0; __rwb_i < {n}; __rwb_i++)); do "
    '/bin/true; /bin/true; done; __rwb_3=$EPOCHREALTIME; eval "$__rwb_t"; '
    'echo "RWB""ENCH $__rwb_0 $__rwb_1 $__rwb_2 $__rwb_3"',
    "zsh": "__rwb_0=$EPOCHREALTIME; for ((__rwb_i = 0; __rwb_i < {n}; __rwb_i++)); do :; done; "
    "__rwb_1=$EPOCHREALTIME; for ((__rwb_i = 0; __rwb_i < {n}; __rwb_i++)); do "
    "__rw_preexec ': x' ': x' ':'; __rw_precmd; done; "
    "__rwb_2=$EPOCHREALTIME; for ((__rwb_i = 0; __rwb_i < {n}; __rwb_i++)); do "
    "/bin/true; /bin/true; done; __rwb_3=$EPOCHREALTIME; "
    'echo "RWB""ENCH $__rwb_0 $__rwb_1 $__rwb_2 $__rwb_3"',
}


class Shell:
    def __init__(
        self, kind: str, env: dict[str, str], cwd: Path, setup: list[str], prompt: str = ""
    ):
        self.p = pexpect.spawn(
            kind, SHELL_ARGS[kind], env=env, cwd=str(cwd), timeout=30, dimensions=(40, 200)
        )
        self.run(prompt or SET_PROMPT[kind])
        for line in setup:
            self.run(line)
        self.run("echo SY''NC")
        self.fd = self.p.child_fd

    def run(self, line: str, timeout: float = 30) -> str:
        self.p.sendline(line)
        self.p.expect_exact(PROMPT, timeout=timeout)
        return self.p.before.decode(errors="replace")

    def round_trips(self, k: int) -> float:
        """Mean seconds from writing a command line to reading the next prompt."""
        fd = self.fd
        t0 = time.perf_counter()
        for _ in range(k):
            os.write(fd, b":\r")
            buf = b""
            while PROMPT not in buf:
                if not select.select([fd], [], [], 30)[0]:
                    raise SystemExit("bench: a shell stopped answering")
                buf = buf[-len(PROMPT) :] + os.read(fd, 4096)
        return (time.perf_counter() - t0) / k

    def close(self) -> None:
        self.p.close(force=True)


# What a terminal sends for a paste, when the application asked for bracketed paste.
PASTE_START, PASTE_END = b"\x1b[200~", b"\x1b[201~"


def paste_trip(sh: Shell, lines: int) -> float:
    """Seconds from sending a pasted block of `lines` lines and Enter to the next prompt."""
    fd = sh.fd
    block = b"".join(b": pasted\n" for _ in range(lines))
    t0 = time.perf_counter()
    os.write(fd, PASTE_START + block + PASTE_END + b"\r")
    buf = b""
    while PROMPT not in buf:
        if not select.select([fd], [], [], 60)[0]:
            raise SystemExit("bench: a shell stopped answering a paste")
        buf = buf[-len(PROMPT) :] + os.read(fd, 65536)
    return time.perf_counter() - t0


def bench_paste(kind: str, rounds: int, lines: int, v: Verdicts) -> None:
    init = f'eval "$({rw_program()} init {kind})"'
    with ExitStack() as stack:
        home = stack.enter_context(rw_home())
        user = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rw-bench-user-")))
        start_daemon(home)
        # A terminal type for which the line editors ask for bracketed paste
        # (readline does not on "dumb"); zsh keeps zle_bracketed_paste.
        env = {**realistic_env(user), "RW_HOME": str(home), "TERM": "xterm-256color"}
        prompt = {"bash": SET_PROMPT["bash"], "zsh": "PS1='<''rwp> '; unsetopt prompt_sp"}
        shells = {
            name: Shell(kind, env, user, setup, prompt[kind])
            for name, setup in (("none", []), ("rw", [init]))
        }
        try:
            sync(home)  # the set-up lines
            before = recorded_steps(home)
            per: dict[str, list[float]] = {"none": [], "rw": []}
            for r in range(rounds + 1):
                for name in ("none", "rw") if r % 2 else ("rw", "none"):
                    ms = paste_trip(shells[name], lines) * 1000
                    if r:
                        per[name].append(ms)
                    if name == "rw":
                        sync(home)
            sync(home)
            stored = recorded_steps(home) - before
        finally:
            for sh in shells.values():
                sh.close()
    added = quartiles([(a - b) / lines for a, b in zip(per["rw"], per["none"])])
    print(f"  pasted blocks: {rounds} rounds x {lines} lines")
    print(
        f"    per block (median): none {statistics.median(per['none']):.1f} ms, "
        f"rw {statistics.median(per['rw']):.1f} ms"
    )
    print(
        f"    added by rw per pasted line: {added[1]:+.3f} ms  [{added[0]:+.3f}, {added[2]:+.3f}]"
    )
    expected = (rounds + 1) * lines
    print(f"    rw stored {stored} steps ({expected} lines pasted)")
    if stored != expected:
        print(f"  FAIL  {kind}: pasted lines are not each a step")
        v.failed.append(f"{kind}: pasted steps stored")


def direct(sh: Shell, kind: str, n: int) -> tuple[float, float]:
    """(rw hook path, two fork+exec) in ms per command, measured inside the shell."""
    out = sh.run(DIRECT[kind].replace("{n}", str(n)), timeout=300)
    for line in out.splitlines():
        if line.startswith("RWBENCH "):
            t0, t1, t2, t3 = (float(x.replace(",", ".")) for x in line.split()[1:])
            empty = t1 - t0
            return ((t2 - t1 - empty) / n * 1000, (t3 - t2 - empty) / n * 1000)
    raise SystemExit(f"bench: no timing from the {kind} shell: {out[-300:]!r}")


def recorded_steps(home: Path) -> int:
    store = Store.open_for_reading(rw_paths(home).db)
    if store is None:
        return 0
    try:
        return store.step_count()
    finally:
        store.close()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def sync(home: Path) -> None:
    subprocess.run([rw_program(), "sessions"], env=rw_env(home), capture_output=True, check=True)


def bench_shell(kind: str, rounds: int, k: int, direct_n: int, direct_reps: int, v: Verdicts):
    init = f'eval "$({rw_program()} init {kind})"'
    with ExitStack() as stack:
        home, idle_home = stack.enter_context(rw_home()), stack.enter_context(rw_home())
        user = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="rw-bench-user-")))
        start_daemon(home)
        env = {**realistic_env(user), "RW_HOME": str(home)}
        if kind == "zsh":
            env["SHELL"] = shutil.which("zsh") or "/bin/zsh"
        setups = {"none": [], "fork": [FORK_HOOKS[kind]], "rw": [init], "rw-nodaemon": [init]}
        envs = {name: env for name in VARIANTS}
        envs["rw-nodaemon"] = {**env, "RW_HOME": str(idle_home)}
        shells = {name: Shell(kind, envs[name], user, setups[name]) for name in VARIANTS}
        try:
            var = "BASH_VERSION" if kind == "bash" else "ZSH_VERSION"
            version = shells["none"].run(f"echo ${var}").split()[-1]
            before = recorded_steps(home)
            daemon_pid = int(rw_paths(home).pid_file.read_text())
            daemon_cpu = cpu_seconds(daemon_pid)
            rng = random.Random(42)
            per: dict[str, list[float]] = {name: [] for name in VARIANTS}
            for r in range(rounds + 1):
                order = list(VARIANTS)
                rng.shuffle(order)
                for name in order:
                    ms = shells[name].round_trips(k) * 1000
                    if r:  # round 0 warms up
                        per[name].append(ms)
                    if name == "rw":
                        # What the daemon has yet to ingest is ingested now,
                        # not in the next shell's round.
                        sync(home)
            sync(home)
            daemon_cpu = cpu_seconds(daemon_pid) - daemon_cpu
            d_rw, d_fork = [], []
            for _ in range(direct_reps):
                a, b = direct(shells["rw"], kind, direct_n)
                d_rw.append(a)
                d_fork.append(b)
            sync(home)
            stored = recorded_steps(home) - before
        finally:
            for sh in shells.values():
                sh.close()

    sent = (rounds + 1) * k
    added = {n: quartiles([a - b for a, b in zip(per[n], per["none"])]) for n in VARIANTS[1:]}
    rw_added, fork_added = added["rw"][1], added["fork"][1]
    cheaper = fork_added / rw_added if rw_added > 0 else float("inf")
    direct_rw, direct_fork = statistics.median(d_rw), statistics.median(d_fork)
    direct_cheaper = direct_fork / direct_rw if direct_rw > 0 else float("inf")

    print(f"\n{kind} {version}: {rounds} rounds x {k} command lines per variant")
    print(
        "  round trip per command (median of rounds): "
        + ", ".join(f"{n} {statistics.median(per[n]):.3f} ms" for n in VARIANTS)
    )
    print("  added vs none (median of per-round differences [q1, q3]):")
    for n, (q1, q2, q3) in added.items():
        print(f"    {n:<12} {q2:+.3f} ms  [{q1:+.3f}, {q3:+.3f}]")
    print(f"  rw's added cost is {cheaper:.1f}x cheaper than fork-per-command's")
    print(
        f"  the daemon used {daemon_cpu / sent * 1000:.3f} ms of CPU per typed command "
        "(on another core, when there is one free)"
    )
    print(
        f"  direct, inside the shell ({direct_reps} x {direct_n} calls, median): rw hook path "
        f"{direct_rw:.3f} ms/command, fork+exec of /bin/true twice {direct_fork:.3f} ms "
        f"({direct_cheaper:.1f}x)"
    )
    expected = sent + direct_reps * direct_n
    print(
        f"  rw stored {stored} steps ({sent} lines typed + {direct_reps * direct_n} direct calls)"
    )
    if stored < expected:
        # Then the rw figures above are not those of a working capture.
        print(f"  FAIL  {kind}: rw stored fewer steps than the {expected} it was given")
        v.failed.append(f"{kind}: steps stored")
    v.at_most(f"{kind}: rw adds per command", rw_added, MAX_ADDED_MS, "ms")
    v.at_least(f"{kind}: rw cheaper than fork-per-command", cheaper, MIN_CHEAPER, "x")
    v.at_most(f"{kind}: rw hook path, direct", direct_rw, MAX_ADDED_MS, "ms")
    v.at_least(f"{kind}: rw cheaper than two fork+exec, direct", direct_cheaper, MIN_CHEAPER, "x")


def main() -> int:
    args = parser(__doc__.split("\n")[0]).parse_args()
    rounds, k = (6, 40) if args.quick else (30, 120)
    direct_n, direct_reps = (200, 1) if args.quick else (1000, 3)
    paste_rounds, paste_lines = (4, 20) if args.quick else (20, 50)
    print(f"hook_overhead on {machine()}")
    v = Verdicts()
    for kind in ("bash", "zsh"):
        if shutil.which(kind) is None:
            raise SystemExit(f"bench: {kind} is not installed")
        bench_shell(kind, rounds, k, direct_n, direct_reps, v)
        bench_paste(kind, paste_rounds, paste_lines, v)
    print()
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

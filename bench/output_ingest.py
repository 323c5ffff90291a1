"""How fast the daemon ingests recorded output, against zlib alone of the same bytes.

A recorded session's output spool (as `rw record` writes it: records of up to
64 kB, as the proxy reads them) holds realistic output: build logs in colour,
apt and dpkg runs with their CR progress lines, test runners with colours and
CR progress bars, JSON logs with long lines, a little binary, and a few
secrets per MB (tokens, passwords, URLs with credentials) among it; a second
run has a secret on nearly every line (the worst case). The spools and their
sessions' command spools are put in a fresh RW_HOME and `rw daemon run` is
started on them, as after a reboot. The clock runs from the daemon's
"listening" log line to its first answer on the socket, given once everything
is ingested: text extracted, secrets masked in the bytes and the text, both
compressed, stored. The daemon's CPU time is read at that answer too, less
what an idle daemon's start to its first answer takes: the CPU the ingest
took, whatever else runs on the machine (its search indexing when idle and
its stop come after); its output worker's CPU (a second process that makes
some steps ready when many are at once) and the daemon's memory are read
there too. Then the store is checked (every step's output there,
no secret in the database).

Baselines in the same run, on the same bytes: zlib compressing them (level 6,
one pass, the floor of storing them compressed as the store did before) and
reading the spool files (`cat` to /dev/null). In-process figures say where
the time goes: the text alone (in C, and in Python as where the C module is
not built), the text with its hidden parts, the redaction alone (and with
google-re2 instead of the C module, and with neither, as on a machine without
them), `make_output` whole, the store's codec alone, `make_output` and the
row's compressed blobs (a step's whole cost).

    python bench/output_ingest.py [--quick] [--check] [--mb N] [--profile]
"""

from __future__ import annotations

import cProfile
import io
import os
import pstats
import random
import resource
import subprocess
import sys
import tempfile
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

from _common import Verdicts, foreground_daemon, machine, parser, rw_home, rw_paths

from rewind_daemon import redact
from rewind_daemon.capture import client, records, termtext
from rewind_daemon.capture.outputs import make_output
from rewind_daemon.capture.termtext import text_of, text_parts
from rewind_daemon.recorder.spool import OutputSpool
from rewind_daemon.redact import MASK, Redactor
from rewind_daemon.store import ZLIB_LEVEL, ZSTD_LEVEL, Store, output_blobs, pack, zstandard

MIN_MB_PER_S = 100.0
ZLIB = "baseline, zlib level 6 of the bytes"
CODEC = f"zstd level {ZSTD_LEVEL}" if zstandard is not None else f"zlib level {ZLIB_LEVEL}"
WORDS = "api web worker billing auth infra deploy tools docs data etl search cache queue".split()
PACKAGES = "libssl3 libc6 openssh-client curl git python3.11 libpq5 nginx-common tzdata".split()


def _secrets(rng: random.Random) -> list[tuple[str, str]]:
    """(a line printed, the secret in it) as commands print them."""
    n = rng.randint(10**9, 10**10 - 1)
    letters = "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789")
                      for _ in range(40))  # fmt: skip
    return [
        (f"export GITHUB_TOKEN=ghp_{letters[:36]}", f"ghp_{letters[:36]}"),
        (f"Authorization: Bearer ey{letters[:30]}", f"ey{letters[:30]}"),
        (f"DATABASE_URL=postgres://app:Pw{n}x@db.internal/app", f"Pw{n}x"),
        (f"  password: Hunter{n}", f"Hunter{n}"),
        (f'{{"user": "ci", "api_key": "K{n}{letters[:8]}"}}', f"K{n}{letters[:8]}"),
        (f"aws_access_key_id = AKIA{letters[:16].upper()}", f"AKIA{letters[:16].upper()}"),
        (f"vault: token hvs.{letters[:26]}", f"hvs.{letters[:26]}"),
        (f"\x1b[33mwarning\x1b[0m: --db-password Sec{n}ret given on the command line",
         f"Sec{n}ret"),
    ]  # fmt: skip


def _build_log(rng: random.Random, lines: int) -> list[str]:
    out = []
    for i in range(lines):
        w, v = rng.choice(WORDS), rng.choice(WORDS)
        r = rng.random()
        pct = min(100, i * 100 // max(1, lines))
        if r < 0.6:
            out.append(f"[{pct:3d}%] \x1b[32mBuilding C object src/{w}/CMakeFiles/{w}.dir/"
                       f"{v}_{i}.c.o\x1b[0m")  # fmt: skip
        elif r < 0.8:
            out.append(f"gcc -O2 -g -Wall -Wextra -fPIC -DHAVE_CONFIG_H -I. -Iinclude "
                       f"-I/usr/include/{w} -c src/{w}/{v}.c -o build/{w}/{v}.o")  # fmt: skip
        elif r < 0.9:
            out.append(f"src/{w}/{v}.c:{rng.randint(1, 900)}:{rng.randint(1, 80)}: "
                       f"\x1b[1;35mwarning: \x1b[0munused variable '\x1b[1m{v}_len\x1b[0m' "
                       f"[\x1b[1;35m-Wunused-variable\x1b[0m]")  # fmt: skip
        else:
            out.append(f"[{pct:3d}%] \x1b[1;32mLinking C shared library lib{w}.so\x1b[0m")
    return out


def _apt_log(rng: random.Random, packages: int) -> list[str]:
    out = ["Reading package lists... Done", "Building dependency tree... Done"]
    for i in range(packages):
        p = rng.choice(PACKAGES)
        out.append(f"Get:{i + 1} http://mirror.example/debian bookworm/main amd64 {p} amd64 "
                   f"{rng.randint(1, 9)}.{rng.randint(0, 20)}-{rng.randint(1, 5)} "
                   f"[{rng.randint(10, 9000)} kB]")  # fmt: skip
    progress = "".join(f"\r(Reading database ... {p}%" for p in range(5, 101, 5))
    out.append(f"(Reading database ... {progress}\r(Reading database ... 123456 files and "
               "directories currently installed.)")  # fmt: skip
    for _ in range(packages):
        p = rng.choice(PACKAGES)
        out.append(f"Preparing to unpack .../{p}_1.2-3_amd64.deb ...")
        out.append(f"Unpacking {p} (1.2-3) over (1.2-2) ...")
        out.append(f"Setting up {p} (1.2-3) ...")
    out.append("Processing triggers for man-db (2.11.2-2) ...")
    return out


def _test_run(rng: random.Random, tests: int) -> list[str]:
    out = [f"\x1b[1m{' test session starts ':=^80}\x1b[0m"]
    for i in range(tests):
        ok = rng.random() < 0.97
        word = "\x1b[32mPASSED\x1b[0m" if ok else "\x1b[31mFAILED\x1b[0m"
        pad = " " * rng.randint(1, 30)
        out.append(f"tests/test_{rng.choice(WORDS)}.py::test_{rng.choice(WORDS)}_{i} {word}"
                   f"{pad}\x1b[32m[{i * 100 // tests:3d}%]\x1b[0m")  # fmt: skip
    bar = "".join(f"\rDownloading model.bin {p:3d}% |{'█' * (p // 5)}{' ' * (20 - p // 5)}| "
                  f"{p * 0.27:.1f}M/27.1M" for p in range(0, 101, 2))  # fmt: skip
    out.append(bar)
    out.append(f"\x1b[31m\x1b[1m==== 2 failed, {tests} passed, 3 skipped in 12.34s ====\x1b[0m")
    return out


def _json_log(rng: random.Random, lines: int) -> list[str]:
    out = []
    for i in range(lines):
        items = ",".join(f'{{"id":{rng.randint(1, 10**6)},"name":"{rng.choice(WORDS)}",'
                         f'"tags":["{rng.choice(WORDS)}","{rng.choice(WORDS)}"],"ok":true}}'
                         for _ in range(rng.randint(20, 150)))  # fmt: skip
        out.append(f'{{"level":"info","ts":{1795000000 + i},"msg":"batch","items":[{items}]}}')
    return out


def _binary(rng: random.Random, size: int) -> bytes:
    return rng.randbytes(size)


@dataclass
class Workload:
    """Steps as (command, bytes printed), and the secrets printed among them."""

    steps: list[tuple[str, bytes]] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    @property
    def size(self) -> int:
        return sum(len(b) for _, b in self.steps)


def generate(mb: float, secrets_per_mb: float, seed: int = 14) -> Workload:
    rng = random.Random(seed)
    w = Workload()
    target = int(mb * 1e6)
    # (command, its output, the share of all bytes printed that such output has)
    kinds = [
        ("make -j8", lambda: _build_log(rng, rng.randint(500, 20000)), 0.35),
        ("sudo apt-get install -y nginx", lambda: _apt_log(rng, rng.randint(20, 400)), 0.15),
        ("pytest -v", lambda: _test_run(rng, rng.randint(200, 8000)), 0.25),
        ("kubectl logs deploy/api", lambda: _json_log(rng, rng.randint(10, 200)), 0.23),
        ("head -c 20000 /dev/urandom", lambda: _binary(rng, rng.randint(1000, 40000)), 0.02),
    ]
    printed = [0] * len(kinds)
    while w.size < target:
        # The kind furthest below its share, now and then another.
        i = min(range(len(kinds)), key=lambda k: printed[k] / kinds[k][2] + rng.random() * 1e5)
        command, make, _ = kinds[i]
        lines = make()
        if isinstance(lines, bytes):
            w.steps.append((command, lines))
            printed[i] += len(lines)
            continue
        size = sum(len(line) + 2 for line in lines)
        want = secrets_per_mb * size / 1e6
        count = int(want) + (rng.random() < want - int(want))
        for _ in range(count):
            line, secret = rng.choice(_secrets(rng))
            lines.insert(rng.randint(0, len(lines)), line)
            w.secrets.append(secret)
        w.steps.append((command, ("\r\n".join(lines) + "\r\n").encode()))
        printed[i] += len(w.steps[-1][1])
    return w


def write_spools(w: Workload, spool_dir: Path, sid: str) -> int:
    """The session's command spool and its output spool as the hooks and the
    recorder write them; the size of the output spool."""
    rng = random.Random(1)
    t = 1_795_000_000.0
    cmds = [records.encode("S", sid, "", "bash", "5.2.15(1)-release", str(os.getpid()),
                           "/dev/pts/3", f"{t:.6f}", "/srv/app", "host", "dev")]  # fmt: skip
    for seq, (command, _) in enumerate(w.steps, 1):
        cmds.append(records.encode("B", sid, str(seq), f"{t + seq:.6f}", "/srv/app", command))
        cmds.append(records.encode("E", sid, str(seq), f"{t + seq + 0.5:.6f}", "0", "0",
                                   "/srv/app", "none"))  # fmt: skip
    spool_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    (spool_dir / f"{sid}.spool").write_bytes(b"".join(cmds))
    spool = OutputSpool(spool_dir, (120, 40))
    for seq, (_, data) in enumerate(w.steps, 1):
        spool.start(sid, seq)
        pos = 0
        while pos < len(data):
            n = rng.choice((4096, 16384, 65536, rng.randint(1, 65536)))
            spool.output(sid, seq, data[pos : pos + n])
            pos += n
        spool.end(sid, seq, True)
    spool.close()
    return (spool_dir / f"{sid}.output").stat().st_size


@dataclass
class Ingested:
    seconds: float  # from the daemon's start of work to its answer, all ingested
    answered: float  # CPU seconds the daemon used to its answer, its start included
    cpu: float  # ... in all: its start, its indexing when idle, its stop, its worker
    worker: float  # CPU seconds its output worker used to the answer (0: none ran)
    rss: int  # the daemon's resident memory at its answer, kB (its worker's apart)
    peak: int  # ... the most it had, kB


def daemon_ingest(home: Path) -> Ingested:
    paths = rw_paths(home)
    stopped = [0.0]

    def after_stop() -> None:
        stopped[0] = _children_cpu()  # (the stop's own process, waited for)

    with foreground_daemon(home, after_stop) as d:
        client.request(paths, "status", timeout=600)
        t_done = time.perf_counter()
        pid = int(paths.pid_file.read_text().split()[0])
        answered = _process_cpu(pid)
        worker = sum(_process_cpu(c) for c in _children(pid))
        rss, peak = _memory(pid)
    return Ingested(t_done - d.listening, answered, _children_cpu() - stopped[0], worker, rss, peak)


def _children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            found += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            pass
    return found


def _memory(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of process `pid`, in kB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return int(fields["VmRSS"].split()[0]), int(fields["VmHWM"].split()[0])


def _process_cpu(pid: int) -> float:
    """The CPU seconds process `pid` has used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def idle_start_cpu() -> float:
    """The CPU seconds of a daemon's start to its first answer with nothing to
    ingest (the least of three): taken off the daemon's CPU to its answer."""
    runs = []
    for _ in range(3):
        with rw_home() as home:
            runs.append(daemon_ingest(home).answered)
    return min(runs)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def check_store(w: Workload, home: Path, sid: str) -> list[str]:
    db = rw_paths(home).db
    store = Store.open_for_reading(db)
    if store is None:
        return ["no store was created"]
    problems = []
    try:
        outputs = store.step_outputs(sid, 1, len(w.steps))
        if len(outputs) != len(w.steps):
            problems.append(f"{len(outputs)} steps' output stored, {len(w.steps)} expected")
        for n, (_, data) in enumerate(w.steps, 1):
            out = outputs.get(n)
            if out is not None and out.size != len(data):
                problems.append(f"step {n}: {out.size} bytes stored, {len(data)} printed")
                break
        stored = [o.raw + (o.text or "").encode() for o in outputs.values()]
    finally:
        store.close()
    stored.append(b"".join(p.read_bytes() for p in db.parent.glob(db.name + "*")))
    leaked = _found(w.secrets, stored)
    if leaked:
        problems.append(f"{len(leaked)} secret(s) stored in clear, e.g. {sorted(leaked)[0]!r}")
    masked = sum(o.text.count(MASK) for o in outputs.values() if o.text)
    if w.secrets and masked < len(w.secrets):
        problems.append(f"{masked} masks in the text for {len(w.secrets)} secrets printed")
    return problems


def _found(secrets: list[str], blobs: list[bytes]) -> set[str]:
    """The secrets that are in `blobs`, all looked for in one pass (`grep -F`:
    the worst case's 30,000 secrets one at a time took minutes)."""
    if not secrets:
        return set()
    with tempfile.NamedTemporaryFile() as patterns:
        patterns.write("\n".join(set(secrets)).encode())
        patterns.flush()
        # (a secret holds no line end: none is found across two blobs)
        grep = subprocess.run(
            ["grep", "-a", "-o", "-F", "-f", patterns.name],
            input=b"\n".join(blobs), capture_output=True,
        )  # fmt: skip
    if grep.returncode > 1:
        raise SystemExit(f"bench: grep failed: {grep.stderr.decode(errors='replace')}")
    return set(grep.stdout.decode(errors="replace").splitlines())


def cat_seconds(paths: list[Path]) -> float:
    t0 = time.perf_counter()
    subprocess.run(["cat", *map(str, paths)], stdout=subprocess.DEVNULL, check=True)
    return time.perf_counter() - t0


def in_process(w: Workload) -> dict[str, float]:
    """CPU seconds of each stage over all the steps, in this process."""
    r = Redactor()
    stages: dict[str, float] = {}
    t0 = time.process_time()
    for _, data in w.steps:
        zlib.compress(data, 6)
    stages[ZLIB] = time.process_time() - t0
    t0 = time.process_time()
    for command, data in w.steps:
        text_of(data, command)
    way = "C" if termtext.in_c() else "Python: the C module is not built"
    stages[f"text extraction alone ({way})"] = time.process_time() - t0
    if termtext.in_c():  # (what a machine without a compiler does)
        t0 = time.process_time()
        for command, data in w.steps:
            termtext._text_py(data, command)
        stages["the same in Python"] = time.process_time() - t0
    t0 = time.process_time()
    for command, data in w.steps:
        text_parts(data, command)
    stages[f"text and hidden parts (text_parts, {way.split(':')[0]})"] = time.process_time() - t0
    t0 = time.process_time()
    for _, data in w.steps:
        r.text(data.decode("utf-8", "surrogateescape"))
    stages["redaction of the bytes alone"] = time.process_time() - t0
    # The words found by google-re2 where the C module is not built, and by
    # neither (the remote bundle).
    in_c, found = redact._find_all, redact._words_set()
    ways = (
        [("the same with google-re2 instead of the C module", None, found)]
        if in_c and found
        else []
    )
    try:
        for name, find_all, word_set in [
            *ways,
            ("the same without the C module or google-re2", None, False),
        ]:
            redact._find_all, redact._word_set = find_all, word_set
            t0 = time.process_time()
            for _, data in w.steps:
                r.text(data.decode("utf-8", "surrogateescape"))
            stages[name] = time.process_time() - t0
    finally:
        redact._find_all, redact._word_set = in_c, found
    t0 = time.process_time()
    for command, data in w.steps:
        make_output(data, command, r)
    stages["make_output (cap, redaction, text)"] = time.process_time() - t0
    t0 = time.process_time()
    for _, data in w.steps:
        pack(data)
    stages[f"the store's codec ({CODEC}) of the bytes alone"] = time.process_time() - t0
    t0 = time.process_time()
    for command, data in w.steps:
        output_blobs(make_output(data, command, r)[0])
    stages["make_output and the row's blobs (what a step costs)"] = time.process_time() - t0
    return stages


def profile(w: Workload) -> None:
    r = Redactor()
    prof = cProfile.Profile()
    prof.enable()
    for command, data in w.steps:
        make_output(data, command, r)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(15)
    print(out.getvalue())


def run(label: str, w: Workload, v: Verdicts, check_target: bool, idle: float) -> None:
    mb = w.size / 1e6
    sid = f"1795000000{os.getpid():05x}0{len(w.secrets):05x}beef"
    print(f"  {label}: {len(w.steps)} steps, {mb:.1f} MB printed, {len(w.secrets)} secrets")
    with rw_home() as home:
        spool_dir = rw_paths(home).spool_dir
        size = write_spools(w, spool_dir, sid)
        cat_s = cat_seconds([spool_dir / f"{sid}.output"])
        ingested = daemon_ingest(home)
        ingest_s, answered_cpu, daemon_cpu = ingested.seconds, ingested.answered, ingested.cpu
        problems = check_store(w, home, sid)
    stages = in_process(w)
    for stage, seconds in stages.items():
        print(f"    {stage}: {seconds:.3f}s of CPU = {mb / seconds:.1f} MB/s")
    zlib_s = stages[ZLIB]
    rate = mb / ingest_s
    print(
        f"    baseline, cat of the {size / 1e6:.1f} MB spool: {cat_s:.3f}s = {mb / cat_s:.0f} MB/s"
    )
    print(
        f"    daemon: {ingest_s:.2f}s ingesting = {rate:.1f} MB/s of raw output; "
        f"{daemon_cpu:.2f}s of CPU in all (start and stop included) = "
        f"{mb / daemon_cpu:.1f} MB/s, {daemon_cpu / zlib_s:.2f}x the CPU time of zlib level 6 "
        "alone of the same bytes"
    )
    ingest_cpu = max(answered_cpu - idle, 1e-3)
    print(
        f"    daemon: {answered_cpu:.2f}s of CPU to its answer, less {idle:.2f}s that an idle "
        f"start takes = {ingest_cpu:.2f}s ingesting = {mb / ingest_cpu:.1f} MB/s of its CPU"
    )
    if ingested.worker:
        both = ingest_cpu + ingested.worker
        print(
            f"    its output worker: {ingested.worker:.2f}s of CPU (its start included); "
            f"daemon and worker: {both:.2f}s = {mb / both:.1f} MB/s of CPU"
        )
    print(
        f"    daemon's memory at its answer: {ingested.rss / 1024:.0f} MB resident, "
        f"{ingested.peak / 1024:.0f} MB at most"
    )
    for problem in problems:
        print(f"    PROBLEM: {problem}")
    if problems:
        v.failed.append(f"{label}: store contents")
    if check_target:
        v.at_least(f"{label}: daemon ingest rate", rate, MIN_MB_PER_S, " MB/s")
    else:
        print(f"    (no target for the worst case: {rate:.1f} MB/s)")


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--mb", type=float, help="MB of output (default 64; quick 8).")
    p.add_argument("--profile", action="store_true", help="Print where make_output's time goes.")
    args = p.parse_args()
    mb = args.mb or (8.0 if args.quick else 64.0)
    print(f"output ingest on {machine()}")
    words = (
        "one pass of the C module"
        if redact._find_all
        else "one pass of google-re2's Set"
        if redact._words_set()
        else "each word in turn (neither the C module nor google-re2)"
    )
    print(f"  redaction's word search: {words}")
    t0 = time.perf_counter()
    realistic = generate(mb, secrets_per_mb=3)
    worst = generate(mb / 4, secrets_per_mb=2000, seed=15)
    print(f"  workloads generated in {time.perf_counter() - t0:.1f}s")
    if args.profile:
        profile(realistic)
        return 0
    v = Verdicts()
    idle = idle_start_cpu()
    run("realistic output", realistic, v, True, idle)
    run("worst case (a secret on most lines)", worst, v, False, idle)
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

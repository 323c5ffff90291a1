"""How fast the daemon ingests spooled commands, against a raw SQLite insert.

Spool files for a few sessions (three bash, one zsh) hold 50,000 commands as
the hooks write them: a B record and an E record per command, each E with the
whole exported environment (about 40 variables, in `export -p` form for bash
and as zsh's `export` lists them), which changes when the user cds or exports
something. The files are put in a fresh RW_HOME's spool directory and
`rw daemon run` is started on them, so the daemon catches up as it does after
a reboot. The clock runs from the daemon's "listening" log line (its
interpreter is up; it ingests next) to its first answer on the socket, which
it gives only once everything is ingested. Then the store is checked.

Baselines in the same run: SQLite inserting the same final rows with
executemany in one transaction (the floor for storing them), and parsing the
spool bytes alone.

    python bench/ingest.py [--quick] [--check] [--commands N]
"""

from __future__ import annotations

import os
import random
import socket
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import (
    Verdicts,
    foreground_daemon,
    machine,
    parser,
    realistic_env,
    rw_home,
    rw_paths,
)

from rewind_daemon.capture import client, records
from rewind_daemon.store import Store, env_blob

MIN_COMMANDS_PER_S = 10_000
SESSIONS = (("bash", "5.2.15(1)-release"),) * 3 + (("zsh", "5.9"),)

WORDS = "api web worker billing auth infra deploy tools docs data etl search".split()
TEMPLATES = [
    "git status",
    "git diff --stat",
    "git log --oneline -n {n}",
    "git commit -am 'fix {w} handling of {w}'",
    "git push origin feature/{w}-{n}",
    "ls -la",
    "ls {w}/",
    "vim {w}/{w}.py",
    "make test",
    "make -j4 {w}",
    "pytest -x tests/test_{w}.py -k {w}",
    "docker compose up -d {w}",
    "docker logs --tail {n} {w}-{n}",
    "kubectl get pods -n {w}",
    "kubectl -n {w} rollout status deploy/{w}",
    "grep -rn '{w}' src/ | head -{n}",
    "curl -s https://{w}.internal/healthz | jq .status",
    "ssh {w}-{n}.prod 'sudo systemctl restart {w}'",
    "tail -n {n} /var/log/{w}.log",
    "python -m {w}.cli --dry-run",
    "terraform plan -target=module.{w}",
    "echo $PATH",
    "history | tail",
]
SECRETS = [
    "export API_TOKEN=tok_{n}a8f3k2j4h5g6",
    "curl -H 'Authorization: Bearer eyJ{n}abcdef.ghij' https://{w}.internal/",
    "mysql --password hunter{n} -h db-{n}",
    "git clone https://deploy:pw{n}xyz@git.example.com/{w}.git",
]


@dataclass
class Workload:
    """Spool bytes per session, and the rows the store should end up with."""

    spools: dict[str, bytes] = field(default_factory=dict)
    sessions: list[dict] = field(default_factory=list)
    envs: list[dict[str, str]] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)  # step rows; env_id = index in envs + 1
    commands: int = 0
    records: int = 0


def _declare(env: dict[str, str]) -> str:
    """What bash's `export -p` prints for `env`."""

    def quote(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$").replace("`", "\\`")

    return "".join(f'declare -x {k}="{quote(v)}"\n' for k, v in sorted(env.items()))


def _zsh_export(env: dict[str, str]) -> str:
    """What zsh's `export` lists for `env` (printable values)."""

    def quote(v: str) -> str:
        if v and all(c.isalnum() or c in "_./:-+,%@" for c in v):
            return v
        return "'" + v.replace("'", "'\\''") + "'"

    return "".join(f"{k}={quote(v)}\n" for k, v in sorted(env.items()))


def generate(commands: int, seed: int = 7) -> Workload:
    rng = random.Random(seed)
    w = Workload()
    host, user = socket.gethostname(), os.environ.get("USER", "dev")
    env_ids: dict[bytes, int] = {}
    t = 1_795_000_000.0
    for index, (shell, version) in enumerate(SESSIONS):
        sid = f"17950000000000{index:02d}{os.getpid():05x}beef"
        cwd = f"/srv/app/{WORDS[index]}"
        env = {**realistic_env(Path("/home/dev")), "PWD": cwd, "OLDPWD": "/home/dev"}
        env["SHELL"] = f"/bin/{shell}"
        out = [records.encode("S", sid, "", shell, version, str(os.getpid()), "/dev/pts/3",
                              f"{t:.6f}", cwd, host, user)]  # fmt: skip
        w.sessions.append(
            dict(sid=sid, shell=shell, version=version, started=t, cwd=cwd, host=host, user=user)
        )
        share = commands // len(SESSIONS) + (index < commands % len(SESSIONS))
        payload: list[str] | None = None
        env_id = 0
        for seq in range(1, share + 1):
            r = rng.random()
            if r < 0.01:
                command = rng.choice(SECRETS)
            elif r < 0.07:
                command = f"cd /srv/app/{rng.choice(WORDS)}/{rng.choice(WORDS)}"
            elif r < 0.075:
                command = f"export {rng.choice(WORDS).upper()}_MODE={rng.choice(WORDS)}"
            else:
                command = rng.choice(TEMPLATES)
            command = command.format(n=rng.randint(1, 500), w=rng.choice(WORDS))
            t += rng.uniform(0.5, 20)
            started = t
            t += rng.choice((0.002, 0.03, 0.4, 3.0)) * rng.random()
            status = 0 if rng.random() < 0.93 else rng.choice((1, 2, 127, 130))
            pipestatus = f"0 {status}" if "|" in command else str(status)
            before = cwd
            if command.startswith("cd "):
                env["OLDPWD"], cwd = cwd, command[3:]
                env["PWD"] = cwd
                payload = None
            elif command.startswith("export "):
                name, _, value = command[7:].partition("=")
                env[name] = value
                payload = None
            if payload is None:  # the environment changed: what the hook prints changes
                if shell == "bash":
                    payload = ["declare", _declare({**env, "RW_SESSION": sid})]
                else:
                    payload = ["zsh", _zsh_export({**env, "RW_SESSION": sid})]
                digest = env_blob(env)[0]
                if digest not in env_ids:
                    w.envs.append(dict(env))
                    env_ids[digest] = len(w.envs)
                env_id = env_ids[digest]
            out.append(records.encode("B", sid, str(seq), f"{started:.6f}", before, command))
            out.append(records.encode("E", sid, str(seq), f"{t:.6f}", str(status), pipestatus,
                                      cwd, *payload))  # fmt: skip
            w.rows.append((sid, seq, seq, command, before, cwd, started, t, status, pipestatus,
                           env_id))  # fmt: skip
        w.spools[sid] = b"".join(out)
        w.commands += share
        w.records += len(out)
    return w


def baseline_insert(w: Workload, directory: Path) -> float:
    """Seconds for SQLite to store the same sessions, envs and steps in one transaction."""
    blobs = [env_blob(env) for env in w.envs]
    store = Store(directory / "baseline.db")
    try:
        t0 = time.perf_counter()
        with store.transaction():
            for s in w.sessions:
                store.upsert_session(
                    s["sid"], parent_id=None, shell=s["shell"], shell_version=s["version"],
                    pid=os.getpid(), tty="/dev/pts/3", started_at=s["started"], cwd=s["cwd"],
                    host=s["host"], user=s["user"],
                )  # fmt: skip
            for digest, data in blobs:
                store.add_env(digest, data)
            store.bulk_insert_steps(w.rows)
        return time.perf_counter() - t0
    finally:
        store.close()


def baseline_parse(w: Workload) -> float:
    t0 = time.perf_counter()
    for data in w.spools.values():
        for _ in records.parse(data, final=True):
            pass
    return time.perf_counter() - t0


def daemon_ingest(w: Workload, home: Path) -> tuple[float, float, dict]:
    """(seconds ingesting, seconds including interpreter start, status reply)."""
    paths = rw_paths(home)
    paths.spool_dir.mkdir(parents=True, mode=0o700)
    for sid, data in w.spools.items():
        (paths.spool_dir / f"{sid}.spool").write_bytes(data)
    with foreground_daemon(home) as d:
        reply = client.request(paths, "status", timeout=600)
        t_done = time.perf_counter()
    return t_done - d.listening, t_done - d.spawned, reply


def check_store(w: Workload, home: Path) -> list[str]:
    store = Store.open_for_reading(rw_paths(home).db)
    if store is None:
        return ["no store was created"]
    problems = []
    try:
        if store.step_count() != w.commands:
            problems.append(f"{store.step_count()} steps stored, {w.commands} expected")
        for s in w.sessions:
            last = store.steps(s["sid"], limit=1)
            if not last or last[0].ended_at is None or last[0].env_id is None:
                problems.append(f"session {s['sid']}: last step not ended or without env")
    finally:
        store.close()
    return problems


def main() -> int:
    p = parser(__doc__.split("\n")[0])
    p.add_argument("--commands", type=int, help="Commands to spool (default 50000; quick 5000).")
    args = p.parse_args()
    n = args.commands or (5_000 if args.quick else 50_000)
    print(f"ingest on {machine()}")
    t0 = time.perf_counter()
    w = generate(n)
    size = sum(len(b) for b in w.spools.values())
    print(
        f"  workload: {w.commands} commands in {len(w.spools)} spools, {w.records} records, "
        f"{size / 1e6:.1f} MB, {len(w.envs)} distinct environments "
        f"(generated in {time.perf_counter() - t0:.1f}s)"
    )
    v = Verdicts()
    with rw_home() as home, tempfile.TemporaryDirectory(prefix="rw-bench-") as tmp:
        ingest_s, wall_s, reply = daemon_ingest(w, home)
        problems = check_store(w, home)
        raw_s = baseline_insert(w, Path(tmp))
        parse_s = baseline_parse(w)
    if reply.get("records") != w.records or reply.get("dropped"):
        problems.append(
            f"daemon applied {reply.get('records')} records (expected {w.records}), "
            f"dropped {reply.get('dropped')}"
        )
    rate = w.commands / ingest_s
    print(
        f"  daemon: {ingest_s:.2f}s ingesting = {rate:,.0f} commands/s "
        f"({wall_s:.2f}s with interpreter start = {w.commands / wall_s:,.0f} commands/s)"
    )
    print(
        f"  baseline, SQLite executemany of the same rows: {raw_s:.3f}s = "
        f"{w.commands / raw_s:,.0f} commands/s; the daemon takes {ingest_s / raw_s:.1f}x as long"
    )
    print(
        f"  baseline, parsing the spools only: {parse_s:.3f}s = {w.commands / parse_s:,.0f} "
        f"commands/s ({parse_s / ingest_s:.0%} of the daemon's time)"
    )
    for problem in problems:
        print(f"  PROBLEM: {problem}")
    v.at_least("daemon ingest rate", rate, MIN_COMMANDS_PER_S, " commands/s")
    if problems:
        v.failed.append("store contents")
    return v.finish(args.check)


if __name__ == "__main__":
    sys.exit(main())

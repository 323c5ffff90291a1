"""Fuzzing the daemon's two inputs, the spools and its socket, at once.

Random and malformed records go into live spools (a real shell's among them)
and random and malformed messages to the socket; then good records. The
daemon must stay up, store every good record written after the garbage, and
leave the store intact. The generator is seeded: the seed is printed, and
RW_FUZZ_SEED=N reproduces a run.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import threading
import time

from rewind_daemon.capture import records

from ..conftest import daemon_pid, rw, rw_json, steps_of

SEED = int(os.environ.get("RW_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
RECORDS = 10_000
MESSAGES = 10_000

# Values that are wrong for some field, or right for one and wrong for another.
HOSTILE = [
    "", "0", "-1", "1", "7", str(2**31), str(-(2**31) - 1), str(2**63 - 1), str(2**63),
    str(2**64), "9" * 5000, "nan", "NaN", "inf", "-inf", "1e400", "1e308", "-0", "0x1f",
    "\u0663", "\u00b2", " 1", "1 ", "1.5", "1,5", "99999999999", "7258118400", "1700000000.5",
    "../x", "/", "a/b", ".hidden", "x" * 200, "é", "\udcff\udcfe", "\x1eRW1", "\x1eEND",
    "\x1b]0;title\x07", "\r\n", "declare", "list", "list0", "zsh", "none", "S", "B",
    "A=1", "=x", "-9223372036854775809",
]  # fmt: skip
HISTORY = ["    7  echo hi\n", "   12* edited\n", "    8   leading space\n", "no history"]
TYPES = ["S", "B", "B", "H", "E", "E", "N", "X", "A", "S", "R", "Q", "", "b", "\x1e"]
ENV_PIECES = [
    'declare -x A="', "declare -x B=$'", "declare -- C=1", "declare -x", "\n", '"', "'", "\\",
    "$'", "\\U110000", "\\x", "\\777", "\\c", "\\M-", "\\M-\\C-", "\\C-", "\\u", "=", "(",
    "export ", "typeset -x ", "D=", "\ufffd", "x" * 50, "\\U0010FFFF", "\\ud800",
]  # fmt: skip


class Garbage:
    """Records of the kinds a shell writes, many with a field gone wrong, and noise."""

    def __init__(self, rng: random.Random, sids: list[str]):
        self.rng = rng
        self.sids = sids

    def value(self) -> str:
        return self.rng.choice(HOSTILE)

    def seq(self) -> str:
        # Far above the real shell's own seqs, which its later commands use; few
        # enough that ends meet their beginnings.
        return str(self.rng.randint(10**6, 10**6 + 300))

    def time(self) -> str:
        return f"{self.rng.uniform(0, 7e9):.6f}"

    def env(self) -> list[str]:
        fmt = self.rng.choice(["declare", "zsh", "list", "list0", "none"])
        text = "".join(self.rng.choice(ENV_PIECES) for _ in range(self.rng.randint(0, 30)))
        if fmt == "list":
            items = [f"V{i}={self.value()}" for i in range(self.rng.randint(0, 4))]
            count = str(len(items)) if self.rng.random() < 0.8 else self.value()
            return [fmt, count, *items]
        if fmt == "list0":
            return [fmt, *text.split("\n")]
        return [fmt] if fmt == "none" else [fmt, text]

    def fields(self, rtype: str) -> list[str]:
        """Fields a shell could have written for `rtype` (but with odd texts and
        environments, and seqs that clash)."""
        rng = self.rng
        sid = rng.choice(self.sids)
        if rtype == "S":
            f = [sid, rng.choice(["", *self.sids]), "bash", "5.2", str(rng.randint(1, 99999)),
                 "", self.time(), self.value(), "h", "u"]  # fmt: skip
            if rng.random() < 0.7:
                f += [rng.choice(["", str(rng.randint(1, 5))]), *self.env()]
            return f
        if rtype == "B":
            return [
                sid,
                self.seq(),
                self.time(),
                "/",
                rng.choice([f"fuzz {rng.random()}", *HOSTILE]),
            ]
        if rtype == "H":
            return [sid, self.seq(), self.time(), "/", rng.choice(HISTORY)]
        if rtype == "E":
            code = str(rng.randint(-(2**31), 2**31 - 1)) if rng.random() < 0.1 else "0"
            return [sid, self.seq(), self.time(), code, rng.choice(HOSTILE), "/", *self.env()]
        if rtype == "N":
            return [sid, self.value()]
        if rtype == "X":
            return [sid, self.time()]
        if rtype == "A":
            return [sid, self.seq()]
        return [self.value() for _ in range(rng.randint(0, 12))]

    def record(self) -> bytes:
        rng = self.rng
        kind = rng.random()
        if kind < 0.05:  # noise, with pieces of the framing in it
            noise = [rng.randbytes(rng.randint(1, 200)), records.MAGIC, records.END, b"\x1eRW"]
            return b"".join(rng.choice(noise) for _ in range(rng.randint(1, 4)))
        rtype = rng.choice(TYPES)
        fields = self.fields(rtype)
        if kind < 0.1 and fields:  # a field too many or too few
            del fields[rng.randrange(len(fields))]
        elif kind < 0.15:
            fields.insert(rng.randint(0, len(fields)), self.value())
        elif kind < 0.6 and fields:  # a field or two gone wrong
            for _ in range(rng.randint(1, 2)):
                fields[rng.randrange(len(fields))] = self.value()
        rec = records.encode(rtype, *fields)
        if kind > 0.95:  # cut short, as by a writer killed mid-record
            rec = rec[: rng.randint(1, len(rec) - 1)]
        return rec


def hostile_message(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.1:
        return rng.randbytes(rng.randint(1, 300)).replace(b"\n", b" ")
    if kind < 0.2:
        opener = rng.choice([b"[", b'{"a":', b'{"op":[', b"[{"])
        return opener * rng.randint(500, 20_000)
    if kind < 0.25:
        return b'{"op": "ping", "x": "' + b"y" * rng.randint(60_000, 70_000) + b'"}'
    op = rng.choice(["ping", "status", "sync", "name", "branch", "watches", "gc", "nope", "",
                     "_op_ping", "__init__", "ping\x00", "STOP", 7, None, ["ping"]])  # fmt: skip
    values = [1, -1, 2**70, 1.5, True, None, "", "x", "a\x00b", "\ud800", [], {}, [[["deep"]]],
              "s" * 5000, "fz-a", float("inf")]  # fmt: skip
    req: dict = {"op": op}
    for key in rng.sample(["session", "name", "step", "dry_run", "junk"], rng.randint(0, 4)):
        req[key] = rng.choice(values)
    if op == "gc" and req.get("dry_run") is not True:
        req["dry_run"] = rng.choice([True, "no", 0, None, [1]])  # never a real gc: too slow
    line = json.dumps(req).encode()
    if kind > 0.9:
        line = line[: rng.randint(0, len(line))]
    return line


def send_messages(sock_path: str, rng: random.Random, problems: list[str]) -> None:
    """MESSAGES messages over connections that read their replies, close early,
    or never read at all."""
    idle: list[socket.socket] = []
    sent = 0
    try:
        while sent < MESSAGES:
            batch = [hostile_message(rng) for _ in range(rng.randint(20, 300))]
            assert not any(b'"stop"' in m for m in batch)
            sent += len(batch)
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(10)
            s.connect(sock_path)
            style = rng.random()
            data = b"\n".join(batch) + b"\n"
            try:
                if style < 0.6:  # reads every reply
                    s.sendall(data)
                    s.shutdown(socket.SHUT_WR)
                    while s.recv(65536):
                        pass
                    s.close()
                elif style < 0.8:  # hangs up mid-request
                    s.sendall(data[: rng.randint(0, len(data))])
                    s.close()
                else:  # never reads (closed at the end)
                    s.setblocking(False)
                    try:
                        s.send(data)
                    except BlockingIOError:
                        pass
                    idle.append(s)
            except OSError as e:  # the daemon may hang up on a request too large
                s.close()
                if not isinstance(e, (BrokenPipeError, ConnectionResetError)):
                    raise
    except Exception as e:  # noqa: BLE001 - reported by the test
        problems.append(f"{type(e).__name__}: {e}")
    finally:
        for s in idle:
            s.close()


def test_fuzzed_spools_and_socket_leave_the_daemon_up_and_every_good_record_stored(daemon, shells):
    print(f"fuzz seed {SEED} (RW_FUZZ_SEED={SEED} reproduces this run)")
    home = daemon
    started = time.monotonic()
    pid = daemon_pid(home)
    sh = shells("bash")
    sh.run("echo before")
    shell_sid = sh.session_id()
    spool_dir = home / "data" / "spool"
    spools = [spool_dir / f"{shell_sid}.spool"] + [spool_dir / f"fz-{c}.spool" for c in "abc"]
    rng = random.Random(SEED)
    garbage = Garbage(rng, ["fz-a", "fz-b", "fz-c", shell_sid])

    problems: list[str] = []
    sender = threading.Thread(
        target=send_messages,
        args=(str(home / "run" / "daemon.sock"), random.Random(SEED + 1), problems),
    )
    sender.start()
    written = 0
    while written < RECORDS:  # in bursts, while the daemon ingests
        n = min(rng.randint(50, 800), RECORDS - written)
        with open(rng.choice(spools), "ab") as f:
            f.write(b"".join(garbage.record() for _ in range(n)))
        written += n
        time.sleep(rng.uniform(0, 0.05))
    with open(spools[1], "ab") as f:  # one record past the largest the daemon reads
        f.write(records.MAGIC + b"B\x00fz-a\x00" + b"x" * (records.MAX_RECORD + 1000))
    sender.join(timeout=60)
    assert not sender.is_alive() and not problems, (SEED, problems)
    assert daemon_pid(home) == pid, f"the daemon died (seed {SEED})"

    # Good records after the garbage: new sessions in the fuzzed spools, and
    # what the real shell runs.
    expected: dict[str, list[tuple[str, int]]] = {}
    for i, spool in enumerate(spools[1:]):
        sid = f"good-{i}"
        t = 1_700_000_000 + i
        good = [records.encode("S", sid, "", "bash", "5.2", "1", "", f"{t}", "/", "h", "u")]
        expected[sid] = []
        for seq in range(1, 21):
            command = f"good {i} {seq}"
            good.append(records.encode("B", sid, str(seq), f"{t}.{seq}", "/", command))
            good.append(records.encode("E", sid, str(seq), f"{t}.{seq}5", str(seq % 3), "0",
                                       "/", "list", "1", f"STEP={seq}"))  # fmt: skip
            expected[sid].append((command, seq % 3))
        with open(spool, "ab") as f:
            f.write(b"".join(good))
    for i in range(5):
        sh.run(f"echo after-{i}; (exit {i})")

    status = json.loads(rw("daemon", "status", "--json").stdout)
    assert status["pid"] == pid and status["dropped"] > 0, SEED
    for sid, steps in expected.items():
        got = [(s["command"], s["exit_code"]) for s in steps_of(sid)]
        assert got == steps, (SEED, sid)
    # The shell's own steps, in order. (Garbage in the other spools may name
    # the shell's session too, and be read after them: not only the last 5.)
    own = [(s["command"], s["exit_code"]) for s in steps_of(shell_sid)]
    own = [step for step in own if step[0].startswith("echo after-")]
    assert own == [(f"echo after-{i}; (exit {i})", i) for i in range(5)], SEED
    assert rw_json("sessions")  # whatever the garbage stored, it can be listed
    rw("sessions")
    rw("log", shell_sid)
    db = sqlite3.connect(f"file:{home / 'data' / 'rw.db'}?mode=ro", uri=True)
    try:
        assert db.execute("PRAGMA integrity_check").fetchall() == [("ok",)], SEED
    finally:
        db.close()
    log = (home / "data" / "daemon.log").read_text(errors="replace")
    assert len(log) < 200_000, f"the daemon's log grew to {len(log)} bytes (seed {SEED})"
    assert daemon_pid(home) == pid
    print(f"fuzz took {time.monotonic() - started:.1f}s")

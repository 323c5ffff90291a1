"""Fields that hold the spool framing's own bytes (0x1E, RW1, END): a real
shell in a directory so named, and every field of every record fuzzed."""

from __future__ import annotations

import os
import random

import pytest

from rewind_daemon.capture import records
from rewind_daemon.capture.records import Dropped, Record

from ..conftest import rw, rw_json, steps_of, wait_for

SHELLS = ["bash", "zsh"]


@pytest.mark.parametrize("kind", SHELLS)
def test_a_directory_named_like_the_framing_loses_no_step(daemon, shells, kind, tmp_path):
    # (The reviewer's case: every step in it was dropped, and the `cd` never ended.)
    base = tmp_path / "x"
    base.mkdir()
    (base / "a\x1eRW1").mkdir()
    (base / "\x1eEND").mkdir()
    sh = shells(kind)
    lines = [
        f"cd {base}/a$'\\x1e'RW1",
        "echo inside1",
        "echo inside2",
        f"cd {base}/$'\\x1e'END",
        "export RW_F=$'\\x1eRW1'",
        f"cd {tmp_path}",
    ]
    for line in lines:
        sh.run(line)
    sid = sh.session_id()
    steps = wait_for(
        lambda: (s := steps_of(sid)) and len(s) == len(lines) and s[-1]["exit_code"] == 0 and s,
        15,
    )
    assert [s["command"] for s in steps] == lines
    assert all(s["exit_code"] == 0 for s in steps), steps
    assert steps[1]["cwd"] == f"{base}/a\x1eRW1"
    assert steps[4]["cwd"] == f"{base}/\x1eEND"
    status = rw("daemon", "status").stdout
    assert "\n  dropped: 0\n" in status, status


PIECES = ["\x1e", "RW1", "END", "\x1eRW1", "\x1eEND", "a", "é", "\n", "=", "/", " ", "1"]


def _text(rng: random.Random, lead: str = "") -> str:
    return lead + "".join(rng.choice(PIECES) for _ in range(rng.randrange(0, 6)))


def _fuzzed(rng: random.Random) -> tuple[str, ...]:
    """A record of a random type whose every free-text field holds framing bytes."""
    sid = "1700000000123456" + f"{rng.randrange(1 << 20):05x}" + "abcd"
    t, cwd = "1700000000.5", _text(rng, "/")
    env = [f"RW_{i}={_text(rng)}" for i in range(rng.randrange(0, 4))]
    kind = rng.choice("SBHENLU")
    if kind == "S":
        return ("S", sid, "", "zsh", _text(rng), "12", _text(rng), t, cwd, _text(rng),
                _text(rng), "", "list0", *env)  # fmt: skip
    if kind == "B":
        return ("B", sid, "3", t, cwd, _text(rng))
    if kind == "H":
        return ("H", sid, "3", t, cwd, f"  12  {_text(rng)}\n")
    if kind == "E":
        declare = "".join("declare -x " + e.replace("=", '="', 1) + '"\n' for e in env)
        return ("E", sid, "3", t, "0", "0", cwd, "declare", declare)
    if kind == "N":
        return ("N", sid, _text(rng))
    if kind == "L":
        return ("L", sid, "2", t, t, _text(rng))
    return ("U", sid, t, "list0", *env)


def test_fuzzed_fields_with_framing_bytes_come_back_exact_torn_records_lose_themselves_alone():
    rng = random.Random(1234)
    for _ in range(400):
        good = [_fuzzed(rng) for _ in range(rng.randrange(1, 6))]
        buf, expected = b"", []
        for fields in good:
            rec = records.encode(*fields)
            if rng.random() < 0.2:
                # Torn: a writer that died (or a full disk) mid-record.
                buf += rec[: rng.randrange(len(records.MAGIC), len(rec) - len(records.END))]
            buf += rec
            expected.append(Record(fields[0], list(fields[1:])))
        parsed = [item for item, _ in records.parse(buf, final=True)]
        assert [r for r in parsed if isinstance(r, Record)] == expected, (buf, parsed)
        # A record whose writer has not finished yet is waited for.
        whole = records.encode(*good[0])
        assert list(records.parse(whole[:-1])) == []
        assert all(isinstance(r, Dropped) for r in parsed if not isinstance(r, Record))


# Whole fields that are the framing's markers, or end or begin with them: a
# field exactly `\x1eEND` makes the bytes of an end marker, and one exactly
# `\x1eRW1` after it those of a start marker.
MARKERS = ["\x1eEND", "\x1eRW1", "\x1eRW1\x1eEND", "\x1eEND\x1eRW1", "x\x1eRW1", "\x1eENDx",
           "\x1e", "END", "RW1", ""]  # fmt: skip


def _marker(rng: random.Random) -> str:
    return rng.choice(MARKERS) if rng.random() < 0.7 else _text(rng)


def _marked(rng: random.Random) -> tuple[str, ...]:
    """A record of a random type (every type the hooks write, each environment
    format) whose every field that may hold text holds markers."""
    sid = "1700000000123456" + f"{rng.randrange(1 << 20):05x}" + "abcd"
    t, m = "1700000000.5", _marker
    env = [f"RW_{i}={m(rng)}" for i in range(rng.randrange(0, 4))]
    kind = rng.choice("SSBHEEENLU")
    if kind == "S":
        payload = rng.choice([["list0", *env], ["list", str(len(env)), *env], ["none"]])
        return ("S", sid, "", "zsh", m(rng), "12", m(rng), t, m(rng), m(rng), m(rng), "",
                *payload)  # fmt: skip
    if kind == "B":
        return ("B", sid, "3", t, m(rng), m(rng))
    if kind == "H":
        return ("H", sid, "3", t, m(rng), f"  12  {m(rng)}\n")
    if kind == "E":
        payload = rng.choice([["declare", m(rng)], ["zsh", m(rng)], ["list0", *env],
                              ["list", str(len(env)), *env], ["none"]])  # fmt: skip
        return ("E", sid, "3", t, "0", m(rng), m(rng), *payload)
    if kind == "N":
        return ("N", sid, m(rng))
    if kind == "L":
        return ("L", sid, "2", t, t, m(rng))
    return ("U", sid, t, "list0", *env)


def test_a_field_that_is_an_end_marker_then_one_that_is_a_start_marker_keep_their_record():
    # (The reviewer's case: this record was lost, and what followed it read as garbage.)
    sid = "170000000012345600001abcd"
    t = "1700000000.5"
    cases = [
        ("B", sid, "3", t, "\x1eEND", "\x1eRW1"),
        ("S", sid, "", "bash", "5.2", "12", "", t, "/", "\x1eEND", "\x1eRW1", "", "none"),
        ("E", sid, "3", t, "0", "\x1eEND", "\x1eRW1", "list", "1", "A=1"),
        ("L", sid, "2", t, t, "\x1eEND"),
    ]
    after = records.encode("N", sid, "still read")
    for fields in cases:
        buf = records.encode(*fields) + after
        parsed = [item for item, _ in records.parse(buf)]
        assert parsed == [Record(fields[0], list(fields[1:])), Record("N", [sid, "still read"])]


def test_fuzzed_fields_that_hold_the_markers_whole_come_back_exact_at_every_cut():
    rng = random.Random(2026)
    for _ in range(300):
        good = [_marked(rng) for _ in range(rng.randrange(1, 5))]
        buf = b"".join(records.encode(*f) for f in good)
        expected = [Record(f[0], list(f[1:])) for f in good]
        assert [item for item, _ in records.parse(buf)] == expected, buf
        # Read as the daemon reads a spool still being written: whatever the cut,
        # nothing is dropped, and only whole records come out.
        for cut in sorted(rng.sample(range(len(buf)), min(len(buf), 40))):
            parsed = [item for item, _ in records.parse(buf[:cut])]
            assert parsed == expected[: len(parsed)], (cut, buf)
    # A record torn by its writer's death loses itself alone, here too.
    for _ in range(200):
        good = [_marked(rng) for _ in range(rng.randrange(2, 5))]
        torn = rng.randrange(len(good) - 1)
        buf = b""
        for i, fields in enumerate(good):
            rec = records.encode(*fields)
            if i == torn:
                buf += rec[: rng.randrange(len(records.MAGIC), len(rec) - len(records.END))]
            buf += rec
        parsed = [item for item, _ in records.parse(buf, final=True)]
        assert [r for r in parsed if isinstance(r, Record)] == [
            Record(f[0], list(f[1:])) for f in good
        ], buf


SEED = int(os.environ.get("RW_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
QUOTED = {"\x1e": "\\x1e", "'": "\\'", "\\": "\\\\"}


def _ansi(text: str) -> str:
    """`text` as a $'...' word (ASCII: the line typed holds no 0x1E itself)."""
    return "$'" + "".join(QUOTED.get(c, c) for c in text) + "'"


@pytest.mark.parametrize("kind", SHELLS)
def test_real_hooks_write_markers_in_every_field_and_lose_nothing(daemon, shells, kind, tmp_path):
    """Fuzzed: the markers, whole, in every field a shell's records carry: the
    host and user of its session's start, directories ($PWD, also set by hand
    to a marker), commands (typed with a raw 0x1E: Ctrl-V Ctrl-^), exported
    values. Every step is stored, as typed, and no record is dropped."""
    print(f"fuzz seed {SEED} (RW_FUZZ_SEED={SEED} reproduces this run)")
    rng = random.Random(SEED)
    host = "HOSTNAME" if kind == "bash" else "HOST"
    sh = shells(kind, before_init=[f"{host}={_ansi(chr(0x1E) + 'END')} USER=$'\\x1eRW1'"])
    base = tmp_path / "m"
    base.mkdir()
    names = [m for m in MARKERS if m] + [f"d{m}" for m in MARKERS]
    for name in names:
        (base / name).mkdir(exist_ok=True)
    typed, cwds, exported = [], [], {}
    cwd = str(tmp_path / "home")
    for i in range(16):
        cwds.append(cwd)  # (where the line starts)
        action = rng.randrange(5)
        if action == 0:
            cwd = f"{base}/{rng.choice(names)}"
            line = f"cd {_ansi(cwd)}"
        elif action == 1:
            exported[f"RW_F{i}"] = _marker(rng)
            line = f"export RW_F{i}={_ansi(exported[f'RW_F{i}'])}"
        elif action == 2:  # $PWD set by hand: the next records' directory
            cwd = rng.choice(MARKERS[:6])
            line = f"PWD={_ansi(cwd)}"
        elif action == 3:  # a line that is a marker, typed raw (not found: 127)
            line = rng.choice(MARKERS[:6])
        else:
            line = f": {_marker(rng).replace(chr(10), ' ')} {rng.choice(MARKERS[:6])}"
        typed.append(line)
        if "\x1e" in line:
            sh.p.send(line.replace("\x1e", "\x16\x1e") + "\r")
            sh.p.expect_exact("<rwp> ")
        else:
            sh.run(line)
    sid = sh.session_id()
    try:
        wait_for(lambda: len(steps_of(sid)) >= len(typed), 15)
    finally:
        steps = steps_of(sid)
    assert [s["command"] for s in steps] == typed
    assert [s["cwd"] for s in steps] == cwds
    env = rw_json("show", sid, str(len(typed)))["env"]
    assert {k: env.get(k) for k in exported} == exported
    session = next(s for s in rw_json("sessions") if s["id"] == sid)
    assert (session["host"], session["user"]) == ("\x1eEND", "\x1eRW1")
    status = rw("daemon", "status").stdout
    assert "\n  dropped: 0\n" in status, status


@pytest.mark.parametrize("kind", SHELLS)
def test_a_replayed_step_that_leaves_pwd_holding_the_end_marker_is_read(daemon, shells, kind):
    """The replay's shell reports each step in the spool's framing: a step
    that leaves $PWD exactly `\\x1eEND` (before the environment's fields) is
    read whole, as the spool reader reads it."""
    sh = shells(kind)
    sh.run("rw name mark")
    sh.run("export RW_F=$'\\x1eRW1'")
    sh.run("PWD=$'\\x1eEND'")
    proc = rw("replay", "mark", "--from", "2", check=False)
    assert proc.returncode == 0 and "cannot read" not in proc.stderr, proc
    replayed = next(s for s in rw_json("sessions") if s["origin"] == "replay")
    assert [s["cwd_after"] for s in steps_of(replayed["id"])][-1] == "\x1eEND"

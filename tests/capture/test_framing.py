"""Fields that hold the spool framing's own bytes (0x1E, RW1, END): a real
shell in a directory so named, and every field of every record fuzzed."""

from __future__ import annotations

import random

import pytest

from rewind_daemon.capture import records
from rewind_daemon.capture.records import Dropped, Record

from ..conftest import rw, steps_of, wait_for

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

"""The output spool: written by the recorder, read back by the daemon's side."""

from __future__ import annotations

import os
import subprocess

import pytest

from rewind_daemon.recorder.marks import Piece
from rewind_daemon.recorder.spool import (
    CAP,
    HEAD,
    HELD,
    MAGIC,
    OUTPUT_SUFFIX,
    TAIL,
    OutputSpool,
    iter_records,
    read_steps,
)


def step(spool: OutputSpool, sid: str, seq: int, *chunks: bytes, end: bool = True) -> None:
    spool.handle([Piece("C", sid, seq, b"")])
    spool.handle([Piece("output", sid, seq, c) for c in chunks])
    if end:
        spool.handle([Piece("D", sid, seq, b"0")])


def test_any_bytes_round_trip_per_step_and_output_outside_steps_is_not_kept(tmp_path):
    spool = OutputSpool(tmp_path / "spool", (80, 24))
    every_byte = bytes(range(256)) * 3
    step(spool, "S1", 1, b"a\x00b", every_byte, MAGIC + b"\x00" * 20)
    spool.handle([Piece("output", None, None, b"prompt $ ")])
    step(spool, "S1", 2)  # silent
    step(spool, "S2", 1, b"other session")
    step(spool, "S1", 3, b"cut off", end=False)
    spool.close()
    s1 = read_steps(tmp_path / "spool" / f"S1{OUTPUT_SUFFIX}")
    assert [(s.seq, s.data, s.finished, s.ended) for s in s1] == [
        (1, b"a\x00b" + every_byte + MAGIC + b"\x00" * 20, True, True),
        (2, b"", True, True),
        (3, b"cut off", True, False),
    ]
    assert all(s.started > 0 and s.omitted == 0 for s in s1)
    assert b"prompt" not in (tmp_path / "spool" / f"S1{OUTPUT_SUFFIX}").read_bytes()
    s2 = read_steps(tmp_path / "spool" / f"S2{OUTPUT_SUFFIX}")
    assert [(s.session, s.data) for s in s2] == [("S2", b"other session")]


def test_files_are_0600_in_a_0700_directory_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        spool = OutputSpool(tmp_path / "spool")
        step(spool, "S1", 1, b"x")
        spool.close()
    finally:
        os.umask(old)
    assert (tmp_path / "spool").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "spool" / f"S1{OUTPUT_SUFFIX}").stat().st_mode & 0o777 == 0o600


def test_a_symlink_in_the_spools_place_is_not_followed(tmp_path):
    (tmp_path / "spool").mkdir(mode=0o700)
    victim = tmp_path / "victim"
    victim.write_text("mine\n")
    (tmp_path / "spool" / f"S1{OUTPUT_SUFFIX}").symlink_to(victim)
    spool = OutputSpool(tmp_path / "spool")
    with pytest.raises(OSError):
        step(spool, "S1", 1, b"x")
    assert victim.read_text() == "mine\n"


def test_a_torn_last_record_waits_and_damage_is_skipped(tmp_path):
    spool = OutputSpool(tmp_path)
    step(spool, "S1", 1, b"first")
    step(spool, "S1", 2, b"second")
    spool.close()
    path = tmp_path / f"S1{OUTPUT_SUFFIX}"
    buf = path.read_bytes()
    records = list(iter_records(buf))
    # Torn: each cut inside the last record yields the records before it, and
    # says where to resume.
    last_start = records[-2][1]
    for cut in range(last_start + 1, len(buf)):
        got = list(iter_records(buf[:cut]))
        assert len(got) == len(records) - 1 and got[-1][1] == last_start
    # Damaged: a byte flipped in the first step's chunk loses that record alone.
    at = buf.find(b"first")
    path.write_bytes(buf[:at] + b"F" + buf[at + 1 :])
    steps = read_steps(path)
    assert [(s.seq, s.data) for s in steps] == [(1, b""), (2, b"second")]


def test_a_step_beyond_the_cap_keeps_its_first_and_last_lines_and_counts_the_rest(tmp_path):
    spool = OutputSpool(tmp_path)
    lines = [b"line %07d\n" % i for i in range(1_500_000)]  # 21 MB, 13-byte lines
    chunks, chunk = [], bytearray()
    for line in lines:
        chunk += line
        if len(chunk) >= 65536:
            chunks.append(bytes(chunk))
            chunk.clear()
    chunks.append(bytes(chunk))
    step(spool, "S1", 1, *chunks)
    step(spool, "S1", 2, b"after")
    spool.close()
    path = tmp_path / f"S1{OUTPUT_SUFFIX}"
    # The spool holds the first CAP bytes and the last TAIL, not all 21 MB.
    assert path.stat().st_size < CAP + TAIL + 1_000_000
    first, second = read_steps(path)
    total = sum(len(x) for x in lines)
    assert first.total == total and second.data == b"after"
    kept = first.data.split(b"\n")[:-1]
    n_head = HEAD // 13
    n_tail = TAIL // 13
    assert [x + b"\n" for x in kept] == lines[:n_head] + lines[-n_tail:]
    assert first.omitted == total - len(first.data) > 0


def test_up_to_the_cap_everything_is_kept(tmp_path):
    spool = OutputSpool(tmp_path, head=10, tail=10)
    step(spool, "S1", 1, b"0123456789", b"abcdefghij")
    step(spool, "S1", 2, b"0123\n5678\n", b"abcdefghij", b"klm\nopqrs\n")
    spool.close()
    a, b = read_steps(tmp_path / f"S1{OUTPUT_SUFFIX}", head=10, tail=10)
    assert (a.data, a.omitted) == (b"0123456789abcdefghij", 0)
    assert (b.data, b.omitted) == (b"0123\n5678\nopqrs\n", 14)


def test_a_full_disk_raises_to_the_caller(tmp_path):
    if os.getuid() != 0:
        pytest.skip("mounting a small filesystem needs root")
    d = tmp_path / "small"
    d.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", "size=64k,mode=0700", "tmpfs", str(d)]
    subprocess.run(mount, check=True)
    try:
        spool = OutputSpool(d)
        with pytest.raises(OSError) as e:
            step(spool, "S1", 1, *[b"x" * 8192] * 32)
        assert e.value.errno == 28
        with pytest.raises(OSError):
            spool.close()  # the end record does not fit either; the files are closed
        assert spool._files == {}
        # What fit is readable: the step's first chunks, not marked finished.
        (got,) = read_steps(d / f"S1{OUTPUT_SUFFIX}")
        assert got.data and set(got.data) == {ord("x")} and not got.finished
    finally:
        subprocess.run(["umount", "-l", str(d)], check=False)


def test_the_terminal_size_is_noted_at_a_sessions_start_and_at_each_resize(tmp_path):
    times = iter(range(100, 200))
    spool = OutputSpool(tmp_path, (80, 24), clock=lambda: float(next(times)))
    step(spool, "S1", 1, b"x")
    spool.resize((100, 30))
    spool.close()
    records = [r for r, _ in iter_records((tmp_path / f"S1{OUTPUT_SUFFIX}").read_bytes())]
    sizes = [(r.size, r.time) for r in records if r.kind == "Z"]
    assert [s for s, _ in sizes] == [(80, 24), (100, 30)]
    assert [r.kind for r in records] == ["Z", "O", "O", "E", "Z"]
    assert [r.time for r in records] == sorted(r.time for r in records)


def test_output_waits_for_a_pause_a_steps_start_or_end_or_64_kib(tmp_path):
    # A burst of output costs a write per 64 KiB, not one per read of the
    # terminal; a step's start and end go out at once, with what waited.
    spool = OutputSpool(tmp_path, (80, 24), hold=HELD)
    path = tmp_path / f"S1{OUTPUT_SUFFIX}"
    spool.handle([Piece("C", "S1", 1, b"")])
    started = path.read_bytes()
    assert [r.kind for r, _ in iter_records(started)] == ["Z", "O"] and spool.held == 0
    for _ in range(10):
        spool.handle([Piece("output", "S1", 1, b"x" * 1000)])
    assert path.read_bytes() == started and spool.held > 10000
    spool.flush()  # (the proxy's, once the output pauses)
    (got,) = read_steps(path)
    assert got.data == b"x" * 10000 and not got.finished and spool.held == 0
    for _ in range(16):
        spool.handle([Piece("output", "S1", 1, b"y" * 4096)])
    (got,) = read_steps(path)  # (16 records of 4 KiB and their frames: 64 KiB held)
    assert got.data == b"x" * 10000 + b"y" * 65536 and spool.held == 0
    spool.handle([Piece("output", "S1", 1, b"z"), Piece("D", "S1", 1, b"0")])
    (got,) = read_steps(path)
    assert got.data.endswith(b"yz") and got.finished and spool.held == 0

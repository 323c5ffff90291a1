"""OutputReader (capture/outputs.py) over real output spools and a real store:
when a step's output is stored, exactly once, and what damage costs."""

from __future__ import annotations

import signal
import time

import pytest

from rewind_daemon import paths, redact
from rewind_daemon.capture import outputs, records
from rewind_daemon.capture.outputs import CHUNK, DAMAGED, OutputReader, make_output
from rewind_daemon.capture.termtext import text_of
from rewind_daemon.recorder.spool import OutputSpool
from rewind_daemon.redact import MASK, Redactor
from rewind_daemon.store import SearchFilter, Store, output_blobs

from ..conftest import rw, rw_json, wait_for

SID = "S1"
COMMON = dict(shell="bash", shell_version="5", pid=None, tty=None, cwd="/", host="h", user="u")


def make(tmp_path):
    spool_dir = tmp_path / "spool"
    spool_dir.mkdir(mode=0o700)
    store = Store(tmp_path / "rw.db")
    with store.transaction():
        store.upsert_session(SID, parent_id=None, started_at=1.0, **COMMON)
    return spool_dir, store, OutputSpool(spool_dir, (80, 24))


def step(store, seq, command="cmd", ended=True):
    with store.transaction():
        store.begin_step(SID, store.next_step_number(SID), seq, command, "/", float(seq))
    if ended:
        end_step(store, seq)


def end_step(store, seq):
    with store.transaction():
        store.end_step(
            SID, seq, ended_at=seq + 0.5, exit_code=0, pipestatus="0", cwd="/", env_id=None
        )


def printed(spool, seq, data: bytes, end=True):
    spool.start(SID, seq)
    spool.output(SID, seq, data)
    if end:
        spool.end(SID, seq, True)


def text(store, number):
    out = store.step_output(SID, number)
    return None if out is None else out.text


def test_output_waits_for_its_step_and_a_step_never_recorded_loses_it(tmp_path):
    spool_dir, store, spool = make(tmp_path)
    reader = OutputReader(spool_dir, store, Redactor())
    path = spool_dir / "S1.output"
    printed(spool, 1, b"first\r\n")
    printed(spool, 2, b"not recorded\r\n")  # a line typed with a leading space
    printed(spool, 3, b"third\r\n")
    assert reader.ingest_file(path) == 0  # no step yet: kept in the spool
    assert text(store, 1) is None
    assert store.spool_offset("S1.output") < path.read_bytes().index(b"first")
    step(store, 1)
    assert reader.ingest_file(path) == 1
    assert text(store, 1) == "first\n"
    step(store, 3)  # seq 2 never will be: its output is dropped
    assert reader.ingest_file(path) == 1
    assert text(store, 2) == "third\n"
    assert store.spool_offset("S1.output") == path.stat().st_size
    assert path.read_bytes().strip(b"\0") == b""  # what was stored is erased from the spool


def test_output_waits_for_the_end_of_its_step_in_the_store(tmp_path):
    """The end record brings the environment whose secrets the output may print
    (known_secrets.py): until it is stored, the output stays in the spool."""
    spool_dir, store, spool = make(tmp_path)
    reader = OutputReader(spool_dir, store, Redactor())
    path = spool_dir / "S1.output"
    step(store, 1, ended=False)
    printed(spool, 1, b"printed\r\n")
    assert reader.ingest_file(path) == 0
    assert text(store, 1) is None
    end_step(store, 1)
    assert reader.ingest_file(path) == 1
    assert text(store, 1) == "printed\n"


def test_a_reader_started_again_from_the_committed_offset_stores_nothing_twice(tmp_path):
    spool_dir, store, spool = make(tmp_path)
    path = spool_dir / "S1.output"
    step(store, 1)
    step(store, 2)
    printed(spool, 1, b"one\r\n")
    spool.start(SID, 2)
    spool.output(SID, 2, b"two, part 1\r\n")
    reader = OutputReader(spool_dir, store, Redactor())
    assert reader.ingest_file(path) == 1
    committed = store.spool_offset("S1.output")
    assert 0 < committed < path.stat().st_size  # step 2's records wait, in the spool
    spool.output(SID, 2, b"two, part 2\r\n")
    spool.end(SID, 2, True)
    # The daemon killed: a new reader starts from what the store says.
    again = OutputReader(spool_dir, store, Redactor())
    assert again.ingest_file(path) == 1
    assert text(store, 1) == "one\n"
    assert text(store, 2) == "two, part 1\ntwo, part 2\n"
    assert again.ingest_file(path) == 0


def test_a_damaged_record_is_dropped_alone_and_counted(tmp_path):
    spool_dir, store, spool = make(tmp_path)
    path = spool_dir / "S1.output"
    for seq in (1, 2, 3):
        step(store, seq)
    printed(spool, 1, b"one\r\n")
    size = path.stat().st_size
    printed(spool, 2, b"two\r\n")
    printed(spool, 3, b"three\r\n")
    data = bytearray(path.read_bytes())
    at = data.index(b"two", size)
    data[at] ^= 0xFF  # its CRC no longer matches
    path.write_bytes(bytes(data))
    reader = OutputReader(spool_dir, store, Redactor())
    reader.ingest_file(path)
    assert text(store, 1) == "one\n"
    assert text(store, 3) == "three\n"
    out = store.step_output(SID, 2)
    assert out is not None and out.text == "" and out.size == 5  # its bytes are lost, counted
    assert store.counter(DAMAGED) == 1


def test_the_cap_and_redaction_apply_before_the_store(tmp_path):
    spool_dir, store, spool = make(tmp_path)
    path = spool_dir / "S1.output"
    step(store, 1)
    token = "ghp_" + "A1b2" * 9
    body = b"".join(b"line %d\r\n" % i for i in range(1000))
    printed(spool, 1, b"key " + token.encode() + b"\r\n" + body + b"end " + token.encode())
    OutputReader(spool_dir, store, Redactor(), cap=1000).ingest_file(path)
    out = store.step_output(SID, 1)
    assert out is not None
    assert out.text.startswith(f"key {MASK}\nline 0\n") and out.text.endswith(f"end {MASK}")
    assert token.encode() not in out.raw and len(out.raw) <= 1000
    head, mark, tail = out.text.partition(f"[... {out.omitted} bytes left out ...]\n")
    assert mark and head.endswith("\n") and tail.startswith("line ")  # where, in the text
    assert b"left out" not in out.raw
    assert out.omitted > 0 and out.size == len(body) + 2 * len(token) + 10
    assert token.encode() not in (tmp_path / "rw.db").read_bytes()


def test_a_secret_split_by_an_escape_sequence_is_kept_out_of_the_bytes_too():
    body = "A1b2" * 9
    raw = b"\x1b[32mok\x1b[0m token ghp_\x1b[1m" + body.encode() + b"\x1b[0m\r\n"
    out, n = make_output(raw, "deploy", Redactor())
    assert n == 1
    assert out.text == f"ok token {MASK}\n"
    assert body.encode() not in out.raw and out.raw == out.text.encode()
    plain, _ = make_output(b"\x1b[32mok\x1b[0m\r\n", "deploy", Redactor())
    assert plain.raw == b"\x1b[32mok\x1b[0m\r\n"  # no secret: the bytes as they were


def test_damage_larger_than_a_read_is_skipped_in_a_spool_still_written(tmp_path):
    spool_dir, store, spool = make(tmp_path)
    path = spool_dir / "S1.output"
    step(store, 1)
    step(store, 2)
    printed(spool, 1, b"before\r\n")
    with open(path, "ab") as f:
        f.write(b"x" * (CHUNK + 4096))  # no record in more than the most read at once
    printed(spool, 2, b"after\r\n")

    def too_long(*_):
        raise TimeoutError("the reader is stuck")

    old = signal.signal(signal.SIGALRM, too_long)
    signal.alarm(60)
    try:
        OutputReader(spool_dir, store, Redactor()).ingest_file(path)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert text(store, 1) == "before\n" and text(store, 2) == "after\n"
    assert store.counter(DAMAGED) >= 1  # (a run per read it spans)


def test_records_of_another_session_in_a_spool_are_dropped(tmp_path):
    spool_dir, store, spool = make(tmp_path)
    path = spool_dir / "S1.output"
    step(store, 1)
    printed(spool, 1, b"mine\r\n")
    step(store, 2)
    other = OutputSpool(tmp_path / "other", (80, 24))
    other.start("S2", 1)
    other.output("S2", 1, b"not mine\r\n")
    other.end("S2", 1, True)
    with open(path, "ab") as f:
        f.write((tmp_path / "other" / "S2.output").read_bytes())
    printed(spool, 2, b"mine too\r\n")
    OutputReader(spool_dir, store, Redactor()).ingest_file(path)
    assert text(store, 1) == "mine\n" and text(store, 2) == "mine too\n"
    assert store.counter(DAMAGED) == 4  # its size, start, output and end records


def test_when_each_part_was_printed_and_the_terminals_sizes_are_kept(tmp_path):
    """For the cast export: the time of each part of a step's output (at its
    offset in the output as printed) and the terminal's size over time."""
    spool_dir, store, _ = make(tmp_path)
    clock = iter([100.0, 100.5, 101.0, 101.25, 102.0, 103.0, 104.0]).__next__
    spool = OutputSpool(spool_dir, (80, 24), clock=clock)
    path = spool_dir / "S1.output"
    step(store, 1)
    spool.start(SID, 1)  # the size at 100.0, the start at 100.5
    spool.output(SID, 1, b"one\r\n")  # 101.0
    spool.resize((120, 40))  # 101.25
    spool.output(SID, 1, b"two\r\n")  # 102.0
    spool.end(SID, 1, True)
    OutputReader(spool_dir, store, Redactor()).ingest_file(path)
    out = store.step_output(SID, 1)
    assert out is not None and out.timing == ((0, 101.0), (5, 102.0))
    assert store.terminal_sizes(SID) == [(100.0, 80, 24), (101.25, 120, 40)]


def test_daemon_status_shows_the_dropped_output_records(rw_home):
    """`rw daemon status` says how many output records were dropped as damaged,
    as it says how many command records were (--json has had it)."""
    spool_dir = paths.resolve().spool_dir
    spool_dir.mkdir(parents=True, mode=0o700)
    sid = "1795000000000000ab"
    (spool_dir / f"{sid}.spool").write_bytes(
        records.encode("S", sid, "", "bash", "5", "", "", "1.0", "/", "h", "u")
        + records.encode("B", sid, "1", "2.0", "/", "cmd")
        + records.encode("E", sid, "1", "3.0", "0", "0", "/", "none")
        + records.encode("B", sid, "2", "4.0", "/", "cmd")
        + records.encode("E", sid, "2", "5.0", "0", "0", "/", "none")
    )
    spool = OutputSpool(spool_dir, (80, 24))
    for seq in (1, 2):
        spool.start(sid, seq)
        spool.output(sid, seq, b"output\r\n")
        spool.end(sid, seq, True)
        with open(spool_dir / f"{sid}.output", "ab") as f:
            f.write(b"garbage, not a record")  # (the second run: after the last record)
    spool.close()
    rw("daemon", "start")
    wait_for(lambda: rw_json("daemon", "status")["dropped_output"] or None)
    status = rw("daemon", "status").stdout
    assert "  dropped: 0\n" in status
    assert "  dropped_output: 1\n" in status, status


def test_megabytes_of_output_are_made_ready_to_store_fast(monkeypatch):
    # A build log in colour, apt's CR progress, JSON logs, and a token and a
    # password every 100 kB: every rule searching all of the bytes and of the
    # text where its word was anywhere in them took 3 times as long or more
    # (the daemon's own figure: bench/output_ingest.py).
    token = "ghp_" + "A1b2" * 9
    lines = []
    for n in range(40000):
        lines.append(
            [
                f"[{n % 100:3d}%] \x1b[32mBuilding C object src/auth/CMakeFiles/auth.dir/"
                f"key_{n}.c.o\x1b[0m",
                f"(Reading database ... {n % 100}%\r(Reading database ... {n} files installed.)",
                f'{{"level":"info","name":"auth","id":{n},"msg":"token refreshed","ok":true}}',
                f"src/web/{n}.c:12:5: \x1b[1;35mwarning: \x1b[0munused variable 'key_len'",
            ][n % 4]
        )
        if n % 1000 == 999:
            lines.append(f"export GITHUB_TOKEN={token}\r\n  password: hunter{n}")
    raw = "\r\n".join(lines).encode()
    start = time.process_time()
    out, n = make_output(raw, "make", Redactor())
    took = time.process_time() - start
    assert n == 2 * 40
    assert token not in out.text and "hunter" not in out.text
    assert token.encode() not in out.raw and b"hunter" not in out.raw
    assert "[ 96%] Building C object src/auth/CMakeFiles/auth.dir/key_39996.c.o\n" in out.text
    monkeypatch.setattr(redact, "LONG", 1 << 40)  # every rule searches all of it
    start = time.process_time()
    assert make_output(raw, "make", Redactor()) == (out, n)
    assert took * 2 < time.process_time() - start


def test_plain_output_is_stored_once_and_read_as_its_text(tmp_path):
    # Output without escapes, CRs or backspaces: its text is its bytes decoded,
    # so the text is not stored apart (an empty blob, schema 7), and every
    # reader (rw show, the search index, rw search) gets it from the bytes.
    spool_dir, store, spool = make(tmp_path)
    path = spool_dir / "S1.output"
    token = "ghp_" + "A1b2" * 9
    for seq in (1, 2, 3):
        step(store, seq)
    printed(spool, 1, b"caf\xc3\xa9 \xff ok\r\ntoken " + token.encode() + b"\r\n" * 3000)
    printed(spool, 2, b"\x1b[32mgreen\x1b[0m\r\n")
    printed(spool, 3, b"gone\r\n")
    OutputReader(spool_dir, store, Redactor()).ingest_file(path)
    stored = dict(store.db.execute("SELECT number, text FROM step_outputs"))
    assert stored[1] == b"" and stored[3] == b"" and len(stored[2]) > 0
    one = store.step_output(SID, 1)
    assert one is not None and one.plain
    assert one.text == f"café \ufffd ok\ntoken {MASK}" + "\n" * 3000 == text_of(one.raw)
    assert store.step_output(SID, 2).text == "green\n"
    assert token.encode() not in (tmp_path / "rw.db").read_bytes()
    assert store.index_pending(text_of, 10) is True
    ids = {n: i for n, i in store.db.execute("SELECT number, search_id FROM steps")}
    found = store.search_index("output", [("café", False)], SearchFilter())
    assert [(i, s.number, t) for i, s, t in found] == [(ids[1], 1, one.text)]
    scanned = {s.number: (t, b) for _, s, t, b in store.search_scan(SearchFilter(), True)}
    assert scanned[1] == (one.text, None) and scanned[2] == ("green\n", None)
    with store.transaction():  # an output replaced: its words leave the index
        store.set_output(SID, 3, make_output(b"again\r\n", "cmd", Redactor())[0])
    assert store.index_pending(text_of, 10) is True
    assert list(store.search_index("output", [("gone", False)], SearchFilter())) == []
    assert [
        s.number for _, s, _ in store.search_index("output", [("again", False)], SearchFilter())
    ] == [3]


def test_the_daemon_makes_no_text_for_plain_output_and_stores_the_same_row():
    # `ready` (the daemon's and its worker's) asks for no text where the row
    # holds none: plain output alone, not output capped in two plain halves
    # (its text says what was left out), nor output with escapes.
    big = b"".join(b"line %d ok\r\n" % n for n in range(400))
    cases = [
        (b"caf\xc3\xa9 ok\r\ntoken ghp_" + b"A1b2" * 9 + b"\r\n", {}),
        (big, {"cap": 2000}),
        (b"\x1b[32mgreen\x1b[0m\r\n", {}),
    ]
    for raw, cap in cases:
        made, n = make_output(raw, "cmd", Redactor(), **cap)
        lean, m = make_output(raw, "cmd", Redactor(), plain_text_too=False, **cap)
        assert output_blobs(lean) == output_blobs(made) and m == n
        assert lean.text == ("" if made.plain else made.text)
    assert [make_output(r, "cmd", Redactor(), **c)[0].plain for r, c in cases] == [
        True, False, False,
    ]  # fmt: skip
    job = outputs.OutputJob(SID, "cmd", cases[0][0], b"", 1 << 20, len(cases[0][0]), 0, True, ())
    assert outputs.ready(job, Redactor())[0] == output_blobs(
        make_output(cases[0][0], "cmd", Redactor())[0]
    )


# Secrets in output are looked for first in one pass over its text and what
# the text does not show (make_output); where that finds one, the bytes and
# their text are searched as before. Each case below must leave the secret
# nowhere in what is stored, and keep the bytes (colours) where they can be.
SECRET = "Hunter2xQ9v"
SPLIT = [
    # (what was printed, whether its bytes can be kept)
    (f"\x1b[1mpassword: {SECRET}\x1b[0m\r\n".encode(), True),  # coloured, whole
    # An escape splits it: the rules over the bytes mask it with the escape.
    (b"password: Hunt\x1b[0mer2xQ9v\r\n", True),
    # A token split by one: the rules miss it in the bytes; the text stands.
    (b"fetched ghp_A1b2C3d4E5f6G7h8J9\x1b[0mA1b2C3d4E5f6G7h8J9 ok\r\n", False),
    # Overwritten by a CR: only what was overwritten holds it.
    (f"password: {SECRET}\r\x1b[Kpassword: ********\r\n".encode(), True),
    (f"\x1b[32mDB_PASSWORD={SECRET}\x1b[0m\rconnected  \r\n".encode(), True),
    # Backspaced away, and typed with a correction (the terminal's echo).
    ((f"password: {SECRET}" + "\b" * 30 + "done\x1b[K\r\n").encode(), True),
    (b"Paste your token: gx\x08 \x08hp_A1b2C3d4E5f6G7h8J9K0A1b2C3d4E5f6G7h8J9K0\r\n", False),
    (b"password: Huntx\x08 \x08er2xQ9v\r\n", False),
    (b"--token Hunt\x08er2xQ9v\rdone \r\n", True),
    # An OSC 8 hyperlink's URL, and a window title.
    (b"\x1b]8;;https://deploy:" + SECRET.encode() + b"@git.example/x\x1b\\repo\x1b]8;;\x1b\\\r\n",
     True),
    (b"\x1b]2;password: " + SECRET.encode() + b"\x07title set\r\n", True),
    # Drawn on the alternate screen (left out of the text).
    (f"\x1b[?1049h\x1b[2J\x1b[5;1Hpassword: {SECRET}\x1b[?1049l\x1b[0mok\r\n".encode(), True),
]  # fmt: skip


@pytest.mark.parametrize("raw,kept", SPLIT)
def test_a_secret_the_text_hides_or_splits_is_stored_nowhere(raw, kept):
    body = b"\x1b[32mbuild ok\x1b[0m\r\n" * 2000  # (long: the long-text search)
    out, n = make_output(body + raw + body, "deploy", Redactor())
    assert n >= 1
    for part in ("Hunter2", "Hunt", "er2xQ9v", "A1b2C3d4E5f6", "hp_A1b2"):
        assert part.encode() not in out.raw, out.raw[-400:]
        assert part not in (out.text or "")
    # The rest keeps its colours; where the bytes split the secret from the
    # rules, the masked text stands for its lines alone.
    assert out.raw.count(b"\x1b[32mbuild ok") >= (4000 if kept else 4000 - 2 * outputs.REGION_LINES)


def test_a_short_value_found_is_not_masked_in_escape_sequences_or_other_words():
    # A value found by a rule (`tokens: 0`) is masked where the rule found it,
    # not wherever its characters are (in an escape sequence, in `10.0s`).
    raw = b"\x1b[1mmodel\x1b[0m: gpt  tokens: 0  time: 10.0s\r\n\x1b[32m200 OK\x1b[0m\r\n" * 3000
    out, _ = make_output(raw, "x", Redactor())
    assert b"\x1b[<" not in out.raw and b"10.0s" in out.raw and b"\x1b[32m200 OK" in out.raw


def test_many_secrets_in_coloured_output_are_masked_and_the_bytes_kept():
    # A secret on every line, coloured: masked in the bytes, which are kept;
    # one the bytes split from the rules: the masked text stands for them.
    lines = [f"\x1b[33mwarn\x1b[0m line {i}: password: Pw{i:04d}secret" for i in range(50)]
    out, n = make_output("\r\n".join(lines).encode() * 40, "x", Redactor())
    assert n >= 50 * 40
    assert b"secret" not in out.raw and "secret" not in out.text
    assert b"\x1b[33m" in out.raw  # whole in the bytes: the bytes kept
    # A token that a colour splits in the bytes: the rules miss it there.
    half = "A1b2C3d4E5f6G7h8J9"
    split = "\r\n".join([*lines, f"fetched with ghp_{half}\x1b[0m{half}"]).encode()
    out, n = make_output(split, "x", Redactor())
    assert n == 51
    assert half.encode() not in out.raw and half not in out.text
    assert b"\x1b[33m" not in out.raw  # the masked text stands for the bytes

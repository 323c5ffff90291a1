"""The mark splitter, fed the stream in every way a terminal's reads can cut it."""

from __future__ import annotations

import pytest

from rewind_daemon.recorder.marks import MAX_MARK, Piece, Splitter, parse_env

TOKEN = "f00dfeed1234"


def mark(kind: str, sid: str = "S1", seq: int | str = 1, *extra: str, token: str = TOKEN) -> bytes:
    params = ";".join([kind, *extra, f"rw={token}:{sid}:{seq}"])
    return f"\x1b]133;{params}\x07".encode()


def run(chunks: list[bytes], token: str = TOKEN) -> tuple[bytes, list[Piece]]:
    """Feed `chunks`, flush at the end; (bytes shown, pieces with adjacent outputs of
    one step merged, so that any cutting of the stream compares equal)."""
    s = Splitter(token)
    shown, pieces = b"", []
    for c in chunks:
        out, ps = s.feed(c)
        shown += out
        pieces += ps
    out, ps = s.flush()
    shown += out
    pieces += ps
    merged: list[Piece] = []
    for p in pieces:
        last = merged[-1] if merged else None
        if last and p.event == last.event == "output" and last[1:3] == p[1:3]:
            merged[-1] = last._replace(payload=last.payload + p.payload)
        else:
            merged.append(p)
    return shown, merged


def outputs(pieces: list[Piece]) -> dict:
    out: dict = {}
    for p in pieces:
        if p.event == "output":
            out[(p.session, p.seq)] = out.get((p.session, p.seq), b"") + p.payload
    return out


USER_MARK = b"\x1b]133;A\x07"  # the user's own terminal integration
STREAM = (
    b"\x1b[1;32muser@host\x1b[0m " + USER_MARK + mark("A", seq="") + b"$ " + mark("B", seq="")
    + b"ls\r\n" + mark("C", seq=1)
    + b"a\x00b \xe2\x82\xac \x1b[31mred\x1b[0m\r\n" + mark("C", "S9", 7, token="0ther")
    + b"\x1b]133;C;rw=" + b"\r\n"  # a broken start of a mark, then more output
    + mark("D", "S1", 1, "2") + b"$ "
)  # fmt: skip


def test_rw_marks_are_removed_and_split_the_output_by_step():
    shown, pieces = run([STREAM])
    ours = [mark(k, seq=q) for k, q in (("A", ""), ("B", ""), ("C", 1))] + [mark("D", "S1", 1, "2")]
    expected = STREAM
    for m in ours:
        expected = expected.replace(m, b"")
    assert shown == expected
    assert USER_MARK in shown and b"rw=0ther" in shown
    assert [(p.event, p.session, p.seq) for p in pieces if p.event != "output"] == [
        ("A", "S1", None), ("B", "S1", None), ("C", "S1", 1), ("D", "S1", 1),
    ]  # fmt: skip
    d = next(p for p in pieces if p.event == "D")
    assert d.payload == b"2"
    out = outputs(pieces)
    assert out[("S1", 1)] == (
        b"a\x00b \xe2\x82\xac \x1b[31mred\x1b[0m\r\n"
        + mark("C", "S9", 7, token="0ther") + b"\x1b]133;C;rw=\r\n"
    )  # fmt: skip
    assert out[(None, None)] == b"\x1b[1;32muser@host\x1b[0m " + USER_MARK + b"$ ls\r\n$ "


def test_marks_cut_at_every_byte_boundary_are_found():
    whole = run([STREAM])
    for i in range(len(STREAM) + 1):
        assert run([STREAM[:i], STREAM[i:]]) == whole, i
    for i in range(len(STREAM)):
        for j in range(i, min(len(STREAM), i + 40) + 1):
            assert run([STREAM[:i], STREAM[i:j], STREAM[j:]]) == whole, (i, j)
    assert run([STREAM[i : i + 1] for i in range(len(STREAM))]) == whole


def test_a_chunk_without_marks_goes_through_as_the_same_object():
    s = Splitter(TOKEN)
    chunk = b"x" * 65536
    shown, pieces = s.feed(chunk)
    assert shown is chunk and pieces == [Piece("output", None, None, chunk)]


def test_a_held_start_is_released_by_flush_and_a_long_osc_is_output():
    s = Splitter(TOKEN)
    assert s.feed(b"abc\x1b]13") == (b"abc", [Piece("output", None, None, b"abc")])
    assert s.pending == b"\x1b]13"
    assert s.flush()[0] == b"\x1b]13" and not s.pending
    long_osc = b"\x1b]133;C;" + b"x" * MAX_MARK + b"rw=" + TOKEN.encode() + b":S1:1\x07"
    assert s.feed(long_osc)[0] == long_osc


def test_st_ends_a_mark_too_and_an_escape_inside_makes_it_output():
    st = mark("C")[:-1] + b"\x1b\\"
    shown, pieces = run([st + b"out" + mark("D")])
    assert shown == b"out" and outputs(pieces) == {("S1", 1): b"out"}
    broken = mark("C")[:-1] + b"\x1b[0m"
    assert run([broken])[0] == broken


def test_ctrl_c_at_an_empty_prompt_is_no_step_and_a_pasted_block_is_one_step_per_line():
    shown, pieces = run([mark("A") + b"$ ^C\r\n" + mark("A") + b"$ " + mark("B")])
    assert not [p for p in pieces if p.event in ("C", "D", "lost")]
    paste = b"".join(mark("C", seq=n) + b"%d\r\n" % n + mark("D", "S1", n, "0") for n in (3, 4, 5))
    out = outputs(run([paste])[1])
    assert out == {("S1", 3): b"3\r\n", ("S1", 4): b"4\r\n", ("S1", 5): b"5\r\n"}


def test_a_missing_d_closes_the_step_at_the_next_prompt_or_c_of_its_session():
    _, pieces = run([mark("C", seq=1) + b"one" + mark("A", seq="") + b"$ " + mark("C", seq=2)])
    events = [(p.event, p.seq) for p in pieces if p.event != "output"]
    assert events == [("C", 1), ("lost", 1), ("A", None), ("C", 2)]
    _, pieces = run([mark("C", seq=1) + mark("C", seq=2)])
    assert [(p.event, p.seq) for p in pieces] == [("C", 1), ("lost", 1), ("C", 2)]


def test_a_nested_shell_s_steps_take_their_output_and_the_outer_step_keeps_the_rest():
    stream = (
        mark("C", "OUT", 5) + b"inner prompt " + mark("C", "IN", 1) + b"inner out"
        + mark("D", "IN", 1, "0") + b"bye" + mark("D", "OUT", 5, "0") + b"$ "
    )  # fmt: skip
    out = outputs(run([stream])[1])
    assert out == {
        ("OUT", 5): b"inner prompt bye",
        ("IN", 1): b"inner out",
        (None, None): b"$ ",
    }
    # The inner shell killed: the outer step's D closes it as lost.
    _, pieces = run([mark("C", "OUT", 5) + mark("C", "IN", 1) + mark("D", "OUT", 5)])
    assert [(p.event, p.session) for p in pieces] == [
        ("C", "OUT"), ("C", "IN"), ("lost", "IN"), ("D", "OUT"),
    ]  # fmt: skip


@pytest.mark.parametrize(
    "bad",
    [
        mark("C", "../x", 1),  # not a session id
        mark("C", "S1", "x"),  # no seq
        mark("Q", "S1", 1),  # no such kind
    ],
)
def test_a_malformed_mark_with_the_right_token_is_dropped(bad):
    shown, pieces = run([b"a" + bad + b"b"])
    assert shown == b"ab" and [p.event for p in pieces] == ["output"]


def test_close_ends_the_running_steps_as_lost():
    s = Splitter(TOKEN)
    s.feed(mark("C", "A1", 1) + mark("C", "B1", 2))
    assert s.close() == [Piece("lost", "B1", 2, b""), Piece("lost", "A1", 1, b"")]


def test_parse_env():
    assert parse_env("tok:123:/dev/pts/4") == ("tok", 123, "/dev/pts/4")
    for bad in ("", "tok", "tok:x:/dev/pts/1", ":1:/dev/pts/1", "tok:1:"):
        assert parse_env(bad) is None

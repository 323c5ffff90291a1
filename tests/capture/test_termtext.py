"""The text of recorded output (capture/termtext.py): pure, so tested directly."""

from __future__ import annotations

import random

import pytest

from rewind_daemon.capture import termtext
from rewind_daemon.capture.termtext import is_plain, text_of
from rewind_daemon.store import plain_text

CASES = [
    ("plain lines, CR LF as a terminal gets them", b"one\r\ntwo\r\n", "", "one\ntwo\n"),
    ("no newline at the end", b"prompt? ", "", "prompt? "),
    (
        "colours (SGR)",
        b"\x1b[1;31mred\x1b[0m and \x1b[38;5;42mgreen\x1b[m\r\n",
        "",
        "red and green\n",
    ),
    ("cursor moves and erases", b"\x1b[2J\x1b[Hhome\x1b[1A\x1b[10C!\r\n", "", "home!\n"),
    ("OSC title ended by BEL", b"\x1b]0;my title\x07text\r\n", "", "text\n"),
    ("OSC hyperlink ended by ST", b"\x1b]8;;http://x\x1b\\link\x1b]8;;\x1b\\\r\n", "", "link\n"),
    ("DCS string", b"a\x1bPq#0;2;0;0;0#0~~\x1b\\b\r\n", "", "ab\n"),
    ("charset designation", b"\x1b(0lqk\x1b(B done\r\n", "", "lqk done\n"),
    ("keypad mode escapes", b"\x1b=\x1b>x\r\n", "", "x\n"),
    ("a progress bar overwritten with CR", b"  0%\r 50%\r100%\r\n", "", "100%\n"),
    ("CR then a shorter text keeps the rest", b"downloading\rdone\r\n", "", "doneloading\n"),
    ("CR then erase to the end of line", b"downloading\r\x1b[Kdone\r\n", "", "done\n"),
    ("backspaces overwrite", b"abc\b\bX\r\n", "", "aXc\n"),
    ("backspace at the start of a line", b"\bx\r\n", "", "x\n"),
    ("bells and other controls go", b"ding\x07\x00\x0e!\r\n", "", "ding!\n"),
    ("tabs stay", b"a\tb\r\n", "", "a\tb\n"),
    (
        "invalid UTF-8 becomes U+FFFD",
        b"caf\xc3\xa9 \xff\xfe ok\r\n",
        "",
        "caf\u00e9 \ufffd\ufffd ok\n",
    ),
    (
        "alternate screen left out, with a note",
        b"before\r\n\x1b[?1049h\x1b[H~\r\n~ vim's screen\x1b[?1049lafter\r\n",
        "vim notes.txt",
        "before\n[full-screen: vim]\nafter\n",
    ),
    (
        "the program is the command's first word, past assignments and its path",
        b"\x1b[?1049hx\x1b[?1049l",
        "TERM=xterm /usr/bin/less -R f",
        "[full-screen: less]\n",
    ),
    (
        "the older 47 and 1047 modes",
        b"a\x1b[?47hzz\x1b[?47lb\x1b[?1047hyy\x1b[?1047l",
        "top",
        "a\n[full-screen: top]\nb\n[full-screen: top]\n",
    ),
    ("a full-screen program cut off", b"x\r\n\x1b[?1049hdrawn", "htop", "x\n[full-screen: htop]\n"),
    ("an OSC never ended runs to the end", b"ok\r\n\x1b]0;cut", "", "ok\n"),
    (
        "an erase after a string cuts it off, and the text after it is kept",
        b"\x1b]0;title\x1b[Kvisible\r\n",
        "",
        "visible\n",
    ),
    (
        "a SUB byte inside the alternate screen's escape is removed first",
        b"a\r\n\x1b[?10\x1a49hpassword: hunter2",
        "vim",
        "a\n[full-screen: vim]\n",
    ),
    (
        "the note on a line of its own, controls before it aside",
        b"a\r\n\x07\x1b[?1049hx\x1b[?1049l",
        "top",
        "a\n[full-screen: top]\n",
    ),
]


@pytest.fixture(params=["c", "python"])
def way(request):
    """text_of as the C module makes it, and as the Python code does."""
    if request.param == "c":
        c = request.getfixturevalue("c_module")
        return lambda raw, command="": c.text(raw, termtext._program(command))
    return lambda raw, command="": termtext._text_py(raw, command)


@pytest.mark.parametrize("name, raw, command, text", CASES, ids=[c[0] for c in CASES])
def test_text_of(name, raw, command, text, way):
    assert way(raw, command) == text
    assert text_of(raw, command) == text


def test_no_escape_or_control_survives_in_the_text(way):
    noisy = bytes(range(256)) * 50 + b"\x1b[?1049h\x1b[?1049l" + bytes(range(32)) * 20
    text = way(noisy, "x")
    assert not any(c in text for c in "\x1b\r\x08\x07\x00")


def test_a_long_build_log_gives_each_line_its_last_state(way):
    # A build log: colours on every line, a progress bar now and then. (How
    # fast: bench/output_ingest.py, "text extraction alone".)
    line = b"\x1b[32m[ok]\x1b[0m compiling module_%d.c with -O2 -Wall -Wextra\r\n"
    bar = b" 10%\r 20%\r 30%\r\x1b[K100%\r\n"
    raw = b"".join((line % i) + (bar if i % 50 == 0 else b"") for i in range(200_000))
    text = way(raw, "make")
    assert text.count("\n") == 200_000 + 200_000 // 50
    assert "[ok] compiling module_199999.c" in text
    assert text.count("100%\n") == 200_000 // 50 and "30%" not in text


@pytest.mark.parametrize(
    "raw, plain",
    [
        (b"a\r\nb\n", True),
        ("caf\u00e9\tok\r\n".encode(), True),
        (b"\xff\xfe\r\n", True),
        (b"a\x1b[1mb", False),
        (b"ab\bc", False),
        (b"a\rb\r\n", False),
        (b"a\x07b", False),
    ],
)
def test_plain_output_is_told_apart(raw, plain, way):
    assert is_plain(raw) is plain
    if plain:  # its text is its characters, line ends aside
        assert way(raw) == raw.decode("utf-8", "replace").replace("\r\n", "\n")


def test_the_text_made_from_the_bytes_is_the_text_made_from_the_characters(monkeypatch):
    # UTF-8 output is made text on bytes (faster); what it gives must be what
    # the characters' way gives, escapes, controls and line ends mixed in any way.
    rng = random.Random(14)
    pieces = [b"a", b"\xc3\xa9", b"\xe2\x96\x88", b"\r", b"\n", b"\r\n", b"\b", b"\t", b"\x1a",
              b"\x1b[1;31m", b"\x1b[K", b"\x1b[0K", b"\x1b]0;t\xc3\xa9\x07", b"\x1b]8;;x\x1b\\",
              b"\x1bP\xe2\x96\x88", b"\x1b(B", b"\x1b=", b"\x1b", b"\x00", b"\x7f", b"\x1b[",
              b"\x1b]", b"word "]  # fmt: skip
    samples = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 60))) for _ in range(3000)]
    fast = [termtext._text_py(raw, "") for raw in samples]

    def refuse(raw: bytes) -> str:
        raise UnicodeDecodeError("utf-8", raw, 0, 1, "the characters' way")

    monkeypatch.setattr(termtext, "_plain_text", refuse)
    for raw, text in zip(samples, fast):
        assert text == termtext._text_py(raw, ""), raw


def test_the_text_of_plain_output_is_its_bytes_decoded():
    # The store keeps the text of plain output as the bytes' own and reads it
    # back with store.plain_text: that must be text_of's, whatever the bytes.
    rng = random.Random(7)
    pieces = [b"a", b"word ", b"\xc3\xa9", b"\xe2\x96\x88", b"\n", b"\r\n", b"\t", b"\xff",
              b"\xe2\x96", b"\xc3", b"\x80", b"\xef\xbf\xbd", b"\xed\xa0\x80", b"\xc2\x85",
              b"\xc2\x9b[31m", b"{}", b"\\"]  # fmt: skip
    samples = [b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 80))) for _ in range(3000)]
    assert all(is_plain(raw) for raw in samples)
    for raw in samples:
        assert plain_text(raw) == text_of(raw), raw


def test_lines_overwritten_by_crs_alone_are_a_terminals():
    # Lines of CRs alone (progress bars) are made by slices: the same as a
    # terminal's cells written one character at a time.
    def cells(line: str) -> str:
        out: list[str] = []
        col = 0
        for ch in line:
            if ch == "\r":
                col = 0
            else:
                out[col : col + 1] = [ch]
                col += 1
        return "".join(out)

    rng = random.Random(3)
    pieces = ["\r", "a", "bc", "défg", "█" * 3, " ", "100%", "\r\r", "x" * 40]
    for _ in range(3000):
        line = "".join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
        assert termtext._overwrite(line) == cells(line), line
        # What was overwritten: every piece between CRs but the last written.
        lost = termtext._overwrite_parts(line)[1]
        assert lost == [p for p in line.split("\r") if p][:-1], line
        assert termtext._overwrite_parts(line + "\b")[1] == lost, line  # (the cells' way)

"""The lines of output its text does not show as written (termtext.hidden_spans,
the C module _hidden and its Python reference), and the one redaction pass over
the text and those lines that make_output makes first."""

from __future__ import annotations

import os
import random

import pytest

from rewind_daemon.capture import outputs, termtext
from rewind_daemon.capture.outputs import make_output
from rewind_daemon.redact import Redactor


def needs_c() -> None:
    if not termtext.has_fast_spans():
        if os.environ.get("RW_TEST_NEEDS_C"):  # (scripts/test: the module must be built)
            pytest.fail("rewind_daemon.capture._hidden was not built")
        pytest.skip("the C module is not built here")


def taken(raw: bytes, context: int = 0) -> list[bytes]:
    return [raw[a:z] for a, z in termtext.hidden_spans(raw, context)]


@pytest.mark.parametrize(
    "raw,lines",
    [
        (b"\x1b[32mok\x1b[0m done\r\nplain\r\n", []),  # colours beside spaces: as the text
        (b"ok\r\n40%\r50%\r\nnext\n", [b"40%\r50%\r"]),  # a CR not before LF
        (b"a\nab\x08c\nz", [b"ab\x08c"]),  # a backspace
        (b"x\ngh\x1b[0mp_abc\ny", [b"gh\x1b[0mp_abc"]),  # an escape joining two words
        (b"x\npass\x00word\ny", [b"pass\x00word"]),  # a control joining them
        (b"caf\xc3\xa9\x1b[1m\xc3\xa9\n", [b"caf\xc3\xa9\x1b[1m\xc3\xa9"]),  # not ASCII: words
        (b"x\n\x1b]8;;https://u:p@h/\x1b\\link\x1b]8;;\x1b\\\ny", [b"\x1b]8;;https://u:p@h/\x1b\\link\x1b]8;;\x1b\\"]),
        # A string escape's lines, up to its end (lines next to each other: one run).
        (b"\x1b]52;c;one\ntwo\x07\nthree\n", [b"\x1b]52;c;one\ntwo\x07"]),
        # The alternate screen: the lines switching and those between.
        (b"a\n\x1b[?1049hvim\nline\x1b[?1049l\nb\n", [b"\x1b[?1049hvim\nline\x1b[?1049l"]),
        (b"\x1b[?25h\x1b[?1h cursor and keypad\n", []),  # other modes: not the screen
        # An escape's last letter, which the text drops, before a word.
        (b"x\nkey: \x1bAKIA0123456789ABCDEF\n\x1b(B\x1b[m plain\n",
         [b"key: \x1bAKIA0123456789ABCDEF"]),
    ],
)  # fmt: skip
def test_the_lines_taken(raw, lines):
    needs_c()
    for spans in (termtext.hidden_spans, termtext._spans_py):
        got = [raw[a:z] for a, z in spans(raw, 0)]
        assert got == lines


def test_context_lines_come_with_each_and_runs_join():
    raw = b"\n".join(b"line%d" % i for i in range(12)) + b"\n"
    raw = raw.replace(b"line3", b"li\x08ne3").replace(b"line7", b"li\rne7")
    assert taken(raw, 1) == [b"line2\nli\x08ne3\nline4", b"line6\nli\rne7\nline8"]
    assert taken(raw, 2) == [b"line1\nline2\nli\x08ne3\nline4\nline5\nline6\nli\rne7\nline8\nline9"]
    assert taken(raw.replace(b"line0", b"l\x08ine0"), 0)[0] == b"l\x08ine0"  # (the first line)


ATOMS = [
    b"a", b"Z", b"_", b"9", b" ", b"\n", b"\r", b"\r\n", b"\x08", b"\t", b"\x00", b"\x07",
    b"\x1b", b"\x1b[", b"\x1b[1m", b"\x1b[0m", b"\x1b[?1049h", b"\x1b[?1049l", b"\x1b[?47;1h",
    b"\x1b[?1047l", b"\x1b[?25h", b"\x1b]0;t", b"\x1b]8;;u\x1b\\", b"\x1bP", b"\x1b\\", b"\x1b(B",
    b"\x1b(", b"\xc3\xa9", b"\xff", b"\x7f", b"-", b";", b"?", b"[", b"\x1b[12;3H", b"\x1b[K",
    b"\x1b[ q", b"\x1b_x", b"\x1b^", b"\x1bX",
]  # fmt: skip


def test_the_c_module_takes_what_the_python_reference_takes():
    needs_c()
    rng = random.Random(14)
    for _ in range(20000):
        raw = b"".join(rng.choice(ATOMS) for _ in range(rng.randint(0, 60)))
        context = rng.choice((0, 1, 2, 3))
        assert termtext.hidden_spans(raw, context) == termtext._spans_py(raw, context), raw
    # Runs of ordinary bytes longer than a word of eight (read eight at a time in
    # C), with tabs in them (read again a byte at a time).
    runs = [b"abcdefghijklmnop", b"building module_12.c", b"col\tcol\t\tcol", b"\xe2\x96\x88" * 5]
    for _ in range(5000):
        raw = b"".join(rng.choice(ATOMS + runs * 8) for _ in range(rng.randint(0, 40)))
        assert termtext.hidden_spans(raw, 1) == termtext._spans_py(raw, 1), raw


KEYS = [
    "password: ", "DB_PASSWORD=", "--token ", "api_key=", '"secret": "',
    "Authorization: Bearer ", "https://bob:", "-----BEGIN RSA PRIVATE KEY-----\r\n",
]  # fmt: skip
NOISE = [
    b"\x1b[31m", b"\x1b[0m", b"\r", b"\x08", b"\x1b]0;t\x07", b"\x1b]8;;http://x\x1b\\",
    b"\x1b[K", b"\t", b"\x1a", b"\xff", b"\xe2\x82", b"\x1b[?1049h", b"\x1b[?1049l",
    b"\x1b[5;3H", b"\x1b[2C", b"\r\n", b" ", b"ok ", b"\x1b(B", b"\x00", b"\x1b",
]  # fmt: skip


def _hostile(rng: random.Random) -> tuple[bytes, list[str]]:
    parts, secrets = [], []
    for _ in range(rng.randint(1, 4)):
        key = rng.choice(KEYS)
        value = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789")
                        for _ in range(14))  # fmt: skip
        secrets.append(value)
        line = bytearray((key + value + ("@h/x" if key.startswith("https") else "")).encode())
        for _ in range(rng.randint(0, 3)):
            at = rng.randint(0, len(line))
            line[at:at] = rng.choice(NOISE)
        parts += [bytes(line), rng.choice([b"\r\n", b"\r", b" ", b"\x1b[0m\r\n", b"\rdone \r\n"])]
    body = b"\x1b[32mbuild ok\x1b[0m\r\n" * rng.choice((0, 600))  # (short and long texts)
    return body + b"".join(parts) + body, secrets


def _kept(raw: bytes, text: str, secrets: list[str]) -> set[tuple[str, str]]:
    where = (("raw", raw.decode("utf-8", "surrogateescape")), ("text", text))
    return {(w, s) for s in secrets for w, x in where if s in x or s[:8] in x or s[-8:] in x}


def test_one_pass_first_keeps_no_secret_both_passes_mask(monkeypatch):
    # Output written to hide secrets (escapes, CRs, backspaces, the alternate
    # screen, escape strings in and around them): what make_output keeps must
    # be kept by the bytes-then-text search too (the way without the C module).
    needs_c()
    rng = random.Random(7)
    r = Redactor()
    worse = []
    for _ in range(1500):
        raw, secrets = _hostile(rng)
        out, _ = make_output(raw, "x", r)
        with monkeypatch.context() as m:
            m.setattr(outputs, "has_fast_spans", lambda: False)
            both, _ = make_output(raw, "x", r)
        extra = _kept(out.raw, out.text, secrets) - _kept(both.raw, both.text, secrets)
        # (the same secret kept in the text by both, and so in the bytes that it stands for)
        if extra and not {s for _, s in extra} <= {s for w, s in _kept(b"", both.text, secrets)}:
            worse.append((raw, sorted(extra)))
    assert not worse, worse[:3]


def test_without_the_c_module_the_bytes_and_the_text_are_both_searched(monkeypatch):
    monkeypatch.setattr(outputs, "has_fast_spans", lambda: False)
    raw = b"\x1b[32mDB_PASSWORD=hunter2xyz\x1b[0m\rconnected  \r\n" + b"\x1b[1mok\x1b[0m\r\n" * 900
    out, n = make_output(raw, "x", Redactor())
    assert n == 1 and b"hunter2" not in out.raw and "hunter2" not in out.text


def test_only_the_lines_around_a_secret_are_searched_again():
    # A long coloured log with a token printed twice, far apart, split by a
    # colour the second time (the rules miss it in the bytes there): the lines
    # around each are searched again, the rest stored as it came.
    needs_c()
    token = "ghp_" + "A1b2C3d4E5" * 3 + "F6G7h8"
    log = [b"\x1b[32mstep %d ok\x1b[0m" % i for i in range(3000)]
    log[700] = b"using " + token.encode()
    log[2500] = b"again " + token[:20].encode() + b"\x1b[1m" + token[20:].encode()
    raw = b"\r\n".join(log) + b"\r\n"
    out, n = make_output(raw, "deploy", Redactor())
    assert n == 2 and token[:12].encode() not in out.raw and token[:12] not in out.text
    kept = out.raw.split(b"\r\n")
    assert kept[:690] == log[:690] and kept[710:2490] == log[710:2490]  # as printed
    assert out.text.splitlines()[2500] == "again <redacted>"
    assert out.text == termtext.text_of(out.raw, "deploy")
    # On the alternate screen (the text's lines are not the bytes'): all of it.
    full = raw + b"\x1b[?1049hvim\x1b[?1049l"
    out, n = make_output(full, "vim", Redactor())
    assert n == 2 and token[:12].encode() not in out.raw


PEM_BODY = [b"MIIEow%02dAIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw" % i
            for i in range(10)]  # fmt: skip


@pytest.mark.parametrize(
    "raw,secret",
    [
        # Controls a rule takes for a space, which the text drops.
        (b"password:\x1fhunter2xyz\n", b"hunter2xyz"),
        (b"x\x0b--password hunter2xyz\n", b"hunter2xyz"),
        (b"mysql x\x0b-phunter2xyz\n", b"hunter2xyz"),
        # An escape between a token and the punctuation a lookaround stands on.
        (b"created s.Oi1lRMJ2XrJkhKjUbJjNXoXz\x1b[0m/\n", b"Oi1lRMJ2XrJkhKjU"),
        (b".\x01https://bob:hunter2xyz@host/\n", b"hunter2xyz"),
        # A key block whose BEGIN line a CR overwrote: all of its body.
        (b"-----BEGIN RSA PRIVATE KEY-----\r" + b" " * 40 + b"\r\n"
         + b"\r\n".join(PEM_BODY) + b"\r\n-----END RSA PRIVATE KEY-----\r\n", PEM_BODY[7]),
    ],
)  # fmt: skip
def test_what_the_rules_find_in_the_bytes_the_first_pass_finds(raw, secret):
    # Each was stored whole by a first pass that missed it (a review's cases).
    needs_c()
    body = b"\x1b[32mbuild ok\x1b[0m\r\n" * 300
    out, n = make_output(body + raw + body, "x", Redactor())
    assert n >= 1 and secret not in out.raw and secret.decode() not in out.text


def test_secrets_in_many_overwritten_lines_are_placed_in_one_search_each():
    # 64 secrets, each on a line a CR overwrote, among 5,000 such lines: each
    # secret found once in what the first pass read, not in every line.
    needs_c()
    lines = [b"password: Pw%08dx\rok" % (i % 64) if i % 6 == 0 else b"l\ry" for i in range(5000)]
    out, n = make_output(b"\n".join(lines) + b"\n", "x", Redactor())
    assert n >= 64 and b"Pw0000" not in out.raw and "Pw0000" not in out.text


PLAIN_ATOMS = [
    b"a", b" ", b"\t", b"\n", b"\r", b"\r\n", b"\r\r\n", b"\x00", b"\x08", b"\x0b", b"\x0c",
    b"\x0e", b"\x1a", b"\x1b", b"\x1f", b"\x7f", b"\x80", b"\xff", b"\xc3\xa9", b" ",
    b"0123456", b"~", b"\x20", b"\x9f",
]  # fmt: skip


def test_is_plain_in_c_answers_as_the_python_reference():
    # One pass in C, eight bytes at a time where none can stop it: each byte
    # value at each place of a word, a CR at the end of a word and its LF in the
    # next, a CR ending the output, and long outputs (read without the GIL).
    needs_c()
    rng = random.Random(21)
    samples = [bytes([c]) * k + b"x" * j for c in range(256) for k in (1, 2) for j in (0, 7)]
    for at in range(20):
        for bad in (b"\r", b"\x1b", b"\x7f", b"\x00", b"\x1f", b"\r\n", b"\t", b"\xff"):
            samples += [b"y" * at + bad + b"z" * 9, b"y" * at + bad]
    samples += [rng.randbytes(rng.randint(0, 40)) for _ in range(5000)]
    # (mostly plain: one byte in 40 that may not be)
    weights = [40 if atom.strip(bytes(range(32, 127)) + b"\t\n\x80\xff\xc3\xa9\x9f") == b""
               or atom == b"\r\n" else 1 for atom in PLAIN_ATOMS]  # fmt: skip
    samples += [b"".join(rng.choices(PLAIN_ATOMS, weights, k=rng.randint(0, 50)))
                for _ in range(20000)]  # fmt: skip
    line = b'{"level":"info","msg":"caf\xc3\xa9 ok"}\r\n'
    for tail in (b"", b"\r", b"\x1b[0m", b"\r\r\n", b"\x7f\n", b"\n"):
        samples += [line * 5000 + tail, tail + line * 5000, line * 2500 + tail + line * 2500]
    plain = [termtext.is_plain(raw) for raw in samples]
    assert plain == [termtext._is_plain_py(raw) for raw in samples]
    assert 0.2 < sum(plain) / len(plain) < 0.8  # (both answers well represented)


def test_a_switch_to_the_alternate_screen_split_by_a_sub_does_not_misplace_a_secret():
    # The text drops a SUB before it reads escapes: `ESC [ ? 1049 SUB h` is a
    # switch, whose note adds lines to the text above the secret, while an
    # escape string below it takes as many out. Their counts alike, the lines
    # were taken for the bytes' and the secret's region searched was others'.
    needs_c()
    token = "ghp_" + "A1b2C3d4E5f6G7h8J9" * 2
    body = b"\x1b[32mok\x1b[0m\r\n" * 50
    switches = b"x\x1b[?1049\x1ah\x1b[?1049\x1al" * 3
    raw = body + switches + body + b"token " + token.encode() + b"\r\n" + body
    raw += b"\x1b]0;t" + b"\n" * 6 + b"\x07" + body
    text = termtext.text_of(raw, "x")
    assert text.count("\n") == raw.count(b"\n") and "[full-screen: x]" in text
    assert not termtext.same_lines(raw, text)
    out, n = make_output(raw, "x", Redactor())
    assert n == 1 and token[:12].encode() not in out.raw and token[:12] not in out.text


SECRET_LINES = [
    "password: {v}", "export GITHUB_TOKEN=ghp_{v}{v}{v}abcdef", "DATABASE_URL=postgres://u:{v}@db/x",
    '{{"api_key": "{v}"}}', "--db-password {v}", "Authorization: Bearer ey{v}{v}",
    # (in a title: the rules over the bytes take the string's end with the value)
    "\x1b]0;password: {v}\x07", "\x1b]2;--db-password {v}\x1b\\ set",
    "x\x1b]0;pw\x07 password: {v}",
]  # fmt: skip
LINE_NOISE = [
    b"\x1b[31m", b"\x1b[0m", b"\r", b"\x08", b"\x1b]0;", b"\x1b]8;;http://x\x1b\\", b"\x07",
    b"\x1b\\", b"\x1b[K", b"\x1a", b"\xff", b"\xe2\x82", b"\x1b[?1049h", b"\x1b[?1049l",
    b"\x1b[?1049\x1ah", b"\x1b[?47\x1al", b"\x1b[2C", b"\x1b(B", b"\x00", b"\x1b", b"\x1b[",
    b"\x1bP", b"\x1b_", b" ok ", b"\t", b"\r\r", b"\xc3\xa9",
]  # fmt: skip


def _with_secrets(rng: random.Random) -> bytes:
    lines = []
    for _ in range(rng.randint(1, 6)):
        lines += [b"\x1b[32mbuild %d ok\x1b[0m" % i for i in range(rng.choice((1, 5, 12)))]
        value = "".join(rng.choice("ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnpqrstuvwxyz23456789")
                        for _ in range(12))  # fmt: skip
        line = bytearray(rng.choice(SECRET_LINES).format(v=value).encode())
        for _ in range(rng.choice((0, 1, 2, 3))):
            at = rng.choice((0, len(line), rng.randint(0, len(line))))
            line[at:at] = rng.choice(LINE_NOISE)
        lines.append(bytes(line))
    lines += [b"\x1b[1mdone\x1b[0m"] * rng.choice((0, 3, 8))
    ends = rng.choice([[b"\n"], [b"\r\n"], [b"\n", b"\r\n", b"\r\n\x1b[0m"]])
    raw = b"".join(line + rng.choice(ends) for line in lines)
    return raw[: len(raw) - rng.choice((0, 0, 1))]


def test_the_text_spliced_after_masking_is_the_text_of_the_masked_bytes(monkeypatch):
    # Where secrets are masked in some lines of the bytes, their text is made
    # again for those lines alone and put among the others' as the first pass
    # made them: it must be the text of the masked bytes whole, whatever the
    # lines hold (escape strings never ended or over lines, the alternate
    # screen, a SUB inside a switch to it, CRs, backspaces, bad UTF-8), and the
    # text of the whole is made where it might not be.
    needs_c()
    spliced = []
    splice = outputs._spliced

    def counted(*args):
        made = splice(*args)
        spliced.append(made is not None)
        return made

    monkeypatch.setattr(outputs, "_spliced", counted)
    rng = random.Random(33)
    r = Redactor()
    wrong = []
    for _ in range(4000):
        raw = _with_secrets(rng)
        out, _ = make_output(raw, "vim", r)
        if out.text != termtext.text_of(out.raw, "vim"):
            wrong.append(raw)
    assert not wrong, wrong[:3]
    assert len(spliced) > 1000 and 0.3 < sum(spliced) / len(spliced) < 0.95  # (both ways)


@pytest.mark.parametrize(
    "part,spliced",
    [
        (b"password: <redacted>\r", True),  # (its CR LF is the whole's)
        (b"\x1b[31mpassword: <redacted>\x1b[0m\x1b", True),
        (b"password: <redacted> \x08\x08ok", True),
        # A string the masking left open at the end of the part: it takes the LF
        # after it and the lines up to the next escape (also after an empty line).
        (b"ok\n\x1b]0;password: <redacted>", False),
        (b"ok\npassword \x1b]0;password: <redacted>", False),
        # Closed in it, but with an LF in it: not made apart (lines taken out).
        (b"\x1b]0;password: <redacted>\nok\x07 done", False),
        # The alternate screen: a note added, its lines left out.
        (b"\x1b[?1049hpassword: <redacted>", False),
        (b"\x1b[?1049\x1ahpassword: <redacted>\x1b[?1049l", False),
    ],
)  # fmt: skip
def test_a_part_is_spliced_only_where_its_text_is_the_wholes(part, spliced):
    # A region of whole lines (the two around line 3) put in a part: its text is
    # spliced among the other lines' only where that is the text of the whole.
    lines = [b"\x1b[32mline %d\x1b[0m" % i for i in range(8)]
    raw = b"\r\n".join(lines) + b"\r\n"
    a = raw.index(lines[2])
    z = raw.index(lines[3]) + len(lines[3]) + 1  # (its LF's place: the CR in the region)
    masked = raw[:a] + part + raw[z:]
    text = termtext.text_of(raw, "vim")
    lines_of = outputs._Lines(raw, text)
    got = outputs._spliced(raw, text, lines_of, [(a, z)], [part], "vim")
    whole = termtext.text_of(masked, "vim")
    assert got == (whole if spliced else None)
    # A region that is not whole lines is never spliced.
    assert outputs._spliced(raw, text, lines_of, [(a + 1, z)], [part], "vim") is None
    assert outputs._spliced(raw, text, lines_of, [(a, z - 1)], [part], "vim") is None


SWITCH_ATOMS = [
    b"\x1b", b"[", b"?", b"\x1a", b"1049", b"1047", b"47", b"4", b"7", b"10", b"49", b"1",
    b"0", b";", b"<", b"h", b"l", b" ", b"/", b"!", b"m", b"a", b"\n", b"\x1b[?", b"\x1b[",
]  # fmt: skip


def test_the_switch_to_the_alternate_screen_is_found_in_c_as_in_python():
    # The C scan (each `?`, SUBs skipped as the text drops them) answers as the
    # regex over the bytes with their SUBs removed, its reference.
    needs_c()
    rng = random.Random(49)

    def some(k: int) -> bytes:
        return b"".join(rng.choice(SWITCH_ATOMS) for _ in range(rng.randint(0, k)))

    samples = [some(24) for _ in range(20000)]
    # (near a switch: ESC [ ? with SUBs about, parameters, intermediates, a final)
    params = [b"1049", b"1047", b"47", b"4", b"7", b"1", b"0", b"9", b";", b"<", b"\x1a", b"?"]
    samples += [some(3) + rng.choice((b"\x1b[?", b"\x1b\x1a[?", b"\x1b[\x1a?"))
                + b"".join(rng.choices(params, k=rng.randint(0, 5)))
                + rng.choice((b"", b" ", b"\x1a")) + rng.choice((b"h", b"l", b"m", b""))
                + some(3) for _ in range(20000)]  # fmt: skip
    samples += [b"\x1b[32mok\x1b[0m\r\n" * 3000 + tail for tail in (b"", b"\x1b[?1049h")]
    found = [termtext.may_use_alternate_screen(raw) for raw in samples]
    assert found == [termtext._may_use_alternate_screen_py(raw) for raw in samples]
    assert 0.05 < sum(found) / len(found) < 0.95

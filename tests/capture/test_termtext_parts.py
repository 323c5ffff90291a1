"""What the text of recorded output does not show (termtext.text_parts), and the
C module that makes both (rewind_daemon/_termtext.c) against the Python
reference (termtext._parts): redaction masks the text and the hidden parts
instead of the bytes, so a piece missing from hidden would be a secret kept."""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

import pytest

from rewind_daemon.capture import termtext
from rewind_daemon.capture.termtext import text_of, text_parts

from .test_termtext import CASES


@pytest.fixture(params=["c", "python"])
def parts(request):
    """text_parts as the C module makes it, and as the Python reference does."""
    if request.param == "c":
        c = request.getfixturevalue("c_module")
        return lambda raw, command="": c.text_parts(raw, termtext._program(command))
    return lambda raw, command="": termtext._parts(raw, termtext._program(command), True)


HIDDEN = [
    (
        "an OSC 8 link's URL with a password",
        b"\x1b]8;;https://deploy:s3cr3t-pw@git.example.com/repo\x1b\\repo\x1b]8;;\x1b\\\r\n",
        "repo\n",
        "8;;https://deploy:s3cr3t-pw@git.example.com/repo\n8;;\n",
    ),
    (
        "an OSC 52 clipboard, ended by BEL, and a title",
        b"\x1b]0;build\x07copied\x1b]52;c;aHVudGVyMg==\x07\r\n",
        "copied\n",
        "0;build\n52;c;aHVudGVyMg==\n",
    ),
    (
        "DCS, SOS, PM and APC payloads, one never ended",
        b"a\x1bPq#0~\x1b\\b\x1bXsos\x1b\\c\x1b^pm\x07d\x1b_apc token=abc",
        "abcd",
        "q#0~\nsos\npm\napc token=abc\n",
    ),
    (
        "an overwritten progress line holding a token",
        b"fetching https://x/?token=ghp_abcdefghijklmnopqrstuv0123456789 12%\r\x1b[Kfetched\r\n",
        "fetched\n",
        "fetching https://x/?token=ghp_abcdefghijklmnopqrstuv0123456789 12%\n",
    ),
    (
        "a progress bar: what was overwritten, not what is shown",
        b"  0%\r 50%\r100%\r\n",
        "100%\n",
        "  0%\n 50%\n",
    ),
    (
        "a password typed on the alternate screen",
        b"$ \x1b[?1049h\x1b[2J\x1b[HPassword: \x1b[7mhunter2\x1b[0m\r\n\x1b[?1049l$ ",
        "$ \n[full-screen: vault]\n$ ",
        "Password: hunter2\n",
    ),
    (
        "a backspaced secret, erased",
        b"Password: hunter2\b\b\b\b\b\b\b\x1b[Kxxxxx\r\n",
        "Password: xxxxx\n",
        "Password: hunter2\n",
    ),
    (
        "a secret backspaced over and typed over",
        b"key=AKIA\b\b\b\bSECRETVALUE\r\n",
        "key=SECRETVALUE\n",
        "key=AKIA\n",
    ),
    ("plain output hides nothing", b"one\r\ntwo\r\n", "one\ntwo\n", ""),
    (
        "colours and cursor moves hide nothing",
        b"\x1b[1;31mred\x1b[0m \x1b[2K\x1b[10Cok\x1b(B\r\n",
        "red ok\n",
        "",
    ),
    ("a CR before LF hides nothing", b"a\r\r\nb\r\x07\n", "a\nb\n", ""),
]


@pytest.mark.parametrize("name, raw, text, hidden", HIDDEN, ids=[c[0] for c in HIDDEN])
def test_what_the_text_does_not_show_is_hidden(name, raw, text, hidden, parts):
    assert parts(raw, "vault read secret/x") == (text, hidden)
    assert text_parts(raw, "vault read secret/x") == (text, hidden)
    assert text_of(raw, "vault read secret/x") == text


@pytest.mark.parametrize("name, raw, command, text", CASES, ids=[c[0] for c in CASES])
def test_the_c_module_makes_what_python_makes_on_every_case(name, raw, command, text, c_module):
    program = termtext._program(command)
    assert c_module.text_parts(raw, program) == termtext._parts(raw, program, True)
    assert c_module.text(raw, program) == text


# Pieces of output of every kind: escapes whole, cut off, nested and never
# ended; CR, CR LF, BS, SUB, controls; the alternate screen on and off (and
# what only looks like it); UTF-8 valid, invalid and cut off.
PIECES = [
    b"a", b"word ", b"\xc3\xa9", b"\xe2\x96\x88", b"\xf0\x9f\x98\x80", b"\xff", b"\xe2\x96",
    b"\xc3", b"\x80", b"\xed\xa0\x80", b"\xf0\x9f\x98", b"\xe0\x80", b"\xf4\x90", b"\xc2\x9b",
    b"\r", b"\n", b"\r\n", b"\b", b"\b\b", b"\t", b"\x1a", b"\x00", b"\x07", b"\x7f", b"\x0e",
    b"\x1b", b"\x1b[", b"\x1b[1;31m", b"\x1b[K", b"\x1b[0K", b"\x1b[ K", b"\x1b[2K", b"\x1b[?",
    b"\x1b]", b"\x1bP", b"\x1bX", b"\x1b^", b"\x1b_", b"\x1b\\", b"\x1b(B", b"\x1b=", b"\x1b\x1b",
    b"\x1b]0;title\x07", b"\x1b]8;;http://u:pw@h\x1b\\", b"\x1b]52;c;aGk=\x07", b"\x1bPq#0~\x1b\\",
    b"\x1b]0;a\x1b]0;b\x07", b"\x1b]0;\r\nx\x08y\x07", b"\x1b[?1049h", b"\x1b[?1049l",
    b"\x1b[?47h", b"\x1b[?47l", b"\x1b[?1;1047h", b"\x1b[?1047;2l", b"\x1b[?11049h",
    b"\x1b[?1049 h", b"\x1b[?10\x1a49h", b"\x1b\x1a[?1049l", b"\x1b[\x1a0K", b"\x1b]0;t\x1a\x07",
    b"1049", b"47", b";", b"?", b"h", b"l", b"K", b"[", b"]", b"\\",
]  # fmt: skip
COMMANDS = ["", "vim notes.txt", "TERM=x /usr/bin/less -R", "a\bb", "\x1b[31mred", "\udcff", "é"]


def fuzz(seed: int, count: int, longest: int) -> list[tuple[bytes, str]]:
    rng = random.Random(seed)
    return [
        (
            b"".join(rng.choice(PIECES) for _ in range(rng.randint(0, longest))),
            rng.choice(COMMANDS),
        )
        for _ in range(count)
    ]


def test_the_c_module_makes_what_python_makes_on_20000_random_outputs(c_module):
    for raw, command in fuzz(14, 20_000, 40):
        program = termtext._program(command)
        made = termtext._parts(raw, program, True)
        assert c_module.text_parts(raw, program) == made, (raw, command)
        assert c_module.text(raw, program) == made[0], (raw, command)


def test_the_quicker_python_ways_make_what_the_reference_makes(monkeypatch):
    # Without the C module, text_of and text_parts take regexes over the whole
    # output where they can: the same as the reference, escape by escape.
    monkeypatch.setattr(termtext, "_c", None)
    for raw, command in fuzz(15, 20_000, 40):
        made = termtext._parts(raw, termtext._program(command), True)
        assert text_parts(raw, command) == made, (raw, command)
        assert text_of(raw, command) == made[0], (raw, command)


def test_each_byte_in_a_long_run_of_letters(c_module):
    # (The C module skips runs of printable ASCII 8 bytes at a time.)
    for byte in range(256):
        for at in range(17):
            raw = b"abcdefgh" * 2 + b"ijklmnopq"
            raw = raw[:at] + bytes((byte,)) + raw[at:]
            assert c_module.text_parts(raw, "x") == termtext._parts(raw, "x", True), raw


def test_invalid_utf8_is_replaced_as_python_replaces_it(c_module):
    # Every byte sequence of up to three bytes from the edges of UTF-8's ranges,
    # at the end (cut off) and before an ASCII byte.
    edges = [0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBF, 0xC0, 0xC1, 0xC2, 0xDF,
             0xE0, 0xE1, 0xEC, 0xED, 0xEE, 0xEF, 0xF0, 0xF1, 0xF3, 0xF4, 0xF5, 0xFF]  # fmt: skip
    for a in edges:
        for b in edges:
            for c in edges:
                for raw in (
                    bytes((a, b, c)),
                    bytes((a, b, c)) + b"x",
                    bytes((a, b, c, 0x80, 0x80)),
                ):
                    expected = termtext._CONTROLS.sub("", raw.decode("utf-8", "replace"))
                    assert c_module.text(raw, "") == expected, raw


def _runs(raw: bytes) -> list[str]:
    """The runs of characters of `raw` between its CRs, line ends, backspaces,
    erases and alternate screen switches, escapes and controls aside (the
    outputs `_property_output` makes: words of letters and digits)."""
    s = raw.decode().replace("\x1a", "")
    s = re.sub(r"\x1b\[\?1049[hl]|\x1b\[0?K", "\n", s)
    s = re.sub(r"\x1b[\]P_X^]([^\x07\x1b]*)(?:\x07|\x1b\\)", "\n\\1\n", s)
    s = re.sub(r"\x1b(?:\[[0-?]*[ -/]*[@-~]|\([B0]|[=>78])", "", s)
    s = re.sub(r"[\x00-\x07\x0b-\x0c\x0e-\x1f\x7f]", "", s)
    return [run for run in re.split(r"[\r\n\b]", s) if run]


def _property_output(rng: random.Random) -> bytes:
    """Output of words (each a secret) among everything that hides text, with
    whole escapes only (a cut-off one would eat the next word's first letter
    as its end, as a terminal does)."""
    out = []
    for _ in range(rng.randint(1, 30)):
        kind = rng.random()
        if kind < 0.45:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(5))
            out.append(word.encode())
        elif kind < 0.75:
            out.append(rng.choice([b"\r", b"\r", b"\n", b"\r\n", b"\b", b"\b\b\b", b"\x1b[K",
                                   b"\x1b[0K", b"\x1b[?1049h", b"\x1b[?1049l"]))  # fmt: skip
        elif kind < 0.9:  # escapes and controls between letters of one run
            out.append(rng.choice([b"\x1b[1;31m", b"\x1b[0m", b"\x1b[2C", b"\x1b(B", b"\x1b=",
                                   b"\x07", b"\x00", b"\x1a", b"\x1b[2K"]))  # fmt: skip
        else:
            word = "".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(6)).encode()
            string = rng.choice([b"\x1b]8;;https://u:%s@h\x1b\\", b"\x1b]52;c;%s\x07",
                                 b"\x1bP%s\x1b\\", b"\x1b_%s\x07", b"\x1b]0;%s\x07"])  # fmt: skip
            out.append(string % word)
    return b"".join(out)


def test_every_run_of_printed_characters_is_whole_in_the_text_or_hidden(parts):
    rng = random.Random(52)
    for _ in range(5000):
        raw = _property_output(rng)
        text, hidden = parts(raw, "vim")
        for run in _runs(raw):
            assert run in text or run in hidden, (raw, run, text, hidden)


def test_the_python_code_is_used_and_the_same_when_the_module_cannot_be_imported(c_module):
    samples = [raw for raw, _ in fuzz(7, 2000, 30)] + [case[1] for case in HIDDEN]
    code = (
        "import json, sys\n"
        "sys.modules['rewind_daemon._termtext'] = None  # (import fails: not built)\n"
        "from rewind_daemon import redact\n"
        "from rewind_daemon.capture import termtext\n"
        "assert termtext._c is None and redact._find_all is None\n"
        "samples = [bytes.fromhex(h) for h in json.load(sys.stdin)]\n"
        "json.dump([termtext.text_parts(raw, 'vim x') for raw in samples], sys.stdout)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        input=json.dumps([raw.hex() for raw in samples]),
        capture_output=True,
        text=True,
        check=True,
    )
    made = [tuple(pair) for pair in json.loads(proc.stdout)]
    assert made == [c_module.text_parts(raw, "vim") for raw in samples]


def test_the_scans_let_other_threads_run(c_module):
    # The daemon may use threads: the GIL is let go while the bytes are scanned.
    # (A thread holding it is made to let it go only after the switch interval,
    # here longer than a scan, and C code never is: another thread counts only
    # if the scan let it go.)
    raw = b"\x1b[32mok\x1b[0m line of a build log with some words\r\n" * 1_200_000
    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        for scan in (
            lambda: c_module.text(raw, "make"),
            lambda: c_module.text_parts(raw, "make"),
            lambda: c_module.scan_words(raw.decode(), [b"token", b"://"], b"abcdefghijk", 20),
        ):
            count, started, stop = [0], threading.Event(), threading.Event()

            def spin(count=count, started=started, stop=stop):
                started.set()
                while not stop.is_set():
                    count[0] += 1

            spinner = threading.Thread(target=spin)
            spinner.start()
            started.wait()
            during = []
            for _ in range(3):  # (a loaded machine may not run the other thread at once)
                before = count[0]
                scan()
                during.append(count[0] - before)
                if during[-1]:
                    break
            stop.set()
            spinner.join()
            assert during[-1] > 0, during
    finally:
        sys.setswitchinterval(interval)


def test_the_c_module_compiles_without_a_warning(tmp_path, c_module):
    source = Path(termtext.__file__).parent.parent / "_termtext.c"
    include = sysconfig.get_paths()["include"]
    cc = shutil.which("gcc") or shutil.which("cc")
    assert cc, "the C module was built, so a compiler is here"
    proc = subprocess.run(
        [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", f"-I{include}", "-c", str(source),
         "-o", str(tmp_path / "termtext.o")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 0 and proc.stderr == "", proc.stderr

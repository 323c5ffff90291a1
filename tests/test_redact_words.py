"""Redaction's search for all its rules' words at once in C (_termtext.find_words,
used by redact._Scan._find_words when the module is built): the same places as
looking for each word in turn, and the same redaction as google-re2's way and
the plain one."""

from __future__ import annotations

import random

import pytest

from rewind_daemon import redact
from rewind_daemon.redact import Redactor

from .test_redact import _long_texts


def _each_in_turn(text: bytes, words: list[bytes]) -> list[list[int]]:
    out = []
    for w in words:
        hits, at = [], text.find(w)
        while at >= 0:
            hits.append(at)
            at = text.find(w, at + 1)
        out.append(hits)
    return out


def test_the_words_are_where_looking_for_each_in_turn_finds_them(c_module):
    # Overlapping hits, words that begin others, words of one and two bytes.
    rng = random.Random(40)
    words = [b"a", b"ab", b"aba", b"abab", b"b", b"key", b"keykey", b"k", b"ke", b"://",
             b"pass", b"passw", b"passphrase", b"xox", b"-pass", b"\xff", b"\x00k"]  # fmt: skip
    bits = [b"a", b"b", b"k", b"e", b"y", b":", b"/", b"pass", b"w", b"x", b"o", b" ", b"-",
            b"\xff", b"\x00", b"phrase"]  # fmt: skip
    for _ in range(20_000):
        text = b"".join(rng.choice(bits) for _ in range(rng.randint(0, 40)))
        chosen = rng.sample(words, rng.randint(1, len(words)))
        assert c_module.find_words(text, chosen) == _each_in_turn(text, chosen), (text, chosen)
    long = b"".join(rng.choice(bits) for _ in range(200_000))
    assert c_module.find_words(long, words) == _each_in_turn(long, words)


@pytest.mark.parametrize("words", [[b""], ["key"], [b"key", None], 3])
def test_what_is_not_a_word_is_refused(words, c_module):
    with pytest.raises((ValueError, TypeError)):
        c_module.find_words(b"a key", words)


def test_the_scan_finds_each_word_where_it_is(c_module, monkeypatch):
    # Every word's hits as the plain search has them; `auth` (used only as a
    # JSON key) only where a quote follows it, escaped or not.
    texts = _long_texts(16, 40) + ['{"auth": 1, "x": "auth", \\"auth\\": 2} auth"\tAUTH"', ""]
    in_c = []
    for text in texts:
        scan = redact._Scan(text)
        assert scan._find_words()
        in_c.append(scan._found)
    monkeypatch.setattr(redact, "_find_all", None)
    monkeypatch.setattr(redact, "_word_set", False)
    for text, found in zip(texts, in_c):
        scan = redact._Scan(text)
        assert not scan._find_words()
        for word in redact._WORDS:
            scan.find(word)
            want = scan._found[word]
            if word == "auth":
                want = [(a, b) for a, b in want if scan.lowb.startswith((b'"', b'\\"'), b)]
            assert found[word] == want, (word, text[:200])


def test_redaction_is_the_same_in_c_with_google_re2_and_with_neither(c_module, monkeypatch):
    r = Redactor()
    texts = _long_texts(17, 60)
    texts.append('{"auth": "s3cr3t-v4lue", "svc": "auth"}\n' * 3000)
    in_c = [r.text(t) for t in texts]
    assert sum(n for _, n in in_c) > 200
    monkeypatch.setattr(redact, "_find_all", None)
    assert redact._words_set(), "google-re2 is a dependency: its way must be tested"
    with_re2 = [r.text(t) for t in texts]
    monkeypatch.setattr(redact, "_word_set", False)
    plain = [r.text(t) for t in texts]
    for text, a, b, c in zip(texts, in_c, with_re2, plain):
        assert a == b == c, text[-200:]

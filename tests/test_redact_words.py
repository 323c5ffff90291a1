"""Redaction's search for all its rules' words at once in C (_termtext.scan_words,
used by redact._Scan._find_words when the module is built: the text
lowercased, its words and its runs of token characters in one call): the
same places as looking for each word in turn, the same bytes and runs as
Python's, and the same redaction as google-re2's way and the plain one."""

from __future__ import annotations

import random
import re

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
    # Overlapping hits, words that begin others, words of one and two bytes;
    # a character not ASCII is `?` in the lowercased bytes the words are in.
    rng = random.Random(40)
    words = [b"a", b"ab", b"aba", b"abab", b"b", b"key", b"keykey", b"k", b"ke", b"://",
             b"pass", b"passw", b"passphrase", b"xox", b"-pass", b"?", b"\x00k"]  # fmt: skip
    bits = ["a", "B", "k", "e", "Y", ":", "/", "pass", "w", "x", "o", " ", "-", "\xff", "\x00",
            "phrase"]  # fmt: skip
    chars = redact._TOKEN_CHARS
    for _ in range(20_000):
        text = "".join(rng.choice(bits) for _ in range(rng.randint(0, 40)))
        chosen = rng.sample(words, rng.randint(1, len(words)))
        lowb, hits, _ = c_module.scan_words(text, chosen, chars, 20)
        assert hits == _each_in_turn(lowb, chosen), (text, chosen)
    long = "".join(rng.choice(bits) for _ in range(200_000))
    lowb, hits, _ = c_module.scan_words(long, words, chars, 20)
    assert hits == _each_in_turn(lowb, words)


@pytest.mark.parametrize("words", [[b""], ["key"], [b"key", None], 3])
def test_what_is_not_a_word_is_refused(words, c_module):
    with pytest.raises((ValueError, TypeError)):
        c_module.scan_words("a key", words, b"a", 1)


_JSON_KEY_END = re.compile(rb'\\?"[\t-\r\x1c-\x20:?]')


def test_the_scan_finds_each_word_where_it_is(c_module, monkeypatch):
    # Every word's hits as the plain search has them; `auth` (used only as a
    # JSON key) only where a quote follows it, escaped or not, and then a
    # space or a colon (or a character not ASCII: a space to \s).
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
            if word == "auth":  # (and before what can begin `\s*:`, as a byte of lowb)
                want = [(a, b) for a, b in want if _JSON_KEY_END.match(scan.lowb, b)]
            assert found[word] == want, (word, text[:200])


def test_redaction_is_the_same_in_c_with_google_re2_and_with_neither(c_module, monkeypatch):
    r = Redactor()
    texts = _long_texts(17, 60)
    texts.append('{"auth": "s3cr3t-v4lue", "svc": "auth"}\n' * 3000)
    # `auth` as a JSON key before each space \s takes (ASCII or not) and a colon.
    spaces = "\t\n\v\f\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2003\u2028\u3000"
    texts.append(
        "".join(f'{{"a": 1, "AUTH"{c}: "v4lue-{i}"}} \\"auth\\"{c}{c}:"w-{i}"\n' for i, c in
                enumerate(spaces * 200))
    )  # fmt: skip
    in_c = [r.text(t) for t in texts]
    assert sum(n for _, n in in_c) > 200
    monkeypatch.setattr(redact, "_find_all", None)
    assert redact._words_set(), "google-re2 is a dependency: its way must be tested"
    with_re2 = [r.text(t) for t in texts]
    monkeypatch.setattr(redact, "_word_set", False)
    plain = [r.text(t) for t in texts]
    for text, a, b, c in zip(texts, in_c, with_re2, plain):
        assert a == b == c, text[-200:]
    assert in_c[-1][1] == 2 * len(spaces) * 200  # (every one of them masked)


def _python_lowb(text: str) -> bytes:
    scan = redact._Scan(text)
    return scan.lowb  # (not found yet: made in Python)


def _python_runs(lowb: bytes, chars: bytes, run: int) -> list[int]:
    table = bytes(0x61 if c in chars else 0x2E for c in range(256))
    out, runs, at = [], lowb.translate(table), 0
    while True:
        at = runs.find(b"a" * run, at)
        if at < 0:
            return out
        end = runs.find(b".", at)
        end = len(runs) if end < 0 else end
        out += [at, end]
        at = end


def test_the_one_pass_is_python_s_lowercased_bytes_words_and_runs(c_module):
    # ASCII (eight bytes at a time and the rest), Latin-1, two- and four-byte
    # strings; the letters lowercased to ASCII ones (K, ſ, ı) and İ, whose
    # lowercase is two characters: a character a byte all the same.
    rng = random.Random(41)
    bits = ["a", "B", "Z", "@", "[", "`", "{", "0", "_", "-", ".", " ", "\x7f", "\x80", "é",
            "É", "\xff", "\u0100", "\u212a", "ſ", "ı", "\u0130", "\U0001f600", "\udc80",
            "KEY", "Token", "://", "AKIA", "ghp_", "abcdefghij", "-pass", "auth\""]  # fmt: skip
    words = redact._SEARCHED + [b"k", b"ab"]
    for _ in range(20_000):
        text = "".join(rng.choice(bits) for _ in range(rng.randint(0, 60)))
        run = rng.randint(1, 12)
        lowb, hits, runs = c_module.scan_words(text, words, redact._TOKEN_CHARS, run)
        want = _python_lowb(text)
        assert lowb == want and len(lowb) == len(text), text
        assert hits == _each_in_turn(lowb, words), text
        assert runs == _python_runs(lowb, redact._TOKEN_CHARS, run), (text, run)
    text = "".join(rng.choice(bits) for _ in range(200_000))
    lowb, hits, runs = c_module.scan_words(text, words, redact._TOKEN_CHARS, 20)
    assert lowb == _python_lowb(text)
    assert hits == _each_in_turn(lowb, words)
    assert runs == _python_runs(lowb, redact._TOKEN_CHARS, 20)


def test_a_character_is_a_byte_of_the_lowercased_text_whatever_the_text_holds():
    # İ lowercased is two characters: with K, ſ or ı in the text too, the
    # lowercased bytes were a character longer from it on. The four letters
    # not ASCII that Python's re, ignoring case, takes for ASCII ones are those.
    text = "\u0130 \u212a ſ ı TOKEN é"
    assert redact._Scan(text).lowb == b"i k s i token ?"
    chars = "abcdefghijklmnopqrstuvwxyz0123456789_-.:/"
    ascii_word = re.compile(r"(?i)[a-z0-9_\-.:/]")
    twins = [
        (chr(c), x) for c in range(128, 0x30000) if ascii_word.fullmatch(chr(c))
        for x in chars if re.fullmatch(f"(?i){re.escape(x)}", chr(c))
    ]  # fmt: skip
    assert sorted(twins) == sorted((chr(c), x) for c, x in redact._ASCII_TWINS.items())


@pytest.mark.parametrize(
    "args",
    [("a key", [b""], b"a", 1), ("a key", [b"k"], b"a", 0), (b"a key", [b"k"], b"a", 1),
     ("a key", [b"k"], "a", 1)],
)  # fmt: skip
def test_what_the_one_pass_cannot_take_is_refused(args, c_module):
    with pytest.raises((ValueError, TypeError)):
        c_module.scan_words(*args)


def _moved_one_by_one(hits, edits):
    kept, i, moved = [], 0, 0
    for start, end in hits:
        while i < len(edits) and edits[i][1] <= start:
            a, b, n = edits[i]
            moved += n - (b - a)
            i += 1
        if i < len(edits) and edits[i][0] < end:
            continue
        kept.append((start + moved, end + moved))
    return kept


def test_the_words_follow_the_masks_as_when_moved_one_by_one():
    rng = random.Random(42)
    for _ in range(20_000):
        starts = sorted(rng.randrange(200) for _ in range(rng.randint(0, 30)))
        hits = [(a, a + rng.randint(1, 12)) for a in starts]
        cuts = sorted(rng.sample(range(210), 2 * rng.randint(0, 5)))
        edits = [(a, b, rng.randint(0, 12)) for a, b in zip(cuts[::2], cuts[1::2])]
        want = _moved_one_by_one(hits, edits)
        assert redact._moved(hits, [a for a, _ in hits], edits) == want, (hits, edits)
        scan = redact._Scan("x" * 300)
        scan._found["w"] = hits
        assert scan.edited("y" * 300, edits)._found["w"] == want


def test_the_checked_hits_are_every_place_their_rule_may_match(c_module):
    # `://` and `curl` are most often no secret's (a URL without a user, curl
    # without -u): the C module tells which hits their rules may match at. It
    # may keep one where the rule does not match (a space not ASCII), never
    # drop one where it does.
    url = redact._CREDENTIALS
    curl = next(r.pattern for r in redact.TEXT_RULES if r.name == "curl-user")
    bits = ["curl", "CURL", " -u", " -U", "-u", " --user", " --proxy-user", "=", ";", "&", "|",
            "\n", "\r", " ", "\t", "\x1c", "\x85", "\xa0", "://", ":", "@", "/", "a", "b:c",
            "x@y", "\u2003", "K"]  # fmt: skip
    rng = random.Random(41)
    words = [b"://", b"curl", b"key"]
    kept = dropped = 0
    for _ in range(20_000):
        text = "".join(rng.choice(bits) for _ in range(rng.randint(0, 30)))
        lowb, hits, _, checked = c_module.scan_words(text, words, b"a", 20, b"uc")
        assert checked[2] == []  # (not checked: given as they are)
        for word, pattern, found, passed in zip(words, (url, re.compile(curl)), hits, checked):
            assert set(passed) <= set(found), (word, text)
            matched = {at for at in found if pattern.match(text, at)}
            assert matched <= set(passed), (word, text)
            kept += len(matched)
            dropped += len(found) - len(passed)
    assert kept > 500 and dropped > 5000  # (each way, many times)


def test_a_command_ended_only_before_a_mask_is_redacted_as_if_searched_whole(monkeypatch):
    # The checks hold for the text as scanned: where an earlier rule's mask took
    # away what ended curl's command (a `;` in a token), curl's -u after it is
    # found in the masked text, as searching all of it finds it.
    lines = [
        'curl -H "Authorization: Bearer abc;def" -u alice:pw1 https://example.com',
        "curl -H 'Authorization: Bearer a|b' https://x -u bob:pw2",
        "git clone https://ci:ghp_" + "a1B2" * 9 + "@github.com/x/y.git",
        "curl https://example.com; echo -u not-curl:s",
    ]
    text = "\n".join(f"step {n}: {lines[n % len(lines)]}" for n in range(4000)) + "\n"
    r = Redactor()
    fast = r.text(text)
    monkeypatch.setattr(redact, "LONG", 1 << 40)
    whole = r.text(text)
    assert fast == whole
    assert "pw1" not in fast[0] and "pw2" not in fast[0] and "not-curl:s" in fast[0]

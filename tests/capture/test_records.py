"""Spool framing and environment payloads."""

from __future__ import annotations

import os
import subprocess

from rewind_daemon.capture import records
from rewind_daemon.capture.records import Dropped, Record


def parse_all(buf: bytes, final: bool = False):
    return list(records.parse(buf, final=final))


def test_round_trip_of_every_record_type():
    buf = b"".join(
        [
            records.encode("S", "s1", "", "bash", "5.2", "10", "/dev/pts/1", "1.5", "/", "h", "u"),
            records.encode("B", "s1", "1", "2.0", "/tmp", "echo 'a\nb'"),
            records.encode("E", "s1", "1", "2.5", "0", "0", "/tmp", "list", "2", "A=1", "B=x=y"),
            records.encode("N", "s1", "deploy"),
            records.encode("X", "s1", "3.0"),
        ]
    )
    items = parse_all(buf)
    assert [i.type for i, _ in items] == ["S", "B", "E", "N", "X"]
    assert items[1][0].fields[4] == "echo 'a\nb'"
    assert items[-1][1] == len(buf)


def test_bytes_not_utf8_stay_exact_in_commands_directories_and_environments_only():
    buf = (
        records.MAGIC
        + b"\x00".join([b"E", b"s1", b"1", b"2.0", b"0", b"0", b"/tmp/\xff", b"list0"])
        + b"\x00RW_X=a\xff\xfeb\x00PATH=/bin"
        + records.END
        + records.MAGIC
        + b"\x00".join([b"B", b"s1", b"2", b"3.0", b"/\xfe", b"echo \xc3"])
        + records.END
        + records.MAGIC
        + b"\x00".join([b"N", b"s1", b"name\xff"])
        + records.END
    )
    (end, _), (begin, _), (name, _) = parse_all(buf)
    assert end.fields[5] == "/tmp/\udcff"
    assert records.parse_env(end.fields[6], end.fields[7:]) == {
        "RW_X": "a\udcff\udcfeb",
        "PATH": "/bin",
    }
    assert begin.fields[3:] == ["/\udcfe", "echo \udcc3"]
    assert name.fields[1] == "name\ufffd"  # (a label, never given back to a shell)


def test_incomplete_tail_waits_unless_final():
    rec = records.encode("B", "s1", "1", "2.0", "/", "ls")
    items = parse_all(rec + rec[:10])
    assert [type(i) for i, _ in items] == [Record]
    assert items[0][1] == len(rec)  # the partial record is not consumed
    final = parse_all(rec + rec[:10], final=True)
    assert isinstance(final[-1][0], Dropped) and final[-1][1] == len(rec) + 10


def test_truncated_record_followed_by_a_good_one_is_dropped_alone():
    good = records.encode("B", "s1", "2", "2.0", "/", "ls")
    buf = records.encode("B", "s1", "1", "2.0", "/", "ls")[:-8] + good
    items = parse_all(buf)
    assert isinstance(items[0][0], Dropped) and items[0][0].reason == "truncated record"
    assert items[1][0] == Record("B", ["s1", "2", "2.0", "/", "ls"])


def test_garbage_and_bad_records_are_dropped_and_parsing_resumes():
    good = records.encode("N", "s1", "x")
    buf = b"\xff\xfe garbage" + records.encode("Q", "?") + records.encode("B", "1") + good
    items = parse_all(buf)
    kinds = [type(i).__name__ for i, _ in items]
    assert kinds == ["Dropped", "Dropped", "Dropped", "Record"]
    assert items[-1][1] == len(buf)


def test_parse_declare_matches_real_bash_export():
    values = {
        "RW_PLAIN": "simple",
        "RW_SPACES": "a b  c",
        "RW_QUOTES": 'it\'s "quoted" $HOME `x` \\ back',
        "RW_NEWLINE": "line1\nline2\ndeclare -x FAKE=1",
        "RW_CONTROL": "tab\tbell\a esc\x1b end",
        "RW_UNICODE": "héllo ✓",
        "RW_EMPTY": "",
    }
    script = "".join(f"export {k}=$'{_ansi(v)}'\n" for k, v in values.items())
    script += "export RW_UNSET_BUT_EXPORTED\nexport -p\n"
    out = subprocess.run(["bash", "--norc", "-c", script], capture_output=True, text=True).stdout
    env = records.parse_declare(out)
    for k, v in values.items():
        assert env[k] == v, k
    assert "FAKE" not in env
    assert "RW_UNSET_BUT_EXPORTED" not in env


def _zsh_export(script: str, locale: str) -> str:
    env = {"PATH": os.environ["PATH"], "LC_ALL": locale}
    proc = subprocess.run(["zsh", "-f", "-c", script], env=env, capture_output=True, check=True)
    return proc.stdout.decode("utf-8", "surrogateescape")


def test_parse_zsh_export_matches_real_zsh_for_every_byte():
    # In the C locale zsh escapes every byte it cannot print (\C-X, \M-X...).
    # Each byte inside a value and at its end (before the closing quote),
    # then a variable after them all, which must not be swallowed.
    script = "".join(
        f"export RW_B{i}=$'x\\x{i:02x}y' RW_E{i}=$'x\\x{i:02x}'\n" for i in range(1, 256)
    )
    script += "export RW_ZZ=last; typeset -a rw_arr=(a 'b c'); export rw_arr\nexport\n"
    env = records.parse_zsh_export(_zsh_export(script, "C"))
    for i in range(1, 256):
        assert env[f"RW_B{i}"] == bytes([0x78, i, 0x79]).decode("utf-8", "surrogateescape"), i
        assert env[f"RW_E{i}"] == bytes([0x78, i]).decode("utf-8", "surrogateescape"), i
    assert env["RW_ZZ"] == "last"
    assert "rw_arr" not in env  # an exported array is not in the environment


def test_parse_zsh_export_matches_real_zsh_for_text():
    values = {
        "RW_PLAIN": "simple",
        "RW_EMPTY": "",
        "RW_QUOTES": 'it\'s "quoted" $HOME `x` \\ back \\',
        "RW_NEWLINE": "line1\nline2\nRW_FAKE=1\n",
        "RW_CONTROL": "tab\tbell\a esc\x1b del\x7f end",
        "RW_UNICODE": "héllo ✓ 日本語 😀",
        "RW_SEPARATOR": "a\u2028b\u00a0c",
        "RW_EQUALS": "a=b=c",
        "RW_DOLLAR_QUOTE": "$'not an escape'",
    }
    script = "".join(f"export {k}=$'{_ansi(v)}'\n" for k, v in values.items())
    script += "typeset -i RW_INT=7; export RW_INT\nexport\n"
    for locale in ("C.UTF-8", "C"):
        env = records.parse_zsh_export(_zsh_export(script, locale))
        for k, v in values.items():
            assert env[k] == v, (locale, k)
        assert env["RW_INT"] == "7"
        assert "RW_FAKE" not in env


def _ansi(value: str) -> str:
    return "".join(
        c if c.isalnum() or c in " .-_/" or ord(c) > 127 else f"\\x{ord(c):02x}" for c in value
    )


def test_history_command_from_bash_history_output():
    assert records.history_command("    7  echo hi\n") == "echo hi"
    assert records.history_command("  123* edited line\n") == "edited line"
    assert records.history_command("100000  big number\n") == "big number"
    assert records.history_command("    8   leading space\n") == " leading space"
    assert records.history_command("    9  for i in 1; do\necho $i\ndone\n") == (
        "for i in 1; do\necho $i\ndone"
    )


def test_every_field_is_checked_for_its_type_and_range():
    t = "1700000000.5"
    good = [
        records.encode("S", "s1", "", "zsh", "5.9", "4194304", "", "0", "/", "h", "u", "", "none"),
        records.encode("S", "s2", "s1", "bash", "5.2", "", "", t, "/", "h", "u", "3", "none"),
        records.encode("B", "s1", str(2**63 - 1), "1700000000,25", "/", "a locale's comma"),
        records.encode("B", "s1", "2", "1796234926.2963056564", "/", "zsh's ten decimals"),
        records.encode("E", "s1", "2", t, "-1", "0 1", "/", "none"),  # zsh: `return -1`
        records.encode("E", "s1", "3", t, "1000", "", "/", "none"),  # zsh: `return 1000`
        records.encode("E", "s1", "4", t, "", "", "/", "none"),
        records.encode("H", "s1", "5", t, "/", "    7  echo hi\n"),
        records.encode("X", "s1", "7258118399"),
    ]
    assert [type(i) for i, _ in parse_all(b"".join(good))] == [Record] * len(good)
    bad = {
        records.encode("B", "s1", str(2**63), t, "/", "x"): "not a number from 1 to 2^63-1",
        records.encode("B", "s1", "0", t, "/", "x"): "not a number from 1",
        records.encode("B", "s1", "\u0663", t, "/", "x"): "not a number from 1",
        records.encode("B", "s1", "1", "nan", "/", "x"): "is not seconds from 1970",
        records.encode("B", "s1", "1", "1e400", "/", "x"): "is not seconds from 1970",
        records.encode("B", "s1", "1", "7258118400", "/", "x"): "is not seconds from 1970",
        records.encode("B", "s1", "1", "-1", "/", "x"): "is not seconds from 1970",
        records.encode("B", "a/../b", "1", t, "/", "x"): "is not one rw makes",
        records.encode("B", "", "1", t, "/", "x"): "is not one rw makes",
        records.encode("E", "s1", "1", t, str(2**31), "", "/", "none"): "is not one a shell",
        records.encode("E", "s1", "1", t, "1", "", "/", "list", "9" * 5000): "bad environment",
        records.encode("E", "s1", "1", t, "1", "", "/", "list", "\u00b2", "A"): "bad environment",
        records.encode("S", "s1", "", "bash", "5", "0", "", t, "/", "h", "u"): "is not a process",
        records.encode("S", "s1", "", "bash", "5", "1", "", t, "/", "h", "u", "0", "none"): (
            "not a number from 1"
        ),
        records.encode("H", "s1", "1", t, "/", "echo not history"): "not a line of bash history",
        records.encode("A", "s1", "-1"): "not a number from 1",
    }
    after = records.encode("N", "s1", "still read")
    for rec, reason in bad.items():
        items = parse_all(rec + after)
        assert isinstance(items[0][0], Dropped) and reason in items[0][0].reason, (rec, items)
        assert items[1][0] == Record("N", ["s1", "still read"])


def test_an_oversized_record_does_not_take_the_records_after_it():
    good = records.encode("N", "s1", "after")
    big = records.MAGIC + b"B\x00" + b"x" * (records.MAX_RECORD + 1000)
    buf = big + good
    assert len(buf) < records.MAX_RECORD + 64 * 1024  # one chunk of the daemon's reads
    items = parse_all(buf)
    assert [type(i) for i, _ in items] == [Dropped, Dropped, Record]
    assert items[-1] == (Record("N", ["s1", "after"]), len(buf))


def test_a_record_wanting_more_fields_than_will_ever_come_does_not_hold_up_the_good_ones():
    # (Fuzz seed 2447334968: an R record with no fields, then garbage whose
    # fields read as its environment in "list" format with a count of a million:
    # its end was waited for, and every record after it, good ones too, with it.)
    sid = "170000000012345600001abcd"
    stalled = records.encode("R")
    wants_more = records.encode("H", "list", "1000067", "list", "/", "no history")
    good = [records.encode("N", sid, "first"), records.encode("X", sid, "1700000001.5")]
    buf = stalled + wants_more + b"".join(good)
    items = parse_all(buf)
    assert [i for i, _ in items if isinstance(i, Record)] == [
        Record("N", [sid, "first"]),
        Record("X", [sid, "1700000001.5"]),
    ]
    assert items[-1][1] == len(buf)
    # Without a good record after it, it may be one being written: waited for.
    assert parse_all(stalled + wants_more) == []
    assert parse_all(stalled + wants_more + good[0][:-1]) == []

"""rw export --format cast: shells recorded for real by `rw record`, exported as
asciicast v2 and played by the real asciinema 2.4 (the test extra installs it)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pexpect
import pytest

from ..conftest import BIN, RW, rw, rw_json, write_config

ASCIINEMA = str(BIN / "asciinema")


def raw_of(sid: str, step: int) -> bytes:
    """`rw show --raw` into a pipe: the bytes the step printed, exactly."""
    return subprocess.run(
        [RW, "show", sid, str(step), "--raw"], capture_output=True, check=True
    ).stdout


def export_cast(sid: str, path: Path, *args: str) -> tuple[dict, list[list]]:
    rw("export", sid, "--format", "cast", "-o", str(path), *args)
    lines = path.read_text().splitlines()
    return json.loads(lines[0]), [json.loads(line) for line in lines[1:]]


def asciinema_cat(path: Path) -> bytes:
    done = subprocess.run([ASCIINEMA, "cat", str(path)], capture_output=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout


def asciinema_play(path: Path, *args: str) -> str:
    """`asciinema play` on a terminal (a PTY): what it showed; it must end well."""
    child = pexpect.spawn(
        ASCIINEMA, ["play", *args, str(path)], encoding="utf-8", timeout=60,
        dimensions=(40, 200), env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/"},
    )  # fmt: skip
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0, child.before
    return child.before


COLOURS = r"printf '\033[1;32mgreen\033[0m caf\303\251 \342\234\223 \033[4munder\033[0m\n'"


@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_recorded_session_plays_in_asciinema_with_its_timing_and_resize(live, tmp_path, kind):
    sh = live(kind)
    sh.run(COLOURS)  # 1
    sh.run("echo before; sleep 0.4; echo after")  # 2
    sh.resize(30, 100)
    sh.run("stty size")  # 3
    sh.run("ls /nonexistent-rw-cast")  # 4: fails, on stderr
    sid = sh.finish()
    steps = rw_json("log", sid)
    cast = tmp_path / "s.cast"
    header, events = export_cast(sid, cast)
    assert header["version"] == 2
    assert (header["width"], header["height"]) == (200, 40)  # as the session started
    assert header["env"]["TERM"] == "dumb" and header["env"]["SHELL"].endswith("/" + kind)
    assert isinstance(header["timestamp"], int)
    assert header["title"] == f"rw session {sid}"
    times = [e[0] for e in events]
    assert times[0] == 0 and times == sorted(times)
    markers = [e[2] for e in events if e[1] == "m"]
    assert markers == [s["command"] for s in steps]
    assert [e[2] for e in events if e[1] == "r"] == ["100x30"]
    resized = next(e[0] for e in events if e[1] == "r")
    size_shown = next(e[0] for e in events if e[1] == "o" and "30 100" in e[2])
    assert resized <= size_shown
    # the real timing: "after" came 0.4 s after "before"
    before = next(e[0] for e in events if e[1] == "o" and "before" in e[2])
    after = next(e[0] for e in events if e[1] == "o" and "after" in e[2])
    assert after - before >= 0.35
    # asciinema cat prints exactly what the steps printed, colours and all
    assert asciinema_cat(cast) == b"".join(raw_of(sid, s["step"]) for s in steps)
    shown = asciinema_play(cast, "--idle-time-limit", "0.2", "--speed", "4")
    assert "\x1b[1;32mgreen\x1b[0m café ✓" in shown and "30 100" in shown
    assert "No such file or directory" in shown


def test_from_to_cut_the_cast_and_start_it_at_0(live, tmp_path):
    sh = live("bash")
    sh.run("echo one")  # 1
    sh.run("sleep 0.5")  # 2
    sh.run(COLOURS)  # 3
    sh.run("echo four")  # 4
    sid = sh.finish()
    cast = tmp_path / "cut.cast"
    header, events = export_cast(sid, cast, "--from", "3", "--to", "4")
    assert events[0] == [0.0, "m", COLOURS]
    assert [e[2] for e in events if e[1] == "m"] == [COLOURS, "echo four"]
    assert header["title"] == f"rw session {sid}, steps 3 to 4"
    assert asciinema_cat(cast) == raw_of(sid, 3) + raw_of(sid, 4)
    assert "four" in asciinema_play(cast)


def test_bytes_that_are_not_utf8_and_a_character_split_between_reads(live, tmp_path):
    sh = live("bash")
    sh.run(r"printf 'bad \377\376 bytes\n'")  # 1
    sh.run(r"printf 'split \342\234'; sleep 0.3; printf '\223 whole\n'")  # 2: read in two parts
    sid = sh.finish()
    cast = tmp_path / "bytes.cast"
    _, events = export_cast(sid, cast, "--to", "2")
    text = "".join(e[2] for e in events if e[1] == "o")
    assert text == "bad \ufffd\ufffd bytes\r\nsplit \u2713 whole\r\n"
    parts = [e for e in events if e[1] == "o" and ("split" in e[2] or "whole" in e[2])]
    assert len(parts) == 2 and parts[1][0] - parts[0][0] >= 0.25  # two events, their times
    assert all(line.isascii() for line in cast.read_text().splitlines())
    assert asciinema_cat(cast).decode() == text
    assert "split ✓ whole" in asciinema_play(cast, "-i", "0.1")


def test_a_session_without_recorded_output_is_refused_in_one_line(daemon, shells, tmp_path):
    sh = shells("bash")
    sh.run("echo not recorded")
    sid = sh.session_id()
    done = subprocess.run(
        [RW, "export", sid, "--format", "cast", "-o", str(tmp_path / "x.cast")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "rw record" in done.stderr
    assert "Traceback" not in done.stderr and not (tmp_path / "x.cast").exists()


def test_capped_and_redacted_outputs_are_cast_as_stored(live, rw_home, tmp_path):
    """The cast holds the stored bytes: a secret printed is masked, and of an
    output over the cap its first and last lines, in order."""
    write_config(rw_home, "[record]\nmax_step_output = 4096\n")
    rw("daemon", "stop")
    rw("daemon", "start")
    token = "ghp_" + "Zx9" * 12  # a GitHub token, as redact.py's rules know them
    sh = live("bash")
    sh.run(f"echo token {token} printed")  # 1
    sh.run("seq 1 5000")  # 2
    sh.run("seq 1 2000; sleep 0.6; seq 2001 4000")  # 3: its first and last lines kept
    sid = sh.finish()
    cast = tmp_path / "capped.cast"
    _, events = export_cast(sid, cast, "--to", "2")
    assert token not in cast.read_text()
    assert rw_json("show", sid, "2")["output_truncated"] is True
    printed = asciinema_cat(cast)
    assert printed == raw_of(sid, 1) + raw_of(sid, 2)
    assert printed.startswith(b"token ") and printed.endswith(b"4999\r\n5000\r\n")
    times = [e[0] for e in events]
    assert times == sorted(times)
    # the lines kept of step 3 are played when they were printed: the first
    # ones before the sleep, the last ones after it
    _, events = export_cast(sid, cast, "--from", "3", "--to", "3")
    lines, line = [], ""  # (the line, when its end was played)
    for when, kind, text in events:
        for char in text if kind == "o" else "":
            if char == "\n":
                lines.append((line.strip(), when))
                line = ""
            else:
                line += char
    numbers = [(int(x), when) for x, when in lines if x.isdigit()]
    first_half = max(when for n, when in numbers if n <= 2000)
    second_half = min(when for n, when in numbers if n > 2000)
    assert second_half - first_half >= 0.5 and first_half < 0.3


def test_a_replay_has_its_output_cast_at_its_steps_times(daemon, shells, tmp_path):
    """A replay records output without the times of its parts nor a terminal:
    each step's output comes at once, at the step's end, on 80x24."""
    sh = shells("bash")
    sh.run("rw name cast-src")
    sh.run("printf 'one\\n'")
    sh.run("sleep 0.3; printf 'two\\n'")
    replay = subprocess.run([RW, "replay", "cast-src", "--from", "2"], capture_output=True)
    assert replay.returncode == 0
    replayed = next(s["id"] for s in rw_json("sessions") if s["origin"] == "replay")
    cast = tmp_path / "replay.cast"
    header, events = export_cast(replayed, cast, "--from", "2")
    assert (header["width"], header["height"]) == (80, 24)
    assert [e[1:] for e in events] == [
        ["m", "printf 'one\\n'"], ["o", "one\n"],
        ["m", "sleep 0.3; printf 'two\\n'"], ["o", "two\n"],
    ]  # fmt: skip
    assert events[0][0] == 0 and events[3][0] - events[2][0] >= 0.25
    assert asciinema_cat(cast) == b"one\ntwo\n"

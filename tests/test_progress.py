"""Progress of long work on stderr: shown on a terminal (a real PTY), never on a pipe."""

from __future__ import annotations

import os
import re
import select
import shutil
import subprocess
import time

import pexpect
import pytest

from rewind_daemon.checkpoints.probes.dpkg import DpkgProbe
from rewind_daemon.progress import TerminalProgress

from .checkpoints.test_probes import (
    build_deb,
    needs_root_dpkg,
    rwtest_packages,  # noqa: F401 - a fixture
    sh,
)
from .conftest import RW, write_config

DRAW = re.compile(r"\r([^\r\x1b]*)\x1b\[K")


@pytest.fixture
def home(rw_home):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    return rw_home


@pytest.fixture
def big_tree(tmp_path):
    """20,000 small files: a first checkpoint of it takes about a second."""
    root = tmp_path / "big"
    for d in range(100):
        (root / f"d{d}").mkdir(parents=True)
        for i in range(200):
            (root / f"d{d}" / f"f{i}").write_text(f"{d} {i}\n" * 20)
    return root


def on_terminal(*args: str, timeout: float = 120) -> str:
    """Everything rw wrote to its terminal (stdout and stderr are the PTY)."""
    child = pexpect.spawn(RW, list(args), encoding="utf-8", timeout=timeout, dimensions=(24, 200))
    out = child.read()
    child.close()
    assert child.exitstatus == 0, out
    return out


def on_pipes(*args: str, home=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "RW_HOME": str(home)} if home is not None else None
    proc = subprocess.run([RW, *args], capture_output=True, text=True, timeout=120, env=env)
    assert proc.returncode == 0, proc.stderr
    return proc


def drawn(out: str) -> list[str]:
    return [m.group(1) for m in DRAW.finditer(out) if m.group(1)]


def test_first_checkpoint_and_a_large_restore_show_progress_on_a_terminal(home, big_tree, tmp_path):
    # On pipes, nothing but what was always printed.
    other = tmp_path / "other-home"
    write_config(other, "[daemon]\nautostart = false\n")
    start = time.monotonic()
    proc = on_pipes("checkpoint", "create", "--paths", str(big_tree), home=other)
    took = time.monotonic() - start
    assert proc.stdout == f"checkpoint 1: {big_tree} (20101 entries)\n"
    assert proc.stderr == ""
    for d in range(40):
        shutil.rmtree(big_tree / f"d{d}")
    proc = on_pipes("checkpoint", "restore", "1", "--yes", home=other)
    assert proc.stderr == "" and "\r" not in proc.stdout and "\x1b" not in proc.stdout
    assert proc.stdout.endswith("checkpoint 1 restored and verified\n")

    # The line is drawn after half a second of work: on a machine where the
    # tree takes less than a second and a half, it grows until it takes about that.
    if took < 1.5:
        extra = big_tree / "extra"
        extra.mkdir()
        for i in range(min(int(20101 * (1.5 / took - 1)), 200_000)):
            (extra / f"f{i}").write_text(f"{i}\n" * 20)
    entries = 1 + sum(1 for _ in big_tree.rglob("*"))

    # On a terminal, the same work says how far it is.
    out = on_terminal("checkpoint", "create", "--paths", str(big_tree))
    lines = drawn(out)
    assert lines, out
    reading = re.compile(rf"checkpoint {big_tree}, entries read: ([\d,]+) \(\d+ s\)")
    counts = [int(m.group(1).replace(",", "")) for m in map(reading.fullmatch, lines) if m]
    assert counts and counts == sorted(counts) and counts[-1] <= entries, lines
    # The line is cleared before the result is printed.
    assert out.endswith(f"\r\x1b[Kcheckpoint 1: {big_tree} ({entries} entries)\r\n"), out[-200:]

    for d in range(40):
        shutil.rmtree(big_tree / f"d{d}")
    out = on_terminal("checkpoint", "restore", "1", "--yes")
    written = [ln for ln in drawn(out) if ln.startswith(f"restore {big_tree}, files written: ")]
    assert written, drawn(out)
    assert all(re.search(r": [\d,]+/8,000 \(\d+%\)", ln) for ln in written), written
    assert "checkpoint 1 restored and verified" in out
    assert "\x1b[K" not in out.split("restored and verified")[-1]


def test_a_big_import_shows_progress_on_a_terminal(home, tmp_path):
    history = tmp_path / "history"
    history.write_text("".join(f"echo step {i} --flag value\n" for i in range(100_000)))
    out = on_terminal("import", "bash", str(history))
    stored = [ln for ln in drawn(out) if ln.startswith("import, steps stored: ")]
    assert stored and all(ln.split(": ")[1].split("/")[1].startswith("100,000") for ln in stored)
    assert "\r\x1b[Kimported 100000 steps" in out  # (the line cleared first)
    proc = on_pipes("import", "bash", str(history))
    assert proc.stderr == "" and "\r" not in proc.stdout and "\x1b" not in proc.stdout


def test_the_line_is_throttled_says_how_long_is_left_and_is_cleared():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            progress = TerminalProgress(tty)
            progress.DELAY = 0  # (the line appears after half a second of work, else)
            start = time.monotonic()
            done = 0
            while time.monotonic() - start < 1.5:
                done += 1
                progress("copying", done, 10 * done + 1000)
                time.sleep(0.0005)
            progress.close()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:
            chunks.append(os.read(master, 1 << 20))
        out = b"".join(chunks).decode()
    finally:
        os.close(master)
        os.close(slave)
    lines = drawn(out)
    assert 10 <= len(lines) <= 16, lines  # at most ten a second, though called thousands of times
    assert re.fullmatch(r"copying: [\d,]+/[\d,]+ \(\d+%\)", lines[0]), lines
    assert re.fullmatch(r"copying: [\d,]+/[\d,]+ \(\d+%\), about \d+ s left", lines[-1]), lines
    assert out.endswith("\x1b[K\r\x1b[K")


def test_nothing_at_all_when_not_a_terminal(tmp_path):
    with open(tmp_path / "err", "w") as not_a_tty:
        progress = TerminalProgress(not_a_tty)
        progress.DELAY = 0
        for i in range(1000):
            progress("copying", i, 1000)
        with progress.waiting("waiting"):
            time.sleep(0.3)
        progress.close()
    assert (tmp_path / "err").read_text() == ""


def test_work_that_reports_nothing_for_a_while_still_shows_how_long_it_runs():
    master, slave = os.openpty()
    try:
        with open(slave, "w", closefd=False) as tty:
            progress = TerminalProgress(tty)
            progress("restore: dpkg")  # then a long dpkg run, and not a word from it
            time.sleep(2.2)
            progress.close()
        chunks = []
        while select.select([master], [], [], 0.5)[0]:
            chunks.append(os.read(master, 1 << 20))
        out = b"".join(chunks).decode()
    finally:
        os.close(master)
        os.close(slave)
    # From half a second in, redrawn only when the text changes: once a second here.
    assert drawn(out) == ["restore: dpkg (1 s)", "restore: dpkg (2 s)"], out
    assert out.endswith("\r\x1b[K")


@needs_root_dpkg
def test_kept_debs_rebuilt_are_counted(tmp_path, rwtest_packages):  # noqa: F811
    prefix = rwtest_packages
    tag = prefix.split("-", 1)[1]
    debs = [build_deb(tmp_path, f"{prefix}-{n}", "1.0", tag) for n in "abc"]
    sh("dpkg", "--install", *map(str, debs))
    calls = []
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    probe = DpkgProbe(keep_debs=lambda name: name.startswith(prefix))
    state = probe.capture(artifacts, lambda *args: calls.append(args))
    assert len(state["artifacts"]) == 3
    what = "checkpoint, .debs of installed packages rebuilt"
    assert calls == [(what, 1, 3), (what, 2, 3), (what, 3, 3)]

"""Fixtures: a private RW_HOME per test, the real daemon, and real shells."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import pytest

from rewind_daemon.capture.client import process_running

from .shell import Shell

BIN = Path(sys.executable).parent
RW = str(BIN / "rw")


def rw(*args: str, check: bool = True, env: dict | None = None, timeout: float = 30):
    """Run the real rw program; returns the CompletedProcess."""
    proc = subprocess.run([RW, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"rw {' '.join(args)} exited {proc.returncode}: {proc.stderr}")
    return proc


def rw_json(*args: str):
    return json.loads(rw(*args, "--json").stdout)


def daemon_pid(home: Path) -> int | None:
    try:
        return int((home / "run" / "daemon.pid").read_text())
    except (OSError, ValueError):
        return None


def kill_daemon(home: Path) -> None:
    pid = daemon_pid(home)
    if pid is None:
        return
    for sig in (signal.SIGCONT, signal.SIGTERM):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if not process_running(pid):
            return
        time.sleep(0.01)
    os.kill(pid, signal.SIGKILL)


# Tests that change what the whole machine shares: dpkg's packages (a guarded
# install's rollback puts back every package, so another test's install would be
# undone with it), init scripts and users. When tests run in parallel
# (scripts/test: pytest-xdist), or two runs share the machine, these take turns.
MACHINE_WIDE_MODULES = {
    "test_probes",
    "test_dpkg_halts",
    "test_restore_hostile",
    "test_hostile_restore2",
    "test_cli_checkpoint",
}
MACHINE_WIDE_FIXTURES = {"rwtest_packages", "init_script", "other_user"}
MACHINE_LOCK = Path(tempfile.gettempdir()) / "rw-tests-machine-wide.lock"


@pytest.fixture(autouse=True)
def machine_wide_tests_take_turns(request):
    """A test that changes machine-wide state holds a lock while it runs (its
    fixtures' set-up and clean-up included)."""
    module = request.node.path.stem
    if module not in MACHINE_WIDE_MODULES and not (
        set(request.fixturenames) & MACHINE_WIDE_FIXTURES
    ):
        yield
        return
    with open(MACHINE_LOCK, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


# Signals whose handling the shells and programs the tests start inherit from
# this process: a handler left ignored, or a signal left blocked, by code run
# in-process would make a later test's Ctrl-C do nothing.
_INHERITED = (signal.SIGINT, signal.SIGQUIT, signal.SIGTERM, signal.SIGHUP, signal.SIGTSTP)


@pytest.fixture(autouse=True)
def signals_as_found():
    """Each test starts with the signal state the suite started with, and one
    that changed it is named (a warning), so its leak can be found and mended."""
    handlers = {sig: signal.getsignal(sig) for sig in _INHERITED}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, [])
    yield
    changed = [sig.name for sig in _INHERITED if signal.getsignal(sig) != handlers[sig]]
    now = signal.pthread_sigmask(signal.SIG_SETMASK, mask)
    if now != mask:
        changed.append(f"blocked {sorted(s.name for s in now ^ mask)}")
    for sig, handler in handlers.items():
        signal.signal(sig, handler)
    if changed:
        warnings.warn(f"this test left signal handling changed: {', '.join(changed)}", stacklevel=1)


@pytest.fixture
def rw_home(tmp_path, monkeypatch):
    home = tmp_path / "rwhome"
    monkeypatch.setenv("RW_HOME", str(home))
    monkeypatch.delenv("RW_SESSION", raising=False)
    yield home
    kill_daemon(home)


def write_config(home: Path, text: str) -> None:
    (home / "config").mkdir(parents=True, exist_ok=True)
    (home / "config" / "config.toml").write_text(text)


@pytest.fixture
def no_autostart(rw_home):
    write_config(rw_home, "[daemon]\nautostart = false\n")
    return rw_home


@pytest.fixture
def daemon(rw_home):
    rw("daemon", "start")
    return rw_home


@pytest.fixture
def shells(rw_home, tmp_path):
    """Factory for real interactive shells under a PTY; all closed at teardown."""
    opened: list[Shell] = []

    def make(kind: str = "bash", **kw) -> Shell:
        sh = Shell(kind, rw_home=rw_home, home=tmp_path / "home", bin_dir=BIN, **kw)
        opened.append(sh)
        return sh

    yield make
    for sh in opened:
        sh.close()


def make_site(tmp_path: Path) -> Path:
    """A small tree to checkpoint: a config file, a page and an empty directory."""
    root = tmp_path / "site"
    (root / "conf").mkdir(parents=True)
    (root / "conf" / "app.ini").write_text("mode=prod\n")
    (root / "index.html").write_text("<h1>hi</h1>\n")
    (root / "empty").mkdir()
    return root


def steps_of(session: str) -> list[dict]:
    return rw_json("log", session)


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting for a condition")
        time.sleep(interval)


def built(module: str):
    """The C module `module` (a dotted name); its tests skip where it was not
    built, but fail under scripts/test, which makes sure it is."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        if os.environ.get("RW_TEST_NEEDS_C"):
            pytest.fail(f"{module} was not built (gcc and Python's headers?)")
        pytest.skip(f"{module} was not built here")


@pytest.fixture
def c_module():
    """The C module rewind_daemon/_termtext.c (see `built`)."""
    return built("rewind_daemon._termtext")

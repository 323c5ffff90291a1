"""The runtime dir (socket, FIFOs, scratch files) without RW_HOME: never one
another user made, the same for the daemon and the hooks whatever their
environments, and a shell that does not hear the daemon is found by doctor."""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from rewind_daemon.capture.client import process_running

from ..checkpoints.test_snapshot import tree_state
from ..conftest import BIN, RW, wait_for
from ..shell import Shell
from .test_security import as_nobody

needs_root = pytest.mark.skipif(os.getuid() != 0, reason="another uid needs root")


class Box:
    """A user without RW_HOME or XDG_RUNTIME_DIR: rw's own defaults, with /tmp
    played by a sticky directory of the test's (TMPDIR)."""

    def __init__(self, root: Path):
        self.root = root
        self.tmp = root / "tmp"
        self.tmp.mkdir()
        self.tmp.chmod(0o1777)
        self.home = root / "home"
        self.home.mkdir()
        self.site = root / "site"
        self.site.mkdir()
        for name, text in (("keep.txt", "keep\n"), ("log.txt", "line 1\n"), ("old.txt", "old\n")):
            (self.site / name).write_text(text)
        self.env = {
            "RW_HOME": "",
            "TMPDIR": str(self.tmp),
            "XDG_DATA_HOME": str(self.home / "data"),
            "XDG_CONFIG_HOME": str(self.home / "config"),
        }
        self.config("timeout = 5\n")
        self.shells: list[Shell] = []

    def config(self, text: str) -> None:
        text = f"[watch]\npaths = [{str(self.site)!r}]\n{text}"
        (self.home / "config" / "rw").mkdir(parents=True, exist_ok=True)
        (self.home / "config" / "rw" / "config.toml").write_text(text)

    def rw(self, *args: str, extra: dict | None = None) -> subprocess.CompletedProcess:
        env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "RW_SESSION")}
        env.update(self.env, HOME=str(self.home), **(extra or {}))
        return subprocess.run([RW, *args], capture_output=True, text=True, env=env, timeout=60)

    def shell(self, kind: str = "bash", extra: dict | None = None) -> tuple[Shell, str]:
        """A hooked shell, and what its `eval "$(rw init)"` printed."""
        sh = Shell(
            kind, rw_home=self.root, home=self.home, bin_dir=BIN, init=False,
            env={**self.env, **(extra or {})},
        )  # fmt: skip
        self.shells.append(sh)
        return sh, sh.run(f'eval "$({BIN}/rw init {kind})"')

    def runtime_dir(self) -> Path:
        records = (self.home / "data" / "rw").glob("runtime-*")
        [record] = [r for r in records if not r.name.endswith((".lock", ".tmp"))]
        return Path(record.read_text().split("\n")[0])

    def close(self) -> None:
        for sh in self.shells:
            sh.close()
        for pid_file in self.root.rglob("daemon.pid"):
            try:
                pid = int(pid_file.read_text())
            except (OSError, ValueError):
                continue
            for sig in (signal.SIGCONT, signal.SIGTERM):
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    break
            deadline = time.monotonic() + 5
            while process_running(pid) and time.monotonic() < deadline:
                time.sleep(0.02)


@pytest.fixture
def box():
    root = Path(tempfile.mkdtemp(prefix="rw-rt-", dir="/tmp"))
    root.chmod(0o755)  # the other user may reach the sticky tmp inside it
    b = Box(root)
    try:
        yield b
    finally:
        b.close()
        shutil.rmtree(root, ignore_errors=True)


def back_three(sh: Shell, site: Path) -> str:
    for line in (f"cd {site}", "touch new.txt", "echo 'line 2' >> log.txt", "rm old.txt"):
        sh.run(line)
    return sh.run("rw back 3 --yes")


@needs_root
@pytest.mark.parametrize("kind", ["bash", "zsh"])
def test_a_runtime_dir_another_user_made_is_never_used(box, kind):
    """Another user made /tmp/rw-UID first and put symlinks in it, to a 0600 file
    of ours. rw records into a private fallback, says so once, and never
    writes through that directory."""
    victim = box.home / "secret"
    victim.write_text("private\n")
    victim.chmod(0o600)
    taken = box.tmp / f"rw-{os.getuid()}"
    as_nobody("mkdir", "-m", "777", str(taken))
    for name in ("daemon.pid", "daemon.lock", "daemon.sock"):
        as_nobody("ln", "-s", str(victim), str(taken / name))
    original = tree_state(box.site)

    sh, said = box.shell(kind)
    assert said.count(f"{taken} belongs to uid 65534") == 1, said
    assert "rw doctor" in said
    out = back_three(sh, box.site)
    assert "restored and verified" in out, out
    assert tree_state(box.site) == original

    again, said_again = box.shell(kind)
    assert said_again == ""  # told once, not on every shell start
    again.run("echo recorded")
    assert "echo recorded" in again.run("rw log")

    assert victim.read_text() == "private\n"
    assert sorted(p.name for p in taken.iterdir()) == ["daemon.lock", "daemon.pid", "daemon.sock"]
    assert all(p.lstat().st_uid == 65534 for p in taken.iterdir())
    used = box.runtime_dir()
    st = used.lstat()
    assert stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid()
    assert stat.S_IMODE(st.st_mode) == 0o700
    assert used.parent == box.tmp and used != taken
    assert (used / "daemon.sock").is_socket()
    doctor = box.rw("doctor").stdout
    assert f"ok   runtime dir: {used} mode 0700 ({taken} belongs to uid 65534" in doctor, doctor
    assert "chmod" not in doctor


@needs_root
def test_the_fallback_is_told_at_the_next_shell_start_when_the_daemon_chose_it(box):
    taken = box.tmp / f"rw-{os.getuid()}"
    as_nobody("mkdir", "-m", "755", str(taken))
    assert box.rw("daemon", "start").returncode == 0  # chooses the fallback, logs it
    _, said = box.shell("bash")
    assert said.count(f"{taken} belongs to uid 65534") == 1, said
    for kind in ("bash", "zsh"):
        assert box.shell(kind)[1] == ""
    assert box.rw("daemon", "status").returncode == 0


@needs_root
def test_a_daemon_and_a_shell_that_disagree_about_xdg_runtime_dir_agree(box):
    """The daemon starts where XDG_RUNTIME_DIR is unset; the shell has one. Both
    use the runtime dir decided first, so every step gets its checkpoint."""
    box.config("timeout = 5\n[daemon]\nautostart = false\n")
    xdg = box.root / "xdg"
    xdg.mkdir(mode=0o700)
    assert box.rw("daemon", "start").returncode == 0
    original = tree_state(box.site)
    sh, said = box.shell("bash", extra={"XDG_RUNTIME_DIR": str(xdg)})
    assert said == ""
    out = back_three(sh, box.site)
    assert "restored and verified" in out, out
    assert tree_state(box.site) == original
    assert not (xdg / "rw").exists()


@needs_root
def test_doctor_finds_a_shell_that_does_not_hear_the_daemon(box):
    """The shell's hooks wait in one runtime dir; the daemon answers in another
    (it was started after that dir was given up, with another environment).
    Its step checkpoints stay pending, the shell is told once, and doctor says so."""
    box.config("timeout = 0.3\n[daemon]\nautostart = false\n")
    xdg = box.root / "xdg"
    xdg.mkdir(mode=0o700)
    sh, _ = box.shell("bash")
    for record in (box.home / "data" / "rw").glob("runtime-*"):
        record.unlink()
    assert box.rw("daemon", "start", extra={"XDG_RUNTIME_DIR": str(xdg)}).returncode == 0
    outs = [sh.run(f"echo {i} >> {box.site}/log.txt") for i in range(4)]
    assert sum("did not answer" in o for o in outs) == 1, outs
    sh.run("true")
    time.sleep(1.5)
    out = sh.run("rw doctor")
    assert "BAD  step checkpoints: this shell does not hear the daemon" in out, out
    assert "fix: start a new shell" in out


def test_the_hooks_and_the_daemon_keep_their_fifos_in_rw_home(rw_home, shells, tmp_path):
    """Under RW_HOME everything stays inside it (nothing in /dev/shm)."""
    from ..conftest import rw, write_config

    site = tmp_path / "site"
    site.mkdir()
    write_config(rw_home, f"[watch]\npaths = [{str(site)!r}]\ntimeout = 5\n")
    rw("daemon", "start")
    sh = shells("bash")
    sh.run("true")
    sid = sh.session_id()
    wait_for(lambda: (rw_home / "run" / f"{sid}.ack").exists())
    assert stat.S_ISFIFO((rw_home / "run" / f"{sid}.ack").lstat().st_mode)


@needs_root
def test_the_daemon_never_answers_on_a_fifo_of_another_user(rw_home, shells, tmp_path):
    """Whatever sits at a session's FIFO name, the daemon writes only to a FIFO
    of its own user, opened without following a symlink."""
    from rewind_daemon import paths

    from ..conftest import rw, rw_json, write_config

    site = tmp_path / "site"
    site.mkdir()
    write_config(
        rw_home, f"[watch]\npaths = [{str(site)!r}]\ntimeout = 0.3\n[daemon]\nautostart = false\n"
    )
    sh = shells("bash")
    [spool] = (rw_home / "data" / "spool").glob("*.spool")  # its first prompt opened it
    ack = paths.resolve().scratch_dir / f"{spool.stem}.ack"
    ack.unlink(missing_ok=True)
    os.mkfifo(ack, 0o600)
    os.chown(ack, 65534, 65534)
    rw("daemon", "start")
    out = sh.run("true")
    assert rw_json("show", spool.stem, "1")["checkpoint"] is None
    log = (rw_home / "data" / "daemon.log").read_text()
    assert f"{ack} is not a FIFO of ours" in log, log
    assert "did not answer" in out, out


def test_a_runtime_dir_that_is_a_symlink_is_refused_not_followed(rw_home, tmp_path):
    from ..conftest import rw

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o755)
    rw_home.mkdir()
    (rw_home / "run").symlink_to(elsewhere)
    proc = rw("init", "bash", check=False)
    assert proc.returncode == 2 and proc.stdout == ""
    refused = f"{rw_home / 'run'} is a symlink or not a directory; refusing to use it"
    assert proc.stderr == f"rw: {refused}\n"
    assert stat.S_IMODE(elsewhere.stat().st_mode) == 0o755  # no chmod through the link
    assert list(elsewhere.iterdir()) == []
    doctor = rw("doctor", check=False).stdout
    assert "BAD  runtime dir" in doctor and "fix: point RW_HOME at a directory of yours" in doctor
    assert "chmod" not in doctor

"""A real OpenSSH server on 127.0.0.1 for the remote tests: a test user made for
the test (removed with its home and its processes afterwards, whatever the test
did), a host key and a client key made in the test's directory, and sshd started
as the test's child. rw is not installed for that user, and it cannot read this
repository's virtual environment: what runs there is what rw ships."""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = "/usr/sbin/sshd"
ALIAS = "rwtest"


@dataclass
class Remote:
    user: str
    home: Path
    uid: int
    port: int
    ssh_config: Path  # for ssh -F: Host rwtest, port, key, known host, BatchMode
    sshd_config: Path
    log: Path
    alias: str = ALIAS

    def ssh(self, command: str, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run `command` there with plain ssh."""
        return subprocess.run(
            ["ssh", "-F", str(self.ssh_config), self.alias, command],
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
        )  # fmt: skip

    def pids(self) -> list[int]:
        """Processes of the test user, alive (zombies do not count)."""
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                st = os.stat(f"/proc/{name}")
                with open(f"/proc/{name}/stat", "rb") as fh:
                    state = fh.read().rsplit(b")", 1)[1].split()[0]
            except OSError:
                continue
            if st.st_uid == self.uid and state != b"Z":
                out.append(int(name))
        return out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _kill_user(uid: int) -> None:
    """End every process of the test user, by pid."""
    for _ in range(50):
        left = []
        for name in os.listdir("/proc"):
            if name.isdigit():
                try:
                    if os.stat(f"/proc/{name}").st_uid == uid:
                        left.append(int(name))
                except OSError:
                    pass
        if not left:
            return
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)


def _wait_port(port: int, proc: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"sshd exited {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"sshd did not listen on {port}: {log.read_text()}")


@pytest.fixture
def remote(tmp_path):
    """A test user reachable as `rwtest` through the returned ssh config."""
    with serve(tmp_path / "keys", ALIAS) as r:
        yield r


@pytest.fixture
def remote2(tmp_path):
    """Another host: another test user and another sshd, reachable as `rwtest2`."""
    with serve(tmp_path / "keys2", "rwtest2") as r:
        yield r


@contextmanager
def serve(keys: Path, alias: str) -> Iterator[Remote]:
    if os.geteuid() != 0 or not os.path.exists(SSHD):
        pytest.skip("needs root and OpenSSH's sshd (scripts/test installs openssh-server)")
    user = f"rwt{uuid.uuid4().hex[:8]}"
    keys.mkdir(mode=0o700)
    # '*': no password, and not locked (sshd without PAM refuses a locked account)
    subprocess.run(
        ["useradd", "--create-home", "--shell", "/bin/sh", "--password", "*", user],
        check=True, capture_output=True, timeout=30,
    )  # fmt: skip
    sshd = None
    info = pwd.getpwnam(user)
    try:
        home = Path(info.pw_dir)
        for name in ("host", "client"):
            subprocess.run(
                ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"rw-test-{name}",
                 "-f", str(keys / name)],
                check=True, capture_output=True, timeout=30,
            )  # fmt: skip
        dot_ssh = home / ".ssh"
        dot_ssh.mkdir(mode=0o700)
        (dot_ssh / "authorized_keys").write_text((keys / "client.pub").read_text())
        os.chmod(dot_ssh / "authorized_keys", 0o600)
        for path in (dot_ssh, dot_ssh / "authorized_keys"):
            os.chown(path, info.pw_uid, info.pw_gid)
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation
        port = _free_port()
        sshd_config = keys / "sshd_config"
        sshd_config.write_text(
            f"ListenAddress 127.0.0.1\nPort {port}\nHostKey {keys / 'host'}\n"
            f"AllowUsers {user}\nPubkeyAuthentication yes\nPasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\nUsePAM no\nPermitRootLogin no\n"
            "StrictModes yes\nPermitUserEnvironment yes\nX11Forwarding no\n"
            f"PidFile {keys / 'sshd.pid'}\nLogLevel VERBOSE\n"
        )
        known = keys / "known_hosts"
        known.write_text(f"[127.0.0.1]:{port} {(keys / 'host.pub').read_text()}")
        ssh_config = keys / "ssh_config"
        ssh_config.write_text(
            f"Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n"
            f"  IdentityFile {keys / 'client'}\n  IdentitiesOnly yes\n"
            f"  UserKnownHostsFile {known}\n  StrictHostKeyChecking yes\n"
            "  BatchMode yes\n  ConnectTimeout 10\n  LogLevel ERROR\n"
        )
        log = keys / "sshd.log"
        with open(log, "wb") as fh:
            sshd = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(sshd_config)], stdout=fh, stderr=fh,
                stdin=subprocess.DEVNULL,
            )  # fmt: skip
        _wait_port(port, sshd, log)
        yield Remote(user, home, info.pw_uid, port, ssh_config, sshd_config, log, alias)
    finally:
        if sshd is not None:
            sshd.terminate()
            try:
                sshd.wait(10)
            except subprocess.TimeoutExpired:
                sshd.kill()
                sshd.wait()
        _kill_user(info.pw_uid)
        subprocess.run(["userdel", "--remove", user], capture_output=True, timeout=30)
        shutil.rmtree(info.pw_dir, ignore_errors=True)

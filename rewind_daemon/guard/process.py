"""Running the guarded command: a pseudo-terminal in its own session, output
streamed through unchanged, and the whole process tree found again to be killed.

The tree is held two ways. Where a cgroup v2 subtree can be made, the child
joins it before exec, so every descendant is in it whatever it does (setsid,
double fork); cgroup.kill ends them all at once. Everywhere, rw is also a
child subreaper (orphans are reparented to it, not to init) and the child's
environment carries a unique mark, so a scan of /proc finds the descendants
by parent, session, process group and mark.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import secrets
import select
import signal
import struct
import subprocess
import termios
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ..recorder.relay import write_all
from .rules import ERROR, INTERRUPTED, TIMEOUT, Classifier, Trip

KILL_WITHIN = 1.0  # seconds to end the whole tree before survivors are reported
DRAIN_FOR = 0.2  # seconds to read what is left on the terminal once the command exited
_PR_SET_CHILD_SUBREAPER = 36
_MARK_PREFIX = "RW_GUARD_"


# -- the process tree ---------------------------------------------------------------


@dataclass(frozen=True)
class Proc:
    pid: int
    state: str
    ppid: int
    pgrp: int
    session: int


def _processes() -> dict[int, Proc]:
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as fh:
                raw = fh.read()
        except OSError:
            continue
        f = raw[raw.rfind(b")") + 2 :].split()
        pid = int(name)
        out[pid] = Proc(pid, f[0].decode(), int(f[1]), int(f[2]), int(f[3]))
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _has_mark(pid: int, mark: bytes) -> bool:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            env = fh.read()
    except OSError:
        return False
    return env.startswith(mark) or b"\0" + mark in env


def cgroup2_root() -> Path | None:
    """This process's own cgroup v2 directory, if cgroup v2 is mounted."""
    try:
        own = next(
            line[3:].strip()
            for line in Path("/proc/self/cgroup").read_text().splitlines()
            if line.startswith("0::")
        )
        mounts = Path("/proc/self/mountinfo").read_text().splitlines()
    except (OSError, StopIteration):
        return None
    for line in mounts:
        left, _, right = line.partition(" - ")
        if right.split()[:1] != ["cgroup2"]:
            continue
        fields = left.split()
        root, point = fields[3], fields[4]
        if own == root or own.startswith(root.rstrip("/") + "/"):
            rel = own[len(root.rstrip("/")) :].lstrip("/")
            return Path(point) / rel
    return None


def _set_subreaper(on: bool) -> bool:
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


class ProcessTree:
    """The guarded command and everything it starts."""

    def __init__(self, use_cgroup: bool = True):
        self.token = secrets.token_hex(8)
        self.mark_name = f"{_MARK_PREFIX}{self.token}"
        self._mark = f"{self.mark_name}=1".encode()
        self.root: int | None = None
        self.root_status: int | None = None  # raw wait status once reaped
        self.cgroup: Path | None = None
        self._parent_cgroup: Path | None = None
        self._known: set[int] = set()
        # Every session and process group seen in the tree: a process that
        # forks and exits faster than /proc is scanned is still in one of them.
        self._groups: set[int] = set()
        self._me = os.getpid()
        self._mine_before = {p.pid for p in _processes().values() if p.ppid == self._me}
        self._ancestors = self._ancestry()
        procs = _processes()
        # (rw's own, and its ancestors': never the tree's, whatever it claims)
        self._not_ours = {0, 1} | {
            x
            for pid in self._ancestors
            if pid in procs
            for x in (procs[pid].pgrp, procs[pid].session)
        }
        self._reaper = _set_subreaper(True)
        if use_cgroup:
            self._make_cgroup()

    @property
    def containment(self) -> str:
        return "cgroup" if self.cgroup is not None else "process scan"

    def _ancestry(self) -> set[int]:
        procs, out, pid = _processes(), set(), self._me
        while pid > 0 and pid not in out:
            out.add(pid)
            pid = procs[pid].ppid if pid in procs else 0
        return out

    def _make_cgroup(self) -> None:
        parent = cgroup2_root()
        if parent is None:
            return
        path = parent / f"rw-guard-{self.token}"
        try:
            path.mkdir()
        except OSError:
            return
        if not os.access(path / "cgroup.procs", os.W_OK):
            self._remove_cgroup(path)
            return
        self.cgroup, self._parent_cgroup = path, parent

    def env(self) -> dict[str, str]:
        return {self.mark_name: "1"}

    def join_in_child(self) -> None:
        """Runs in the child between fork and exec."""
        if self.cgroup is not None:
            try:
                with open(self.cgroup / "cgroup.procs", "w") as fh:
                    fh.write("0")
            except OSError:
                pass  # the parent finds out and relies on the scan

    def started(self, pid: int) -> None:
        """The command runs (it joined the cgroup before exec, if it could)."""
        self.root = pid
        self._known.add(pid)
        if pid not in self._not_ours:
            self._groups.add(pid)  # (the command leads a session of its own)
        if self.cgroup is not None and not self._in_cgroup(pid):
            self._remove_cgroup(self.cgroup)
            self.cgroup = None

    def _in_cgroup(self, pid: int) -> bool:
        assert self.cgroup is not None
        try:
            line = next(
                ln for ln in Path(f"/proc/{pid}/cgroup").read_text().splitlines()
                if ln.startswith("0::")
            )  # fmt: skip
        except (OSError, StopIteration):
            return False
        return line.endswith("/" + self.cgroup.name)

    def members(self, with_marks: bool = True) -> set[int]:
        """Live processes of the tree (zombies have ended and do not count)."""
        procs = _processes()
        found = set(self._known)
        if self.cgroup is not None:
            try:
                found.update(int(p) for p in (self.cgroup / "cgroup.procs").read_text().split())
            except OSError:
                pass
        for p in procs.values():
            if p.ppid == self._me and p.pid not in self._mine_before:
                found.add(p.pid)  # orphans reparented to us, the subreaper
            elif p.session in self._groups or p.pgrp in self._groups:
                found.add(p.pid)
        children: dict[int, list[int]] = {}
        for p in procs.values():
            children.setdefault(p.ppid, []).append(p.pid)
        stack = list(found)
        while stack:
            for c in children.get(stack.pop(), ()):
                if c not in found:
                    found.add(c)
                    stack.append(c)
        if with_marks:
            found.update(pid for pid in procs if pid not in found and _has_mark(pid, self._mark))
        self._known = {pid for pid in found if pid in procs}
        for pid in self._known - self._ancestors:
            self._groups.update((procs[pid].pgrp, procs[pid].session))
        self._groups -= self._not_ours
        return {
            pid for pid in self._known if procs[pid].state != "Z" and pid not in self._ancestors
        }

    def kill(self) -> list[str]:
        """SIGKILL every process of the tree; what is still alive after a second.

        Each pass stops what it finds before killing it (a stopped process
        cannot fork), and signals every process group seen in the tree as a
        whole (which reaches a child forked since the scan); it ends once a
        scan finds nothing of the tree alive, twice in a row."""
        if self.cgroup is not None:
            try:
                (self.cgroup / "cgroup.kill").write_text("1")
            except OSError:
                pass
        deadline = time.monotonic() + KILL_WITHIN
        quiet = 0
        while True:
            alive = self.members()
            if self.cgroup is not None and not alive and self._populated():
                alive = self.members()  # in the cgroup but not yet listed: look again
            for sig in (signal.SIGSTOP, signal.SIGKILL):
                for pid in alive:
                    try:
                        os.kill(pid, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
                for group in sorted(self._groups):
                    try:
                        os.killpg(group, sig)
                    except (ProcessLookupError, PermissionError):
                        pass
            self._reap()
            quiet = quiet + 1 if not alive else 0
            if quiet >= 2 or time.monotonic() > deadline:
                break
            if alive:
                time.sleep(0.001)
        left = self.members()
        if self.cgroup is not None and not left:
            self._wait_empty(deadline)
            self._remove_cgroup(self.cgroup)
            self.cgroup = None
        return [f"pid {pid}: {_cmdline(pid)}" for pid in sorted(left)]

    def _populated(self) -> bool:
        try:
            return "populated 1" in (self.cgroup / "cgroup.events").read_text()  # type: ignore[operator]
        except OSError:
            return False

    def _wait_empty(self, deadline: float) -> None:
        while self._populated() and time.monotonic() < deadline:
            time.sleep(0.001)

    def _reap(self) -> None:
        """Collect our children of the tree (the command, and orphans handed to us)."""
        for pid in list(self._known):
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                continue
            if done and pid == self.root:
                self.root_status = status

    def wait_root(self, block: bool) -> int | None:
        """The command's raw wait status, once it has ended."""
        if self.root_status is None and self.root is not None:
            try:
                done, status = os.waitpid(self.root, 0 if block else os.WNOHANG)
            except ChildProcessError:
                return self.root_status
            if done:
                self.root_status = status
        return self.root_status

    def release(self) -> None:
        """The command succeeded: what it left running (a service it started) stays,
        outside rw's cgroup."""
        if self.cgroup is not None and self._parent_cgroup is not None:
            try:
                for pid in (self.cgroup / "cgroup.procs").read_text().split():
                    (self._parent_cgroup / "cgroup.procs").write_text(pid)
            except OSError:
                pass
            self._remove_cgroup(self.cgroup)
            self.cgroup = None
        self.close()

    def close(self) -> None:
        self._reap()
        if self.cgroup is not None and not self._populated():
            self._remove_cgroup(self.cgroup)
            self.cgroup = None
        if self._reaper:
            _set_subreaper(False)
            self._reaper = False

    @staticmethod
    def _remove_cgroup(path: Path) -> None:
        try:
            path.rmdir()
        except OSError:
            pass


# -- running ------------------------------------------------------------------------


@dataclass
class RunResult:
    trip: Trip | None
    exit_status: int | None  # as a shell reports it: the code, or 128 + signal
    lines: int
    output: bytes  # the last `keep` bytes
    started_at: float
    ended_at: float
    killed: bool = False
    survivors: list[str] = field(default_factory=list)
    kill_seconds: float | None = None  # from the trip to the whole tree dead
    containment: str = ""


def shell_status(raw: int | None) -> int | None:
    if raw is None:
        return None
    code = os.waitstatus_to_exitcode(raw)
    return 128 - code if code < 0 else code


def _winsize(fds: Sequence[int | None]) -> bytes:
    for fd in fds:
        if fd is not None and os.isatty(fd):
            try:
                return fcntl.ioctl(fd, termios.TIOCGWINSZ, b"\0" * 8)
            except OSError:
                continue
    return struct.pack("HHHH", 24, 80, 0, 0)


def _write_all(fd: int, data: bytes) -> bool:
    """False once the reader has gone (the command goes on; its output is still kept)."""
    try:
        return write_all(fd, data)
    except OSError:
        return False


class _Terminal:
    """The user's terminal in input-raw mode for the run: keys go to the command
    as typed (Ctrl-C included, which halts the run); output processing is left on."""

    def __init__(self, fd: int | None):
        self.fd = fd
        self.saved: list | None = None
        self.background = False  # then it is not read either (that would stop rw)
        if fd is None or not os.isatty(fd):
            return
        try:
            if os.tcgetpgrp(fd) != os.getpgrp():
                self.background = True
                return
            self.saved = termios.tcgetattr(fd)
            mode = termios.tcgetattr(fd)
            mode[0] &= ~(termios.BRKINT | termios.ICRNL | termios.INPCK | termios.ISTRIP
                         | termios.IXON)  # fmt: skip
            mode[3] &= ~(termios.ECHO | termios.ICANON | termios.IEXTEN | termios.ISIG)
            mode[6][termios.VMIN], mode[6][termios.VTIME] = 1, 0
            termios.tcsetattr(fd, termios.TCSADRAIN, mode)
        except (OSError, termios.error):
            self.saved = None

    @property
    def raw(self) -> bool:
        return self.saved is not None

    def restore(self) -> None:
        if self.saved is not None and self.fd is not None:
            try:
                termios.tcsetattr(self.fd, termios.TCSADRAIN, self.saved)
            except (OSError, termios.error):
                pass
            self.saved = None


def _slave_mode(slave: int, like: int | None, echo: bool) -> None:
    """The command's terminal: like the user's when there is one; newlines are
    passed on as written (no CR added), so the output reaches the user unchanged."""
    try:
        mode = termios.tcgetattr(like if like is not None and os.isatty(like) else slave)
        mode[1] &= ~termios.ONLCR
        if not echo:
            mode[3] &= ~termios.ECHO
        termios.tcsetattr(slave, termios.TCSANOW, mode)
    except (OSError, termios.error):
        pass


class _Signals:
    """Ctrl-C, SIGTERM and SIGHUP halt the run; SIGWINCH resizes the command's terminal."""

    HALT = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

    def __init__(self, master: int, size_from: Sequence[int | None]):
        self.received: int | None = None
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_w, False)
        self.saved: dict[int, object] = {}
        if threading.current_thread() is not threading.main_thread():
            return

        def halt(signum, _frame):
            self.received = signum
            try:
                os.write(self.wake_w, b"x")
            except OSError:
                pass

        def resize(_signum, _frame):
            try:
                fcntl.ioctl(master, termios.TIOCSWINSZ, _winsize(size_from))
            except OSError:
                pass

        for sig in self.HALT:
            self.saved[sig] = signal.signal(sig, halt)
        self.saved[signal.SIGWINCH] = signal.signal(signal.SIGWINCH, resize)

    def restore(self) -> None:
        for sig, handler in self.saved.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        os.close(self.wake_r)
        os.close(self.wake_w)


def _child_setup(tree: ProcessTree) -> Callable[[], None]:
    def setup() -> None:
        # start_new_session made us a session leader: take the terminal as ours.
        fcntl.ioctl(0, termios.TIOCSCTTY, 0)
        for sig in _Signals.HALT:
            signal.signal(sig, signal.SIG_DFL)
        tree.join_in_child()

    return setup


class _Stream:
    """One run's plumbing: the terminal's master side, the user's input and output,
    and what was kept of the output."""

    def __init__(self, master: int, classifier: Classifier, out_fd: int | None, keep: int):
        self.master = master
        self.master_open = True
        self.classifier = classifier
        self.out_fd = out_fd
        self.keep = keep
        self.kept = bytearray()

    def take(self, data: bytes) -> None:
        self.kept.extend(data)
        if len(self.kept) > 2 * self.keep:
            del self.kept[: -self.keep]
        if self.out_fd is not None and not _write_all(self.out_fd, data):
            self.out_fd = None  # the reader has gone; the run goes on

    def read(self) -> bytes:
        try:
            return os.read(self.master, 65536)
        except BlockingIOError:
            return b""
        except OSError:  # EIO: every holder of the terminal has closed it
            self.master_open = False
            return b""

    def drain(self, classify: bool) -> Trip | None:
        """What is still on the terminal once the command ended (or was killed)."""
        end = time.monotonic() + DRAIN_FOR
        found = None
        while self.master_open and time.monotonic() < end:
            data = self.read()
            if not data:
                break
            if classify and found is None:
                found = self.classifier.feed(data)
            self.take(data)
        return found


def run(
    argv: Sequence[str],
    *,
    classifier: Classifier,
    tree: ProcessTree,
    timeout: float,
    cwd: str | None = None,
    env: dict[str, str] | None = None,
    out_fd: int | None = None,
    in_fd: int | None = None,
    keep: int = 1024 * 1024,
) -> RunResult:
    """Run `argv` on a new pseudo-terminal, streaming its output to `out_fd` and
    `in_fd` to it, until it ends or the first issue; on an issue the whole tree
    is killed before this returns."""
    started = time.time()
    env = {**(os.environ if env is None else env), **tree.env()}
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, _winsize([in_fd, out_fd]))
    _slave_mode(slave, in_fd, echo=in_fd is not None and os.isatty(in_fd))
    terminal = _Terminal(in_fd)
    if terminal.background:
        in_fd = None
    try:
        try:
            proc = subprocess.Popen(
                list(argv), stdin=slave, stdout=slave, stderr=slave, cwd=cwd, env=env,
                start_new_session=True, preexec_fn=_child_setup(tree), close_fds=True,
            )  # fmt: skip
        except (OSError, subprocess.SubprocessError) as e:
            tree.close()
            why = getattr(e, "strerror", None) or str(e)
            failed = Trip(ERROR, None, None, f"cannot run {argv[0]}: {why}")
            return RunResult(failed, 127, 0, b"", started, time.time(), containment="")
        finally:
            os.close(slave)
        tree.started(proc.pid)
        containment = tree.containment
        os.set_blocking(master, False)
        stream = _Stream(master, classifier, out_fd, keep)
        signals = _Signals(master, [in_fd, out_fd])
        try:
            pidfd: int | None = os.pidfd_open(proc.pid)
        except (AttributeError, OSError):
            pidfd = None
        try:
            trip, held, exited = _pump(stream, tree, terminal, signals, pidfd, in_fd, timeout)
            if exited:
                trip = stream.drain(classify=True) or classifier.finish()
                status = shell_status(tree.wait_root(block=True))
                if trip is None and status:
                    trip = Trip(ERROR, None, None, f"exit status {status}")
            survivors: list[str] = []
            kill_seconds: float | None = None
            if trip is not None:
                t0 = time.monotonic()
                survivors = tree.kill()
                kill_seconds = time.monotonic() - t0
                stream.take(held)
                stream.drain(classify=False)
                tree.wait_root(block=False)
                tree.close()
            else:
                tree.release()
        finally:
            signals.restore()
            if pidfd is not None:
                os.close(pidfd)
        status = shell_status(tree.root_status)
        proc.returncode = status  # reaped here, not by Popen
        return RunResult(
            trip=trip,
            exit_status=status,
            lines=classifier.lines,
            output=bytes(stream.kept[-keep:]),
            started_at=started,
            ended_at=time.time(),
            killed=trip is not None,
            survivors=survivors,
            kill_seconds=kill_seconds,
            containment=containment,
        )
    finally:
        terminal.restore()
        os.close(master)


def _pump(
    stream: _Stream,
    tree: ProcessTree,
    terminal: _Terminal,
    signals: _Signals,
    pidfd: int | None,
    in_fd: int | None,
    timeout: float,
) -> tuple[Trip | None, bytes, bool]:
    """Move bytes until the first issue or the command's exit: (trip, the chunk
    that tripped, whether the command exited)."""
    master = stream.master
    pending_in = b""
    reading_in = in_fd is not None
    last_output = time.monotonic()
    while True:
        poller = select.poll()
        if stream.master_open:
            poller.register(master, select.POLLIN | (select.POLLOUT if pending_in else 0))
        if reading_in and not pending_in:
            poller.register(in_fd, select.POLLIN)  # type: ignore[arg-type]
        poller.register(signals.wake_r, select.POLLIN)
        if pidfd is not None:
            poller.register(pidfd, select.POLLIN)
        wait = last_output + timeout - time.monotonic()
        if pidfd is None:
            wait = min(wait, 0.05)
        events = dict(poller.poll(max(0, int(wait * 1000) + 1)))
        ev = events.get(master, 0) if stream.master_open else 0
        if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
            data = stream.read()
            if data:
                last_output = time.monotonic()
                trip = stream.classifier.feed(data)
                if trip is not None:
                    return trip, data, False  # killed before the chunk is shown
                stream.take(data)
        if pending_in and ev & select.POLLOUT:
            try:
                pending_in = pending_in[os.write(master, pending_in) :]
            except BlockingIOError:
                pass
            except OSError:
                pending_in = b""
        if in_fd is not None and in_fd in events:
            try:
                data = os.read(in_fd, 4096)
            except OSError:
                data = b""
            if not data:
                reading_in = False
            elif terminal.raw and b"\x03" in data:
                return Trip(INTERRUPTED, None, None, "Ctrl-C"), b"", False
            else:
                pending_in += data
        if signals.received is not None:
            name = signal.Signals(signals.received).name
            return Trip(INTERRUPTED, None, None, "Ctrl-C" if name == "SIGINT" else name), b"", False
        if pidfd is not None and pidfd in events:
            return None, b"", True
        if pidfd is None and tree.wait_root(block=False) is not None:
            return None, b"", True
        if time.monotonic() - last_output > timeout:
            return Trip(TIMEOUT, None, None, f"no output for {timeout:g} s"), b"", False

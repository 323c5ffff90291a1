"""The pseudo-terminal proxy of `rw record`, as util-linux `script` and asciinema
do it: the shell runs as a session leader on a new pseudo-terminal whose size
and mode are the real terminal's, the real terminal goes raw (so Ctrl-C, Ctrl-Z
and every key reach the shell's own line discipline and its foreground job),
and one loop moves bytes between them: the master, the terminal and a signal
wake-up pipe, no per-byte work. Each read of the shell's output (a few KiB:
what the pseudo-terminal hands out) is shown at once, as `script` does: the
shell goes on printing while the terminal draws. Batching reads into one
large write held the shell up while the terminal drew it (a third slower
under tmux); what is batched is the rest: `relay` (in C) shows read after
read while the shell prints and nothing else is waiting, and hands the loop
up to BATCH bytes at a time for the splitter and the spool, whose records
are batched too (spool.py).

What the shell prints goes through the splitter (`marks`) to the spool
(`spool`). Neither can stop the loop: any exception in them stops recording for
the rest of the run, says so once, and the bytes go on as they came. The
terminal's mode is put back in a `finally` on every way out.
"""

from __future__ import annotations

import errno
import fcntl
import os
import secrets
import select
import signal
import struct
import termios
import time
import tty
from pathlib import Path
from typing import Callable, NoReturn

from ..errors import EXIT_PROBLEM, EXIT_USAGE, RwError
from ..paths import ensure_private_dir
from .marks import ENV, PREFIX, Splitter, env_value, parse_env
from .relay import relay, write_all
from .screen_modes import ScreenModes
from .spool import HELD, OutputSpool

READ = 1 << 16
BATCH = 1 << 16  # the most output shown in one turn of the loop (relay.py)
QUIET_FLUSH_MS = 50  # a mark's start held back longer than this was no mark
DRAIN_SECONDS = 1.0  # after the shell's end, what it printed last (a job it left may go on)
FAULTS = ("splitter", "spool", "loop", "start")  # RW_RECORD_FAULT, for tests
_WINSZ = struct.Struct("HHHH")
_SIGNALS = (
    signal.SIGWINCH, signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP, signal.SIGINT,
    signal.SIGQUIT, signal.SIGTSTP, signal.SIGCONT,
)  # fmt: skip
# Python ignores these; a shell must not inherit that (`yes | head` would differ).
_DEFAULT_IN_CHILD = (*_SIGNALS, signal.SIGPIPE, signal.SIGXFSZ)


class TerminalGone(Exception):
    """The real terminal hung up: there is no one to proxy for."""


def window_size(fd: int) -> bytes:
    return fcntl.ioctl(fd, termios.TIOCGWINSZ, bytes(_WINSZ.size))


def columns_rows(size: bytes) -> tuple[int, int]:
    rows, cols, _, _ = _WINSZ.unpack(size)
    return cols, rows


class Proxy:
    """Runs `argv` under a pseudo-terminal proxy on the terminal `stdin`/`stdout`;
    `run` returns the shell's exit status (128+N when it died of signal N)."""

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str],
        splitter: Splitter,
        spool: OutputSpool,
        *,
        stdin: int = 0,
        stdout: int = 1,
        fault: str = "",
        token: str = "",
    ):
        self.argv, self.env = argv, env
        self.splitter, self.spool = splitter, spool
        self.stdin, self.stdout = stdin, stdout
        self.recording = True
        self.fault = fault
        self.token = token
        self._signals: list[int] = []
        self._to_shell = bytearray()
        self._watch: tuple[int, ...] = ()  # what ends a relay: typed input, a signal
        self.pid = 0
        self.status: int | None = None
        self._saved: list | None = None  # the terminal's mode before the run
        self.modes = ScreenModes()  # what the session turned on, put back at the end

    # -- the run --------------------------------------------------------------

    def run(self) -> int:
        if self.fault == "start":
            raise RuntimeError("injected fault (RW_RECORD_FAULT=start)")
        saved = self._saved = termios.tcgetattr(self.stdin)
        size = window_size(self.stdin)
        master, slave = os.openpty()
        wake_r, wake_w = os.pipe()
        old_handlers: dict[int, object] = {}
        old_wakeup = -1
        try:
            self.env[ENV] = env_value(self.token, os.getpid(), os.ttyname(slave))
            termios.tcsetattr(slave, termios.TCSANOW, saved)
            fcntl.ioctl(slave, termios.TIOCSWINSZ, size)
            self.spool.size = columns_rows(size)
            for fd in (wake_r, wake_w, master):
                os.set_blocking(fd, False)
            for sig in _SIGNALS:
                old_handlers[sig] = signal.signal(sig, self._on_signal)
            old_wakeup = signal.set_wakeup_fd(wake_w, warn_on_full_buffer=False)
            self.pid = self._spawn(slave)
            os.close(slave)
            slave = -1
            self._raw()
            self._loop(master, wake_r)
        finally:
            self._reset_modes()
            try:
                termios.tcsetattr(self.stdin, termios.TCSADRAIN, saved)
            except termios.error:
                pass  # the terminal is gone
            signal.set_wakeup_fd(old_wakeup)
            for signum, handler in old_handlers.items():
                signal.signal(signum, handler)  # type: ignore[arg-type]
            for end in (master, slave, wake_r, wake_w):
                if end >= 0:
                    os.close(end)  # the shell, if still there, gets its hangup
            self._stop_recording_quietly()
        return self._exit_status()

    def _reset_modes(self) -> None:
        """Turn off what the session left on (the alternate screen of a program
        killed with it, a hidden cursor): on every way out, the terminal is
        given back as it was."""
        resets = self.modes.resets()
        view = memoryview(resets)
        deadline = time.monotonic() + 1.0
        while view and time.monotonic() < deadline:
            try:
                view = view[os.write(self.stdout, view) :]
            except BlockingIOError:
                select.select([], [self.stdout], [], 0.1)
            except OSError:
                return  # the terminal is gone

    def _spawn(self, slave: int) -> int:
        pid = os.fork()
        if pid:
            return pid
        try:  # the child: a new session whose controlling terminal is the slave
            os.setsid()
            fcntl.ioctl(slave, termios.TIOCSCTTY, 0)
            for fd in (0, 1, 2):
                os.dup2(slave, fd)
            signal.set_wakeup_fd(-1)
            for sig in _DEFAULT_IN_CHILD:
                signal.signal(sig, signal.SIG_DFL)
            os.execvpe(self.argv[0], self.argv, self.env)
        except BaseException as e:
            os.write(2, f"rw record: cannot start {self.argv[0]}: {e}\r\n".encode())
        finally:
            os._exit(127)

    def _raw(self) -> None:
        tty.setraw(self.stdin, termios.TCSANOW)  # TCSANOW: what was typed ahead is kept

    def _loop(self, master: int, wake: int) -> None:
        poll = select.poll()
        poll.register(master, select.POLLIN)
        poll.register(self.stdin, select.POLLIN)
        poll.register(wake, select.POLLIN)
        on_input = self._faulty_input if self.fault == "loop" else self._on_input
        self._watch = (self.stdin, wake)
        try:
            self._pump(master, wake, poll, on_input)
            if self.recording and self.splitter.pending:
                self._show(self._split(None))  # the last bytes: no mark's end will come
        except TerminalGone:
            self._hang_up(signal.SIGHUP)

    def _pump(self, master: int, wake: int, poll: select.poll, on_input: Callable) -> None:
        while self.status is None:
            held = self.recording and bool(self.splitter.pending)
            spooled = self.recording and self.spool.held > 0
            events = poll.poll(0 if spooled else QUIET_FLUSH_MS if held else None)
            if not events and spooled:
                self._flush_spool()  # (the output paused: what is held is written)
                continue
            if not events and held:
                self._show(self._split(None))
            for fd, ev in events:
                if fd == wake:
                    _drain(wake)
                    if self._on_signals(master):
                        return
                elif fd == master:
                    if ev & select.POLLOUT:
                        self._write_shell(master, poll)
                    if ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        if not self._on_output(master):
                            self._reap(block=True)
                            return
                elif fd == self.stdin:
                    if ev & select.POLLNVAL or not on_input(master, poll):
                        self._hang_up(signal.SIGHUP)
                        return
        self._drain_after_exit(master)

    # -- bytes ----------------------------------------------------------------

    def _on_output(self, master: int) -> bool:
        """Show (and record) what the shell printed; False when it is gone."""
        if self.recording and self.splitter.pending:
            return self._read_one(master)  # (the bytes held back go first)
        prefix = PREFIX if self.recording else b""
        shown, held, ended, gone = relay(master, self.stdout, self._watch, BATCH, prefix)
        if shown:  # shown already: it holds no mark
            if self.recording:
                self._split(shown)
            self.modes.feed(shown)
        if gone:
            raise TerminalGone()
        if held:
            self._show_output(held)
        return not ended

    def _read_one(self, master: int) -> bool:
        try:
            data = os.read(master, READ)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno == errno.EIO:  # every process on the slave is gone
                return False
            raise
        if not data:
            return False
        self._show_output(data)
        return True

    def _show_output(self, data: bytes) -> None:
        shown = self._split(data) if self.recording else data
        self.modes.feed(shown)
        self._show(shown)

    def _split(self, data: bytes | None) -> bytes:
        """The bytes to show for `data` (None: what the splitter holds back), with
        the pieces spooled; on any fault, recording stops and the bytes go on."""
        held = self.splitter.pending
        try:
            shown, pieces = self.splitter.feed(data) if data is not None else self.splitter.flush()
        except Exception as e:  # noqa: BLE001 - whatever it is, the shell goes on
            self._stop_recording(f"{type(e).__name__} in the mark splitter: {e}")
            return held + (data or b"")
        self._spooling(self.spool.handle, pieces)
        return shown

    def _flush_spool(self) -> None:
        self._spooling(self.spool.flush)

    def _spooling(self, write: Callable, *args: object) -> None:
        """`write(*args)` to the spool; on any fault, recording stops."""
        try:
            write(*args)
        except OSError as e:
            where = f" ({e.filename})" if e.filename else ""
            self._stop_recording(f"cannot write the output spool: {e.strerror or e}{where}")
        except Exception as e:  # noqa: BLE001
            self._stop_recording(f"{type(e).__name__} in the output spool: {e}")

    def _show(self, data: bytes) -> None:
        """Write all of `data` to the terminal: partial writes and EAGAIN (someone
        made it non-blocking) are waited out, never dropped."""
        if not write_all(self.stdout, data):
            raise TerminalGone()

    def _on_input(self, master: int, poll: select.poll) -> bool:
        """Pass what was typed to the shell (never recorded); False when the
        terminal is gone."""
        try:
            data = os.read(self.stdin, READ)
        except BlockingIOError:
            return True
        except OSError as e:
            if e.errno == errno.EIO:
                return False
            raise
        if not data:
            return False
        self._to_shell += data
        self._write_shell(master, poll)
        return True

    def _faulty_input(self, master: int, poll: select.poll) -> bool:
        os.read(self.stdin, READ)
        raise RuntimeError("injected fault (RW_RECORD_FAULT=loop)")

    def _write_shell(self, master: int, poll: select.poll) -> None:
        """Write typed bytes to the master without blocking: what does not fit
        waits for POLLOUT (a shell not reading must not stop its output)."""
        try:
            n = os.write(master, self._to_shell) if self._to_shell else 0
            del self._to_shell[:n]
        except BlockingIOError:
            pass
        except OSError as e:
            if e.errno != errno.EIO:
                raise
            self._to_shell.clear()
        poll.modify(master, select.POLLIN | (select.POLLOUT if self._to_shell else 0))

    # -- signals --------------------------------------------------------------

    def _on_signal(self, signum: int, frame: object) -> None:
        self._signals.append(signum)

    def _on_signals(self, master: int) -> bool:
        """Act on the signals received; True when the proxy must end now."""
        todo, self._signals = self._signals, []
        for sig in dict.fromkeys(todo):
            if sig == signal.SIGWINCH:
                self._resize(master)
            elif sig in (signal.SIGTERM, signal.SIGHUP):
                self._hang_up(sig)
                return True
            elif sig == signal.SIGTSTP:
                self._suspend(master)
            elif sig == signal.SIGCONT:
                self._raw()
                self._resize(master)
        self._reap(block=False)
        return False

    def _resize(self, master: int) -> None:
        size = window_size(self.stdin)
        fcntl.ioctl(master, termios.TIOCSWINSZ, size)  # the shell's job gets SIGWINCH
        if self.recording:
            try:
                self.spool.resize(columns_rows(size))
            except Exception as e:  # noqa: BLE001
                self._stop_recording(f"cannot write the output spool: {e}")

    def _suspend(self, master: int) -> None:
        """Stopped from outside (`kill -TSTP`): give the terminal back as it was
        while stopped, take it again on resume."""
        if self._saved is not None:
            termios.tcsetattr(self.stdin, termios.TCSADRAIN, self._saved)
        os.kill(os.getpid(), signal.SIGSTOP)
        self._raw()
        self._resize(master)

    def _hang_up(self, sig: int) -> None:
        """The proxy is told to end (or its terminal is gone): the shell gets the
        hangup a closing terminal gives, and the exit status says why."""
        for s in (signal.SIGHUP, signal.SIGCONT):
            try:
                os.kill(self.pid, s)
            except ProcessLookupError:
                pass
        self._reap(block=False)  # when it is already gone; init reaps it otherwise
        self.status = 128 + sig  # rw record's own end, whatever the shell's

    def _reap(self, block: bool) -> None:
        if self.status is not None:
            return
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return
        if pid == self.pid:
            code = os.waitstatus_to_exitcode(status)
            self.status = 128 - code if code < 0 else code

    def _drain_after_exit(self, master: int) -> None:
        """The shell ended: show what it printed last. A job it left behind may
        keep the terminal open and printing; it gets a second, then its hangup."""
        deadline = time.monotonic() + DRAIN_SECONDS
        while time.monotonic() < deadline:
            ready = select.select([master], [], [], 0.05)[0]
            if not ready or not self._on_output(master):
                return

    def _exit_status(self) -> int:
        return self.status if self.status is not None else 1

    # -- recording ------------------------------------------------------------

    def _stop_recording(self, why: str) -> None:
        self.recording = False
        self._stop_recording_quietly()
        msg = f"\r\nrw record: output recording stopped ({why}); your shell goes on\r\n"
        try:
            os.write(2, msg.encode(errors="replace"))
        except OSError:
            pass

    def _stop_recording_quietly(self) -> None:
        try:
            if self.recording:
                self.spool.handle(self.splitter.close())
            self.spool.close()
        except Exception:  # noqa: BLE001 - the end of a run must not fail on the spool
            pass


def _drain(fd: int) -> None:
    try:
        while os.read(fd, 4096):
            pass
    except BlockingIOError:
        pass


class _FaultySplitter(Splitter):
    """RW_RECORD_FAULT=splitter: fails at the first step of this run."""

    def feed(self, data: bytes) -> tuple[bytes, list]:
        shown, pieces = super().feed(data)
        if any(p.event == "C" for p in pieces):
            raise RuntimeError("injected fault (RW_RECORD_FAULT=splitter)")
        return shown, pieces


class _FaultySpool(OutputSpool):
    """RW_RECORD_FAULT=spool: the first write fails as on a full disk."""

    @staticmethod
    def _write(fd: int, record: bytes) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "(injected: RW_RECORD_FAULT=spool)")


# -- what `rw record` runs ------------------------------------------------------

SHELLS = ("bash", "zsh")


def resolve_shell(kind: str | None, env: dict[str, str]) -> str:
    """The shell to record: `kind` (bash or zsh; the login shell when None) as
    `$SHELL` or the passwd entry names it when they name that kind, else found
    on PATH."""
    import pwd
    import shutil

    try:
        login = pwd.getpwuid(os.getuid()).pw_shell
    except KeyError:
        login = ""
    candidates = [c for c in (env.get("SHELL", ""), login) if c]
    if kind is None:
        for c in candidates:
            if os.path.basename(c) in SHELLS:
                kind = os.path.basename(c)
                break
        else:
            named = candidates[0] if candidates else "unknown"
            raise RwError(f"your login shell is {named}; rw records bash and zsh: rw record bash")
    for c in candidates:
        if os.path.basename(c) == kind and os.access(c, os.X_OK):
            return c
    found = shutil.which(kind, path=env.get("PATH", os.defpath))
    if found is None:
        raise RwError(f"{kind} is not installed (not on PATH)")
    return found


def recorder_of(env: dict[str, str], fd: int = 0) -> int | None:
    """The pid of the `rw record` already recording the terminal `fd`, if one is.
    RW_RECORD inherited by a shell on another terminal (a tmux pane, an ssh
    login) names another terminal, or a recorder that is gone: it does not count."""
    parsed = parse_env(env.get(ENV, ""))
    if parsed is None:
        return None
    _, pid, tty_path = parsed
    try:
        if os.ttyname(fd) != tty_path:
            return None
        os.kill(pid, 0)
    except OSError:
        return None
    return pid


def record(
    shell: str, args: list[str], env: dict[str, str], spool_dir: Path,
    hooks: Callable[[dict[str, str]], list[str]] | None = None,
) -> int:  # fmt: skip
    """Run `shell` (interactive unless `args` say otherwise) under the recorder
    on this terminal; its exit status. Without `args`, `hooks` (when given)
    makes the shell's arguments and environment that load rw's hooks."""
    if not os.isatty(0):
        raise NotStarted("rw record needs a terminal: standard input is not one", EXIT_USAGE)
    env = dict(env)
    fault = env.pop("RW_RECORD_FAULT", "")
    if fault and fault not in FAULTS:
        raise NotStarted(
            f"RW_RECORD_FAULT={fault}: expected one of {', '.join(FAULTS)}", EXIT_USAGE
        )
    ensure_private_dir(spool_dir)
    token = secrets.token_hex(12)
    # RW_RECORD names the terminal, known once it exists: the proxy sets it.
    if not args and hooks is not None:
        try:
            args = hooks(env)
        except (OSError, RwError) as e:
            raise NotStarted(f"cannot load rw's hooks: {e}") from None
    argv = [shell, *(args or ["-i"])]
    splitter: Splitter = _FaultySplitter(token) if fault == "splitter" else Splitter(token)
    spool_cls = _FaultySpool if fault == "spool" else OutputSpool
    spool = spool_cls(spool_dir, hold=HELD)
    proxy = Proxy(argv, env, splitter, spool, fault=fault, token=token)
    try:
        return proxy.run()
    except Exception as e:  # noqa: BLE001 - the terminal is restored; one line, no traceback
        if not proxy.pid:
            raise NotStarted(f"the recorder could not start: {e}") from None
        raise RwError(f"the recorder failed: {e}", EXIT_PROBLEM) from None


class NotStarted(RwError):
    """The recorder failed before the shell started."""

    exit_code = EXIT_PROBLEM


def shell_instead(kind: str, env: dict[str, str], why: str) -> NoReturn:
    """Run the shell `kind` unrecorded in this process (`rw record --or-shell`,
    which the hooks exec: the terminal must get its shell whatever happens),
    after saying why once. RW_RECORD=off keeps its hooks from trying again."""
    os.write(2, f"rw: output is not recorded in this shell: {why}\n".encode(errors="replace"))
    env = {**env, ENV: "off"}
    env.pop("RW_RECORD_FAULT", None)
    try:
        shell = resolve_shell(kind, env)
    except RwError:
        shell = kind
    try:
        os.execvpe(shell, [shell, "-i"], env)
    except OSError as e:
        os.write(2, f"rw: cannot start {shell}: {e.strerror}\n".encode(errors="replace"))
        os._exit(127)

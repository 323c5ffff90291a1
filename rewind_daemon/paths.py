"""Where rw keeps things. `RW_HOME` moves every location at once (tests use it).

The runtime dir (socket, pid, lock, the hooks' scratch files and step
checkpoint FIFOs) is decided here and nowhere else. Without `RW_HOME` the
decision is made once per host and recorded in the data dir, so the daemon,
the hooks `rw init` renders and every command find the same directory even
when their environments disagree (`XDG_RUNTIME_DIR` set in one, not the other).
"""

from __future__ import annotations

import errno
import fcntl
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .errors import RwError

APP = "rw"
# The form of the session ids rw makes (digits and hex, see the hooks), loosely:
# letters, digits, `-` and `_`, so that no id can name a file outside its directory.
_SESSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    config_dir: Path
    runtime_dir: Path
    # Why the runtime dir is not the usual one, until the user has been told
    # (by `rw init`, at a shell's start); `runtime_note` says it for `rw doctor`.
    notice: str = ""

    @property
    def db(self) -> Path:
        return self.data_dir / "rw.db"

    @property
    def spool_dir(self) -> Path:
        # Persistent (not in the runtime dir): a spool must survive a reboot
        # until the daemon has ingested it.
        return self.data_dir / "spool"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "daemon.log"

    @property
    def config_file(self) -> Path:
        return self.config_dir / "config.toml"

    @property
    def socket(self) -> Path:
        return self.runtime_dir / "daemon.sock"

    @property
    def pid_file(self) -> Path:
        return self.runtime_dir / "daemon.pid"

    @property
    def lock_file(self) -> Path:
        return self.runtime_dir / "daemon.lock"

    @property
    def scratch_dir(self) -> Path:
        """The hooks' scratch files and the step checkpoint FIFOs: the runtime dir
        itself, so the daemon and the hooks cannot look in different places."""
        return self.runtime_dir

    @property
    def runtime_record(self) -> Path:
        """Names the runtime dir this host's rw uses (see the module's docstring)."""
        host = os.uname().nodename.replace("/", "_") or "localhost"
        return self.data_dir / f"runtime-{host}"

    @property
    def stop_file(self) -> Path:
        """There while the daemon is stopped on purpose (`rw daemon stop`): nothing
        starts it again on this host but `rw daemon start`."""
        host = os.uname().nodename.replace("/", "_") or "localhost"
        return self.data_dir / f"stopped-{host}"

    @property
    def runtime_note(self) -> str:
        try:
            return _read_record(self.runtime_record)[1]
        except OSError:
            return ""

    def notice_told(self) -> None:
        """The user has seen `notice`: no shell start repeats it."""
        try:
            runtime, note, _told = _read_record(self.runtime_record)
            if runtime == str(self.runtime_dir):
                _write_record(self.runtime_record, runtime, note, told=True)
        except OSError:
            pass


def resolve() -> Paths:
    home = os.environ.get("RW_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(root / "data", root / "config", root / "run")
    import platformdirs

    data = Path(platformdirs.user_data_dir(APP))
    config = Path(platformdirs.user_config_dir(APP))
    record = Paths(data, config, data).runtime_record
    try:
        recorded, note, told = _read_record(record)
    except OSError:
        recorded = ""
    if recorded and _private(Path(recorded)):
        return Paths(data, config, Path(recorded), "" if told else note)
    return Paths(data, config, *_decide_runtime(data, record))


def ensure_private_dir(path: Path) -> Path:
    """Create `path` 0700 if it is missing; refuse a symlink, a non-directory or
    another user's directory; take away any group or world access."""
    try:
        path.mkdir(mode=0o700, parents=True)
    except FileExistsError:
        pass
    except OSError as e:
        raise RwError(f"cannot create {path}: {e.strerror}") from None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as e:
        if e.errno in (errno.ELOOP, errno.ENOTDIR):
            raise RwError(f"{path} is a symlink or not a directory; refusing to use it") from None
        raise RwError(f"cannot use {path}: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_uid != os.getuid():
            raise RwError(f"{path} belongs to uid {st.st_uid}, not to you; refusing to use it")
        if st.st_mode & 0o077:
            os.fchmod(fd, 0o700)  # the directory opened, never what a name points to now
    finally:
        os.close(fd)
    return path


def is_session_id(sid: object) -> bool:
    """Whether `sid` has the form of the ids rw makes. Ids come from files (spools,
    imports), and become file names: no other form is stored or used."""
    return isinstance(sid, str) and _SESSION_ID.fullmatch(sid) is not None


def new_session_id() -> str:
    """An id in the same form as the hooks make: microseconds, pid, random."""
    import random
    import time

    return f"{int(time.time() * 1_000_000)}{os.getpid():05x}{random.getrandbits(16):04x}"


def current_session_id() -> str | None:
    """The session of the hooked shell this process was started from, if any."""
    return os.environ.get("RW_SESSION") or None


def session_file(directory: Path, sid: str, suffix: str) -> Path | None:
    """The file `directory`/`sid``suffix` of a session (its spool, ack FIFO, history
    scratch file), or None when `sid` is not a session id: it never names a file
    outside `directory`."""
    return directory / f"{sid}{suffix}" if is_session_id(sid) else None


def _private(path: Path) -> bool:
    """A directory of ours that nobody else can enter (a symlink is not)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077


def _safe_parent(path: Path) -> bool:
    """Nobody else can rename or replace entries of `path`: ours and not writable
    by others, or sticky (as /tmp is)."""
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISDIR(st.st_mode):
        return False
    if st.st_uid == os.getuid() and not st.st_mode & 0o022:
        return True
    return bool(st.st_mode & stat.S_ISVTX) and st.st_uid in (0, os.getuid())


def _read_record(record: Path) -> tuple[str, str, bool]:
    """(runtime dir, why it is a fallback, whether the user was told) as recorded."""
    lines = [*record.read_text().split("\n"), "", ""]
    return lines[0], lines[1], lines[2] == "told"


def _write_record(record: Path, runtime: str, note: str, told: bool = False) -> None:
    tmp = record.with_name(f"{record.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(f"{runtime}\n{note}\n{'told' if told else ''}\n")
    os.replace(tmp, record)


def _decide_runtime(data: Path, record: Path) -> tuple[Path, str]:
    """Choose the runtime dir: $XDG_RUNTIME_DIR/rw, else /tmp/rw-UID, else (someone
    else holds that name) a fresh private /tmp/rw-UID-XXXXXXXX; record it."""
    ensure_private_dir(data)
    uid = os.getuid()
    lock = os.open(f"{record}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            recorded, note, told = _read_record(record)
            if recorded and _private(Path(recorded)):
                return Path(recorded), "" if told else note  # decided meanwhile
        except OSError:
            pass
        refused = ""
        candidates = []
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isabs(xdg) and _private(Path(xdg)):
            candidates.append(Path(xdg) / APP)
        tmp = Path(tempfile.gettempdir())
        if _safe_parent(tmp):
            candidates.append(tmp / f"{APP}-{uid}")
        chosen = None
        for candidate in candidates:
            try:
                chosen = ensure_private_dir(candidate)
                break
            except RwError as e:
                refused = str(e)
        if chosen is None:
            # mkdtemp makes a new 0700 directory under a name nobody could take first.
            parent = tmp if _safe_parent(tmp) else data
            chosen = Path(tempfile.mkdtemp(prefix=f"{APP}-{uid}-", dir=parent))
        note = f"{refused}; using {chosen} instead" if refused else ""
        _write_record(record, str(chosen), note)
        return chosen, note
    finally:
        os.close(lock)

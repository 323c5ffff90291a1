"""Where rw keeps things. `RW_HOME` moves every location at once (tests use it)."""

from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

APP = "rw"
# The form of the session ids rw makes (digits and hex, see the hooks), loosely:
# letters, digits, `-` and `_`, so that no id can name a file outside its directory.
_SESSION_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z_-]{0,127}")


@dataclass(frozen=True)
class Paths:
    data_dir: Path
    config_dir: Path
    runtime_dir: Path

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
        """Per-command scratch files of the bash hook: memory-backed where possible,
        since rewriting a file on a disk filesystem costs ~0.3 ms per command."""
        xdg = os.environ.get("XDG_RUNTIME_DIR")
        if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
            return Path(xdg) / APP
        if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK):
            return Path(f"/dev/shm/{APP}-{os.getuid()}")
        return self.runtime_dir


def _runtime_default() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isdir(xdg) and os.access(xdg, os.W_OK):
        return Path(xdg) / APP
    # No per-user runtime dir (root over ssh, containers): a private dir in /tmp.
    return Path(tempfile.gettempdir()) / f"{APP}-{os.getuid()}"


def resolve() -> Paths:
    home = os.environ.get("RW_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(root / "data", root / "config", root / "run")
    import platformdirs

    return Paths(
        Path(platformdirs.user_data_dir(APP)),
        Path(platformdirs.user_config_dir(APP)),
        _runtime_default(),
    )


def ensure_private_dir(path: Path) -> Path:
    """Create `path` 0700 and make sure it is ours and not group/world accessible."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = path.lstat()
    if st.st_uid != os.getuid():
        from .errors import RwError

        raise RwError(f"{path} belongs to uid {st.st_uid}, not to you; refusing to use it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def is_session_id(sid: object) -> bool:
    """Whether `sid` has the form of the ids rw makes. Ids come from files (spools,
    imports), and become file names: no other form is stored or used."""
    return isinstance(sid, str) and _SESSION_ID.fullmatch(sid) is not None


def session_file(directory: Path, sid: str, suffix: str) -> Path | None:
    """The file `directory`/`sid``suffix` of a session (its spool, ack FIFO, history
    scratch file), or None when `sid` is not a session id: it never names a file
    outside `directory`."""
    return directory / f"{sid}{suffix}" if is_session_id(sid) else None

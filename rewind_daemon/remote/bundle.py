"""The bundle rw ships of itself to a remote: a zipapp of the running version
with its pure-Python dependencies, made from the installed package files (never
fetched), the same bytes for the same files, and cached here by version and by
what the files are, so a run does not make it again."""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import tempfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from .. import __version__
from ..errors import RwError
from ..paths import APP, ensure_private_dir

_SUFFIXES = (".py", ".typed", ".bash", ".zsh")
_WHEN = (1980, 1, 1, 0, 0, 0)  # every member's time: the same files make the same bytes
MAIN = "from rewind_daemon.cli import main\nmain()\n"
MANIFEST = "MANIFEST"  # {name: sha256} of every other member


@dataclass(frozen=True)
class Bundle:
    version: str
    data: bytes
    digest: str  # sha256 of data, hex

    @property
    def name(self) -> str:
        """The directory it lives in on a remote."""
        return f"{self.version}-{self.digest[:16]}"


def _files_of(package_dir: Path, prefix: str) -> list[tuple[str, Path]]:
    out = []
    for path in sorted(package_dir.rglob("*")):
        if "__pycache__" in path.parts or not path.is_file() or path.suffix not in _SUFFIXES:
            continue
        out.append((f"{prefix}/{path.relative_to(package_dir).as_posix()}", path))
    return out


def _tomli_dir() -> Path | None:
    """tomli for remotes older than Python 3.11: the installed one, or the copy
    pip carries (the same package)."""
    for name in ("tomli", "pip._vendor.tomli"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if module.__file__:
            return Path(module.__file__).parent
    return None


def sources() -> list[tuple[str, Path]]:
    """(name in the zipapp, file here) of everything the bundle holds."""
    import click
    import platformdirs

    import rewind_daemon

    files = _files_of(Path(rewind_daemon.__file__).parent, "rewind_daemon")
    hooks = resources.files("rewind_daemon.hooks")
    files = [f for f in files if not f[0].startswith("rewind_daemon/hooks/")]
    files += _files_of(Path(str(hooks)), "rewind_daemon/hooks")
    for module in (click, platformdirs):
        files += _files_of(Path(module.__file__).parent, module.__name__)  # type: ignore[arg-type]
    tomli = _tomli_dir()
    if tomli is not None:
        files += _files_of(tomli, "tomli")
    return files


def build(files: list[tuple[str, Path]]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        members = [("__main__.py", MAIN.encode())]
        members += [(name, path.read_bytes()) for name, path in files]
        # What the remote checks its unpacked copy against before each run.
        manifest = {name: hashlib.sha256(data).hexdigest() for name, data in members}
        members.append((MANIFEST, json.dumps(manifest, sort_keys=True).encode()))
        for name, data in sorted(members):
            info = zipfile.ZipInfo(name, _WHEN)
            info.external_attr = 0o644 << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, data)
    return buf.getvalue()


def cache_dir() -> Path:
    home = os.environ.get("RW_HOME")
    if home:
        return Path(home).expanduser().absolute() / "cache"
    import platformdirs

    return Path(platformdirs.user_cache_dir(APP))


def bundle() -> Bundle:
    """The bundle of this rw: from the cache when the files it is made of are as
    they were (names, sizes, times), else made and cached."""
    files = sources()
    key = hashlib.sha256(__version__.encode())
    for name, path in files:
        st = path.stat()
        key.update(f"{name}\0{st.st_size}\0{st.st_mtime_ns}\0".encode())
    try:
        where = ensure_private_dir(cache_dir() / "remote")
    except RwError:
        where = None
    cached = where / f"bundle-{__version__}-{key.hexdigest()[:24]}.pyz" if where else None
    data = None
    if cached is not None:
        try:
            data = cached.read_bytes()
        except OSError:
            data = None
    if data is None:
        data = build(files)
        if where is not None and cached is not None:
            _write_cached(where, cached, data)
    return Bundle(__version__, data, hashlib.sha256(data).hexdigest())


def _write_cached(where: Path, cached: Path, data: bytes) -> None:
    try:
        for old in where.glob("bundle-*.pyz"):
            if old != cached:
                old.unlink()  # an older version's, or files since changed
        fd, tmp = tempfile.mkstemp(dir=where, suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, cached)
    except OSError:
        pass  # made again next time

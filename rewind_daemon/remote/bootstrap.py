"""What runs first on the remote: a POSIX shell line that finds a Python >= 3.9,
which checks for the bundle in a per-user cache, takes it over the same
connection when it is missing or not as expected, and runs rw's remote side.

The remote then needs only `sh` and a `python3`: no root, pip or network.
"""

from __future__ import annotations

import base64
import shlex
import zlib

from .bundle import Bundle

NO_PYTHON = 97  # the stub's exit status when no Python >= 3.9 could be run
PYTHONS = ("python3", "python3.13", "python3.12", "python3.11", "python3.10", "python3.9")

# Runs on the remote under whatever python3 is there: it must read as Python to
# any Python 3, so that an older one gets to exit NO_PYTHON (no f-strings).
_STUB = r"""
import sys
if sys.version_info < (3, 9):
    sys.exit(%(no_python)d)
import hashlib, io, json, os, shutil, stat, tempfile, zipfile
NONCE, NAME, DIGEST = %(nonce)r, %(name)r, %(digest)r
R, W = sys.stdin.buffer, sys.stdout.buffer
def send(kind, doc):
    data = json.dumps(doc).encode()
    W.write(b"%%s %%d\n" %% (kind.encode(), len(data)) + data)
    W.flush()
def private(path):
    st = os.lstat(path)
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and not st.st_mode & 0o077
def good(where):
    try:
        if not private(where):
            return False
        with open(os.path.join(where, "lib", ".complete")) as fh:
            if fh.read() != DIGEST:
                return False
        with open(os.path.join(where, "rw.pyz"), "rb") as fh:
            data = fh.read()
        if hashlib.sha256(data).hexdigest() != DIGEST:
            return False
        manifest = json.loads(zipfile.ZipFile(io.BytesIO(data)).read("MANIFEST"))
        return as_unpacked(os.path.join(where, "lib"), manifest)
    except (OSError, ValueError, KeyError, zipfile.BadZipFile):
        return False
def sha256_of(path):
    h, fd = hashlib.sha256(), os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    try:
        while True:
            data = os.read(fd, 1 << 20)
            if not data:
                return h.hexdigest()
            h.update(data)
    finally:
        os.close(fd)
# lib/ is what runs: it must hold what the checked rw.pyz holds, byte for
# byte, and nothing else (a module there would shadow the standard library's)
# but Python's compiled files.
def as_unpacked(lib, manifest):
    seen, todo = 0, [("", lib)]
    while todo:
        rel, path = todo.pop()
        with os.scandir(path) as entries:
            for e in entries:
                name = rel + e.name
                if e.is_symlink():
                    return False
                if e.is_dir():
                    todo.append((name + "/", e.path))
                    continue
                if name in (".complete", "MANIFEST"):
                    continue
                if rel.endswith("__pycache__/") and e.name.endswith(".pyc"):
                    continue
                if manifest.get(name) != sha256_of(e.path):
                    return False
                seen += 1
    return seen == len(manifest)
home = os.path.expanduser("~")
cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(home, ".cache")
base = os.path.join(cache, "rw", "remote")
where = os.path.join(base, NAME)
W.write(b"\nRW-REMOTE %%s\n" %% NONCE.encode())
cached = good(where)
send("hello", {"python": sys.version.split()[0], "cached": cached, "home": home, "dir": where})
if not cached:
    header = R.readline(32).split()
    data = R.read(int(header[1])) if len(header) == 2 and header[0] == b"bundle" else b""
    if hashlib.sha256(data).hexdigest() != DIGEST:
        send("error", {"message": "the bundle of rw arrived damaged", "exit_code": 2})
        sys.exit(2)
    os.makedirs(base, mode=0o700, exist_ok=True)
    if not private(base):
        send("error", {"message": base + " is not a private directory of yours", "exit_code": 2})
        sys.exit(2)
    tmp = tempfile.mkdtemp(dir=base, prefix=".new-")
    with open(os.open(os.path.join(tmp, "rw.pyz"), os.O_WRONLY | os.O_CREAT, 0o600), "wb") as fh:
        fh.write(data)
    # Unpacked, so that Python keeps the compiled modules beside them (from
    # a zip it compiles every module again on every run).
    zipfile.ZipFile(os.path.join(tmp, "rw.pyz")).extractall(os.path.join(tmp, "lib"))
    with open(os.path.join(tmp, "lib", ".complete"), "w") as fh:
        fh.write(DIGEST)
    if os.path.lexists(where) and not good(where):
        shutil.rmtree(where, ignore_errors=True)
    try:
        os.rename(tmp, where)
    except OSError:  # another rw put it there meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
        if not good(where):
            send("error", {"message": "cannot put rw in " + where, "exit_code": 2})
            sys.exit(2)
    for old in os.listdir(base):
        if old != NAME and not old.startswith(".new-"):
            shutil.rmtree(os.path.join(base, old), ignore_errors=True)
sys.path.insert(0, os.path.join(where, "lib"))
from rewind_daemon.remote import agent
agent.serve(R, W, where)
"""


def stub(bundle: Bundle, nonce: str) -> str:
    code = _STUB % {
        "no_python": NO_PYTHON,
        "nonce": nonce,
        "name": bundle.name,
        "digest": bundle.digest,
    }
    packed = base64.b64encode(zlib.compress(code.encode(), 9)).decode()
    return f"import base64,zlib;exec(zlib.decompress(base64.b64decode('{packed}')))"


def no_python_line(nonce: str) -> str:
    return f"RW-NO-PYTHON {nonce}"


def remote_command(bundle: Bundle, nonce: str) -> str:
    """The command ssh asks the remote's login shell to run."""
    code = stub(bundle, nonce)
    script = (
        f'B="{code}"; for p in {" ".join(PYTHONS)}; do '
        'if command -v "$p" >/dev/null 2>&1; then "$p" -I -c "$B"; r=$?; '
        f'[ "$r" = {NO_PYTHON} ] || exit "$r"; fi; done; '
        f'echo "{no_python_line(nonce)}"; exit {NO_PYTHON}'
    )
    return f"exec /bin/sh -c {shlex.quote(script)}"

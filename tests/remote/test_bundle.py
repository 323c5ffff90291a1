"""The bundle rw ships of itself: what it holds, made the same way twice, cached."""

from __future__ import annotations

import ast
import io
import zipfile

from rewind_daemon import __version__
from rewind_daemon.remote.bundle import bundle


def test_the_bundle_holds_what_the_remote_side_needs_in_python_3_9(rw_home):
    b = bundle()
    z = zipfile.ZipFile(io.BytesIO(b.data))
    names = set(z.namelist())
    needed = {"__main__.py", "rewind_daemon/remote/agent.py", "rewind_daemon/hooks/rw.bash",
              "platformdirs/__init__.py", "tomli/__init__.py", "click/__init__.py"}  # fmt: skip
    assert needed <= names
    # What runs there for a guarded run (rw's modules, platformdirs, and tomli
    # where Python is older than 3.11) reads as Python 3.9.
    for name in names:
        if name.endswith(".py") and name.startswith(("rewind_daemon/", "platformdirs/", "tomli/")):
            ast.parse(z.read(name), name, feature_version=(3, 9))
    assert b.name.startswith(f"{__version__}-")


def test_the_same_files_make_the_same_bundle_which_is_cached(rw_home):
    first = bundle()
    [cached] = list((rw_home / "cache" / "remote").glob("bundle-*.pyz"))
    mtime = cached.stat().st_mtime_ns
    again = bundle()
    assert again.digest == first.digest and again.data == first.data
    assert cached.stat().st_mtime_ns == mtime  # read, not made again
    cached.unlink()
    assert bundle().data == first.data  # made again: the same bytes

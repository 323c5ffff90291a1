"""Starting the output worker (output_worker.py), as early as the daemon can.

A daemon started on a backlog of recorded output (after a reboot, or after
being stopped a while) shares it with the worker; the worker's start (an
interpreter and its imports) takes about as long as the daemon's own. So
`rw daemon run` starts it first, before importing the daemon, where the
output spools take START_BYTES on disk (their stored records are punched out,
so what they take is about what is left to read); the daemon keeps it when
its store says that much is left, and ends it otherwise. This module is
light: nothing of the daemon's is imported to start it.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    import subprocess  # (imported to start a worker: the worker itself imports this module)

START_BYTES = 8 << 20  # a backlog worth starting a worker for (its start: 0.2 s of CPU)
OUTPUT_SUFFIX = ".output"  # (output_spool.py's: a test checks they are the same)
FRAME_LEN = struct.Struct("<Q")  # (a frame: its length, then its bytes)


def write_frame(fh: IO[bytes], data: bytes) -> None:
    fh.write(FRAME_LEN.pack(len(data)))
    fh.write(data)
    fh.flush()


def spawn(recipe: tuple[Sequence, Sequence]) -> subprocess.Popen:
    """A fresh worker (`python -m rewind_daemon.capture.output_worker`, its
    descriptors closed, in a session of its own) given the redaction rules'
    `recipe`; it says READY on its stdout once started. OSError when it cannot
    be started."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "rewind_daemon.capture.output_worker"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
        close_fds=True, cwd="/", start_new_session=True,
    )  # fmt: skip
    assert proc.stdin is not None
    try:
        write_frame(proc.stdin, pickle.dumps(recipe, pickle.HIGHEST_PROTOCOL))
    except OSError:
        proc.kill()
        proc.wait()
        raise
    return proc


def backlog_on_disk(spool_dir: Path) -> int:
    """What the user's output spools in `spool_dir` take on disk, in bytes."""
    total = 0
    try:
        names = os.listdir(spool_dir)
    except OSError:
        return 0
    uid = os.getuid()
    for name in names:
        if not name.endswith(OUTPUT_SUFFIX):
            continue
        try:
            st = os.stat(spool_dir / name, follow_symlinks=False)
        except OSError:
            continue
        if st.st_uid == uid:
            total += st.st_blocks * 512
    return total


def early(spool_dir: Path, recipe: tuple[Sequence, Sequence]) -> subprocess.Popen | None:
    """A worker started now where the spools take START_BYTES on disk, else
    None (None too where it cannot be started: the daemon tries again, and
    says why)."""
    if backlog_on_disk(spool_dir) < START_BYTES:
        return None
    try:
        return spawn(recipe)
    except OSError:
        return None

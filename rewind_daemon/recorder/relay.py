"""The recorder's hot loop: the shell's output moved to the terminal read after
read, without a turn of the proxy's loop for each.

`relay` reads the master while it has output and nothing else wants the proxy
(typed input, a signal: the file descriptors in `watch`), writes each read to
the terminal at once, as `script` does, and returns what it showed in one
piece, which the splitter and the spool then take whole: a burst of output
costs the proxy one turn per `limit` bytes, not one per read (a few KiB). A
read that holds a mark, or a start of one at its end (`prefix`; empty: no
marks are looked for), is not shown: it is returned for the splitter, which
removes the mark before the terminal gets the bytes. The caller has polled the
master: the first read needs no poll.

It returns (shown, held, ended, gone): the bytes read and written, in order;
the read after them that was not shown (b"" or one read); whether the master
is at its end (every process on the slave is gone); whether the terminal is
(a write failed with EIO or EPIPE; what was being written counts as shown).

In C (_relay.c) where it was built: per read, the system calls `script` makes
and nothing else; this is the same in Python, the reference the tests hold the
C to.
"""

from __future__ import annotations

import errno
import os
import select
from typing import Sequence

READ = 1 << 16


def may_mark(data: bytes, prefix: bytes) -> bool:
    """Whether `data` holds `prefix` or, at its end, a start of it."""
    if not prefix:
        return False
    if prefix in data:
        return True
    first = prefix[0]
    for i in range(max(0, len(data) - len(prefix) + 1), len(data)):
        if data[i] == first and prefix.startswith(data[i:]):
            return True
    return False


def write_all(fd: int, data: bytes) -> bool:
    """Write all of `data` to `fd`, EAGAIN waited out; False when the terminal
    is gone."""
    view = memoryview(data)
    while view:
        try:
            n = os.write(fd, view)
        except BlockingIOError:
            select.select([], [fd], [], 1.0)
            continue
        except OSError as e:
            if e.errno in (errno.EIO, errno.EPIPE):
                return False
            raise
        view = view[n:]
    return True


def relay_py(
    master: int, out: int, watch: Sequence[int], limit: int, prefix: bytes
) -> tuple[bytes, bytes, bool, bool]:
    if limit < 1:
        raise ValueError("limit must be at least 1")
    shown: list[bytes] = []
    size = 0
    poll: select.poll | None = None
    while True:
        try:
            data = os.read(master, min(READ, limit - size))
        except BlockingIOError:
            break
        except OSError as e:
            if e.errno == errno.EIO:
                return b"".join(shown), b"", True, False
            raise
        if not data:
            return b"".join(shown), b"", True, False
        if may_mark(data, prefix):
            return b"".join(shown), data, False, False
        shown.append(data)
        size += len(data)
        if not write_all(out, data):
            return b"".join(shown), b"", False, True
        if size >= limit:
            break
        if poll is None:
            poll = select.poll()
            for fd in (master, *watch):
                poll.register(fd, select.POLLIN)
        ready = poll.poll(0)
        if not ready or any(fd != master for fd, _ in ready):
            break
    return b"".join(shown), b"", False, False


try:
    from ._relay import relay
except ImportError:  # built without a C compiler: the same, slower
    relay = relay_py


def in_c() -> bool:
    return relay is not relay_py

"""The few system calls Python's os module lacks, through libc (loaded on
first use: importing ctypes costs 13-20 ms, which most rw commands need not pay)."""

from __future__ import annotations

import errno
import os
import struct

_libc = None
_EVENT = struct.Struct("iIII")  # struct inotify_event, before its name


def libc():
    global _libc
    if _libc is None:
        import ctypes
        import ctypes.util

        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    return _libc


def syncfs(fd: int) -> None:
    """Flush the whole filesystem holding fd (fsync of fd where there is no
    syncfs); OSError when the kernel reports that it could not."""
    if libc().syncfs(fd) != 0:
        import ctypes

        err = ctypes.get_errno()
        if err != errno.ENOSYS:
            raise OSError(err, os.strerror(err))
        os.fsync(fd)


class Inotify:
    """An inotify instance (non-blocking), through libc."""

    MODIFY, ATTRIB, CLOSE_WRITE = 0x2, 0x4, 0x8
    MOVED_FROM, MOVED_TO, CREATE, DELETE = 0x40, 0x80, 0x100, 0x200
    DELETE_SELF, MOVE_SELF, UNMOUNT = 0x400, 0x800, 0x2000
    Q_OVERFLOW, IGNORED, ISDIR = 0x4000, 0x8000, 0x40000000
    ONLYDIR, DONT_FOLLOW = 0x01000000, 0x02000000

    def __init__(self) -> None:
        self.fd = libc().inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise _os_error("inotify_init1")

    def add(self, path: str | os.PathLike, mask: int) -> int:
        """Watch `path`; its watch descriptor (the same for the same inode)."""
        wd = libc().inotify_add_watch(self.fd, os.fsencode(path), mask)
        if wd < 0:
            raise _os_error(os.fsdecode(path))
        return wd

    def remove(self, wd: int) -> None:
        libc().inotify_rm_watch(self.fd, wd)

    def read(self) -> dict[tuple[int, str], int]:
        """The events waiting, merged: (watch descriptor, name or "") -> the
        union of their masks. (A restore raises several per file it writes.)"""
        merged: dict[tuple[int, bytes], int] = {}
        unpack = _EVENT.unpack_from
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                break
            pos, end = 0, len(data)
            while pos + 16 <= end:
                wd, mask, _cookie, length = unpack(data, pos)
                key = (wd, data[pos + 16 : pos + 16 + length])
                merged[key] = merged.get(key, 0) | mask
                pos += 16 + length
        return {(wd, os.fsdecode(raw.rstrip(b"\0"))): mask for (wd, raw), mask in merged.items()}

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _os_error(what: str) -> OSError:
    import ctypes

    err = ctypes.get_errno()
    return OSError(err, os.strerror(err), what)

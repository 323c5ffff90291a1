"""The few system calls Python's os module lacks, through libc (loaded on
first use: importing ctypes costs 13-20 ms, which most rw commands need not pay)."""

from __future__ import annotations

import errno
import os

_libc = None
_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
# renameat2 cannot exchange here (old kernel or libc, or a filesystem
# without it), or b is gone: os.replace does instead.
_NO_EXCHANGE = {errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EXDEV, errno.ENOENT}


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


def exchange(a: str, b: str) -> bool:
    """Swap the names a and b atomically (renameat2 RENAME_EXCHANGE); False
    when that cannot be done here, having changed nothing."""
    lib = libc()
    if getattr(lib, "renameat2", None) is None:
        return False
    if lib.renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    import ctypes

    err = ctypes.get_errno()
    if err in _NO_EXCHANGE:
        return False
    raise OSError(err, os.strerror(err), b)

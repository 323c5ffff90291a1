"""Who is at the other end of a TCP connection to `rw dap --port`: a debug
session runs commands as the user who started it, so a connection is served
only when its peer is positively known to be that user, or is on another
machine (see docs/security.md).

The kernel's socket table (/proc/net/tcp, /proc/net/tcp6) is the one place
that names the owner of a local TCP socket. It is read before a byte of the
connection is, and read strictly: the peer's own entry (its address and port
as local, ours as remote) must be there once, ESTABLISHED, beside our own
entry for this very socket (same inode, ESTABLISHED). Anything else is
refused: a peer that is gone (getpeername fails, or its socket is closed or
reset and out of the table, while what it sent can still be read), an entry
left in TIME_WAIT or FIN_WAIT (the kernel shows uid 0 for those), two entries,
or a table that cannot be read. A peer on an address of this machine with no
entry is never taken for a remote one."""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import sys
from dataclasses import dataclass

ESTABLISHED = "01"  # the `st` column of /proc/net/tcp


@dataclass(frozen=True)
class Peer:
    uid: int | None  # None: on another machine (nothing here owns it)
    refused: str | None = None  # why it cannot be served; None when it can be judged


def peer(conn: socket.socket) -> Peer:
    """The owner of the other end of `conn`, or why it is not known."""
    try:
        here, there = conn.getsockname(), conn.getpeername()
    except OSError as e:
        return Peer(None, f"its address is gone ({e.strerror or e})")
    family = conn.family
    table = "/proc/net/tcp6" if family == socket.AF_INET6 else "/proc/net/tcp"
    theirs_key = (proc_address(family, there), proc_address(family, here))
    ours_key = (theirs_key[1], theirs_key[0])
    try:
        inode = str(os.fstat(conn.fileno()).st_ino)
        with open(table) as f:
            rows = [line.split() for line in f.readlines()[1:]]
    except (OSError, ValueError) as e:
        return Peer(None, f"{table} cannot be read ({e})")
    theirs = [r for r in rows if len(r) > 9 and (r[1], r[2]) == theirs_key]
    ours = [r for r in rows if len(r) > 9 and (r[1], r[2]) == ours_key and r[9] == inode]
    if len(ours) != 1 or ours[0][3] != ESTABLISHED:
        return Peer(None, "the connection is no longer established")
    if not theirs:
        if is_local_address(family, there[0]):
            return Peer(None, f"no socket of this machine is at {there[0]} port {there[1]}")
        return Peer(None)  # another machine's
    if len(theirs) > 1:
        return Peer(None, f"{len(theirs)} sockets claim {there[0]} port {there[1]}")
    if theirs[0][3] != ESTABLISHED:
        return Peer(None, "the other end is no longer established")
    try:
        return Peer(int(theirs[0][7]))
    except ValueError:
        return Peer(None, f"{table} gives no uid for it")


def is_local_address(family: int, host: str) -> bool:
    """Whether `host` is an address of this machine: loopback, or one a socket
    can be bound to here (the kernel's word). When in doubt, it is."""
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return True
    if ip.is_loopback or ip.is_unspecified:
        return True
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return is_local_address(socket.AF_INET, str(ip.ipv4_mapped))
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.bind((host, 0))
    except OSError as e:
        return e.errno != errno.EADDRNOTAVAIL
    finally:
        probe.close()
    return True


def proc_address(family: int, address: tuple) -> str:
    """An address as /proc/net/tcp shows it: each 32-bit word of the IP in host
    order, in hex, then the port."""
    packed = socket.inet_pton(family, address[0].split("%", 1)[0])
    words = [packed[i : i + 4] for i in range(0, len(packed), 4)]
    ip = "".join(
        (bytes(reversed(w)) if sys.byteorder == "little" else w).hex().upper() for w in words
    )
    return f"{ip}:{address[1]:04X}"

"""Serving debug sessions: one on stdin and stdout, or one per connection on
a TCP port (loopback unless told otherwise)."""

from __future__ import annotations

import io
import os
import socket
import sys
import threading
from collections.abc import Callable

from ..errors import RwError
from .framing import Reader, Writer
from .peer import peer
from .session import DebugSession


def serve_stdio() -> None:
    """One session on stdin and stdout. Anything else that writes to stdout
    (fd 1) goes to stderr instead: the protocol's stream stays whole."""
    protocol_out = os.dup(1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(protocol_out, "wb", buffering=0) as out:
        reader = Reader(io.BufferedReader(io.FileIO(os.dup(0), "rb", closefd=True)))
        DebugSession(reader, Writer(out)).serve()


def serve_tcp(host: str, port: int, ready: Callable[[str, int], None]) -> None:
    """Sessions on `host:port`, one per connection, until interrupted."""
    _hold_fds_3_and_4()
    try:
        listener = socket.create_server((host, port), family=_family(host), reuse_port=False)
    except OSError as e:
        raise RwError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sessions: set[DebugSession] = set()
    try:
        with listener:
            bound = listener.getsockname()
            ready(bound[0], bound[1])
            while True:
                conn, _ = listener.accept()
                threading.Thread(
                    target=_serve_connection, args=(conn, sessions), daemon=True
                ).start()
    finally:
        for session in list(sessions):
            session.kill()  # no shell a session started outlives the server


def _hold_fds_3_and_4() -> None:
    """Keep fds 3 and 4 open for the server's life (on /dev/null where free):
    each session's shell is started with pass_fds=(3, 4) and its pipes put
    there, and starting it while either was closed in this process (the
    socket of a connection that just ended) failed with EBADF."""
    for fd in (3, 4):
        try:
            os.fstat(fd)
        except OSError:
            null = os.open(os.devnull, os.O_RDONLY)
            if null != fd:
                os.dup2(null, fd, inheritable=False)
                os.close(null)


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _serve_connection(conn: socket.socket, sessions: set[DebugSession]) -> None:
    with conn:
        # a debug session runs commands as this user: another one may not, and
        # one that cannot be told apart from another one may not either
        who = peer(conn)
        if who.refused or (who.uid is not None and who.uid != os.getuid()):
            why = f": {who.refused}" if who.refused else f" from uid {who.uid}"
            print(f"rw dap: refused a connection{why}", file=sys.stderr)
            return
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        rfile, wfile = conn.makefile("rb"), conn.makefile("wb")
        session = DebugSession(Reader(rfile), Writer(wfile))
        sessions.add(session)
        try:
            session.serve()
        finally:
            sessions.discard(session)
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            # the socket is closed now, not whenever the session is collected
            for f in (rfile, wfile):
                try:
                    f.close()
                except OSError:
                    pass

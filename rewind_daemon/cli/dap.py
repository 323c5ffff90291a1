"""The debugger: `rw dap`, a Debug Adapter Protocol server."""

from __future__ import annotations

import signal
import sys

import click

from ..dap import server
from ..errors import RwError
from . import CONTEXT, cli

DEFAULT_HOST = "127.0.0.1"


@cli.command(context_settings=CONTEXT)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve on this TCP port (0: any free one, said on stderr) instead of stdio.",
)
@click.option("--host", default=DEFAULT_HOST, show_default=True,
              help="With --port: the address to listen on (anything but loopback lets "
              "other machines run commands as you).")  # fmt: skip
def dap(port: int | None, host: str) -> None:
    """Debug a shell script in your editor, over the Debug Adapter Protocol.

    On stdin and stdout by default (VS Code's executable adapters, nvim-dap's
    `type = 'executable'`); with --port, one debug session per connection until
    stopped (VS Code's debugServer, nvim-dap's `type = 'server'`).

    \b
    Example:
        rw dap                 # started by the editor
        rw dap --port 4711     # then "debugServer": 4711 in launch.json
    """
    # SIGTERM (an editor ending its adapter) ends the sessions as a disconnect
    # does: no shell they started is left behind.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    if port is None:
        if host != DEFAULT_HOST:
            raise RwError("--host is for --port: stdio has no address")
        server.serve_stdio()
        return

    def ready(where: str, bound: int) -> None:
        click.echo(f"rw dap: listening on {where}:{bound}", err=True)

    try:
        server.serve_tcp(host, port, ready)
    except KeyboardInterrupt:
        pass

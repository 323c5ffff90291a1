"""The debugger: `rw dap`, a Debug Adapter Protocol server."""

from __future__ import annotations

import click

from ..dap import server
from . import CONTEXT, cli


@cli.command(context_settings=CONTEXT)
@click.option(
    "--port",
    type=click.IntRange(0, 65535),
    default=None,
    help="Serve on this TCP port (0: any free one, said on stderr) instead of stdio.",
)
@click.option("--host", default="127.0.0.1", show_default=True,
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
    if port is None:
        server.serve_stdio()
        return

    def ready(where: str, bound: int) -> None:
        click.echo(f"rw dap: listening on {where}:{bound}", err=True)

    try:
        server.serve_tcp(host, port, ready)
    except KeyboardInterrupt:
        pass

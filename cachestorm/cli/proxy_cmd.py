"""`cachestorm proxy serve`: run the Toxiproxy-compatible chaos proxy in the foreground."""

from __future__ import annotations

import typer

app = typer.Typer(help="cachestorm's Toxiproxy-compatible fault proxy.", no_args_is_help=True)


@app.command()
def serve(
    host: str = typer.Option("127.0.0.1", help="API address (keep it on loopback unless you mean it)."),
    port: int = typer.Option(8474, help="API port (0 = any free port)."),
    config: str = typer.Option(None, "--config", help="Populate JSON file: a list of {name, listen, upstream}."),
    busy_poll_us: int = typer.Option(0, help="Busy-poll this long after the last chunk (lower latency, burns CPU)."),
    allow_unix: list[str] = typer.Option([], "--allow-unix", metavar="PATH",
                                         help="A Unix socket (or a folder of them) proxies may forward to; repeatable."),
    allow_remote: bool = typer.Option(False, "--allow-remote",
                                      help="Allow any listen address, privileged ports and any Unix upstream."),
) -> None:
    """Serve the Toxiproxy v2 API (plus /metrics) until Ctrl-C."""
    from cachestorm.chaos.proxy import fastpath
    from cachestorm.chaos.proxy.guard import AddressGuard
    from cachestorm.chaos.proxy.server import run

    def announce(server) -> None:
        names = ", ".join(sorted(server.app.proxies)) or "none yet"
        typer.echo(f"cachestorm proxy API on {server.api_url} (proxies: {names}); Ctrl-C stops")
        if fastpath.kernel_available():
            forwarding = "in the kernel (BPF sockmap)"
        elif fastpath.available():
            forwarding = "by the native epoll engine (no BPF sockmap here: needs root or CAP_BPF, Linux >= 5.13)"
        else:
            forwarding = "in Python (native engine not built)"
        typer.echo(f"connections without a toxic are forwarded {forwarding}")

    run(host, port, config, on_ready=announce, busy_poll_us=busy_poll_us,
        guard=AddressGuard.of(allow_remote, allow_unix))
    typer.echo("proxy stopped")

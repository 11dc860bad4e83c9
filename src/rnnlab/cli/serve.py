"""`rnnlab serve`: the playground, trained runs in a browser, and the classifier over HTTP."""

from __future__ import annotations

import ipaddress
import json
import socket
from pathlib import Path

import typer
from rich.console import Console

from rnnlab.cli.app import app
from rnnlab.cli.app import fail as _fail

SERVE_EPILOG = """
[bold]Examples[/]

  rnnlab serve
      the playground alone, at http://127.0.0.1:8000/

  rnnlab serve runs/emotion
      and a run's page at /run/emotion; POST /predict answers with its labels

  rnnlab serve runs/emotion runs/irony --port 0
      two runs (a request names one with "run"), on any free port

  rnnlab serve runs/emotion --host 0.0.0.0
      reachable from other machines: there is no authentication

  curl -s localhost:8000/predict -d '{"texts": ["so happy today"]}'
"""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (port 0: a free one); OSError when it cannot be had."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


@app.command(epilog=SERVE_EPILOG)
def serve(
    runs: list[Path] | None = typer.Argument(None, help="Run folders from `rnnlab train` or `rnnlab demo`."),
    host: str = typer.Option("127.0.0.1", "--host", help="Address to listen on; other than loopback, it warns."),
    port: int = typer.Option(8000, "--port", help="Port to listen on (0: any free port)."),
    as_json: bool = typer.Option(False, "--json", help="Print the address and runs as one JSON line; no access log."),
) -> None:
    """Serve the playground and the runs: pages in a browser, and POST /predict, /trace, /explain.

    Runs are loaded once, at start. Requests are bounded: 1 MB bodies, 1000 texts of 10,000 characters.
    """
    from rnnlab.serve import ServeError, create_app, load_runs

    err = Console(stderr=True)
    if not 0 <= port <= 65535:
        _fail(f"--port must be from 0 to 65535; got {port}.")
    try:
        loaded = load_runs(runs or [])
    except ServeError as e:
        _fail(str(e))
    try:
        sock = bind(host, port)
    except (OSError, UnicodeError) as e:
        _fail(f"cannot listen on {host}:{port}: {e.strerror or e}")
    if not is_loopback(host):
        err.print(f"[bold yellow]warning:[/] listening on {host}: anyone who can reach this machine on port "
                  f"{sock.getsockname()[1]} can use the API; it has no authentication.", highlight=False)
    bound_host, bound_port = sock.getsockname()[:2]
    shown = f"[{bound_host}]" if ":" in bound_host else bound_host
    url = f"http://{shown}:{bound_port}/"
    if as_json:
        typer.echo(json.dumps({"url": url, "host": bound_host, "port": bound_port, "runs": list(loaded)}))
    else:
        out = Console()
        out.print(f"serving on [bold]{url}[/] (the playground)", highlight=False)
        out.print(f"  the API: {url}docs", highlight=False)
        for name in loaded:
            out.print(f"  run {name}: {url}run/{name}", highlight=False)
    import uvicorn

    from rnnlab.serve.limits import MAX_CONNECTIONS

    config = uvicorn.Config(create_app(loaded), log_level="warning" if as_json else "info",
                            access_log=not as_json, limit_concurrency=MAX_CONNECTIONS)
    uvicorn.Server(config).run(sockets=[sock])

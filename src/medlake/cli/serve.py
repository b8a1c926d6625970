"""``medlake serve``: the HTTP API for a workspace, with Uvicorn."""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import WorkspaceOption
from medlake.cli.render import console
from medlake.errors import UsageError


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)


def serve(
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", help="TCP port.")] = 8730,
    tls_cert: Annotated[
        Path | None, typer.Option("--tls-cert", help="PEM certificate: serve HTTPS.")
    ] = None,
    tls_key: Annotated[Path | None, typer.Option("--tls-key", help="PEM private key.")] = None,
    mllp_port: Annotated[
        int | None,
        typer.Option(
            "--mllp-port",
            min=0,
            max=65535,
            help="Also receive HL7 v2 over MLLP on this port ([listen] port).",
        ),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /api/v1/docs) until interrupted; with --mllp-port
    (or [listen] port) also the HL7 v2 listener, ingesting into the lake it serves."""
    import uvicorn

    from medlake.access import Permission
    from medlake.config import open_workspace
    from medlake.server.app import create_app
    from medlake.service.listen import bind_listener
    from medlake.service.policy import require

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    opened = open_workspace(workspace)
    listen = opened.settings.listen
    port_for_mllp = mllp_port if mllp_port is not None else listen.port
    mllp_socket = None
    if port_for_mllp is not None:
        # Checked now, so a user who may not ingest or a port in use is one line before
        # anything starts, not a traceback from the server's start.
        require(opened, Permission.INGEST)  # the listener's ingests run as this user
        mllp_socket = bind_listener(listen.host, port_for_mllp)
        bound = mllp_socket.getsockname()[1]
        console.print(f"HL7 v2 (MLLP) listener on {listen.host}:{bound} for "
                      f"{listen.source_system}, ingesting every "
                      f"{listen.ingest_every_seconds:g} s", highlight=False)  # fmt: skip
    application = create_app(workspace, mllp_port=port_for_mllp, mllp_socket=mllp_socket)
    uvicorn.run(application, host=host, port=port, log_level="info",
                ssl_certfile=str(tls_cert) if tls_cert else None,
                ssl_keyfile=str(tls_key) if tls_key else None)  # fmt: skip


#: ``make demo`` ends by serving the demo workspace unless this is "0" (or ``$CI`` is set:
#: a CI run must never block on a server).
DEMO_SERVE_ENV = "MEDLAKE_DEMO_SERVE"


def demo_should_serve() -> bool:
    return os.environ.get(DEMO_SERVE_ENV, "1") != "0" and not os.environ.get("CI")


def serve_demo(workspace: Path, login: str | None, token: str | None, port: int = 8730) -> None:
    """Serve ``workspace`` on localhost until interrupted, after printing where and how
    to sign in (the next free port when ``port`` is taken)."""
    import uvicorn

    from medlake.server.app import create_app

    chosen = port if _port_free(port) else _free_port()
    application = create_app(workspace)
    url = f"http://127.0.0.1:{chosen}/"
    console.print(f"\nServing the demo at [bold]{url}[/] (API: {url}api/v1/docs); stop with "
                  f"Ctrl-C; {DEMO_SERVE_ENV}=0 skips this.", highlight=False)  # fmt: skip
    if login and token:
        console.print(f"Sign in as [bold]{login}[/] with the token {token}", highlight=False,
                      soft_wrap=True)  # fmt: skip
    uvicorn.run(application, host="127.0.0.1", port=chosen, log_level="warning")


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])

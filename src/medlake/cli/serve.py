"""``medlake serve``: the HTTP API for a workspace, with Uvicorn."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import WorkspaceOption
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
    workspace: WorkspaceOption = None,
) -> None:
    """Serve the HTTP API (OpenAPI at /api/v1/docs) until interrupted."""
    import uvicorn

    from medlake.server.app import create_app

    if (tls_cert is None) != (tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    for path in (tls_cert, tls_key):
        if path is not None and not path.is_file():
            raise UsageError(f"{path}: no such file")
    application = create_app(workspace)
    uvicorn.run(application, host=host, port=port, log_level="info",
                ssl_certfile=str(tls_cert) if tls_cert else None,
                ssl_keyfile=str(tls_key) if tls_key else None)  # fmt: skip

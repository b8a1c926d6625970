"""``medlake listen``: receive HL7 v2 over MLLP, acknowledge after durable landing."""

from __future__ import annotations

from typing import Annotated

import typer

from medlake.cli.options import WorkspaceOption
from medlake.cli.render import console
from medlake.config import open_workspace
from medlake.errors import UsageError
from medlake.service.listen import listen as run_listener
from medlake.service.listen import refuse_if_lake_held


def register(app: typer.Typer) -> None:
    app.command("listen")(listen)


def listen(
    port: Annotated[
        int | None,
        typer.Option(min=0, max=65535, help="TCP port to listen on (default: [listen] port)."),
    ] = None,
    host: Annotated[
        str | None, typer.Option(help="Address to bind (default: [listen] host, 127.0.0.1).")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="Source system the messages come from (default: [listen], lis)."),
    ] = None,
    ingest_every: Annotated[
        float | None,
        typer.Option(min=0.1, help="Seconds between ingests (default: [listen], 5)."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Listen for HL7 v2 messages (MLLP): AA only once landed (fsync), AE/AR with the reason.

    Options not given come from the ``[listen]`` section of ``medlake.toml``, the one
    ``medlake serve`` reads for its own listener.
    """
    opened = open_workspace(workspace)
    settings = opened.settings.listen
    port = settings.port if port is None else port
    if port is None:
        raise UsageError("medlake listen: give --port, or set listen.port in medlake.toml")
    host = settings.host if host is None else host
    source = settings.source_system if source is None else source
    every = settings.ingest_every_seconds if ingest_every is None else ingest_every

    # While 'medlake serve' holds the lake, its own listener is the one to use.
    refuse_if_lake_held(opened)

    def ready(bound: int) -> None:
        console.print(f"listening on [bold]{host}:{bound}[/] for {source} (Ctrl-C to stop)")

    service = run_listener(opened.root, host, port, source, ingest_every=every, ready=ready)
    console.print(f"stopped; {service.landed:,} messages landed")

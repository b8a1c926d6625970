"""``medlake listen``: receive HL7 v2 over MLLP, acknowledge after durable landing."""

from __future__ import annotations

from typing import Annotated

import typer

from medlake.cli.options import WorkspaceOption
from medlake.cli.render import console
from medlake.config import open_workspace
from medlake.service.listen import listen as run_listener
from medlake.service.listen import refuse_if_lake_held


def register(app: typer.Typer) -> None:
    app.command("listen")(listen)


def listen(
    port: Annotated[int, typer.Option(min=0, max=65535, help="TCP port to listen on.")],
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 for all).")] = "127.0.0.1",
    source: Annotated[str, typer.Option(help="Source system the messages come from.")] = "lis",
    ingest_every: Annotated[
        float, typer.Option(min=0.1, help="Seconds between ingests of landed messages.")
    ] = 30.0,
    workspace: WorkspaceOption = None,
) -> None:
    """Listen for HL7 v2 messages (MLLP): AA only once landed (fsync), AE/AR with the reason."""

    # While 'medlake serve' holds the lake, its own listener is the one to use.
    refuse_if_lake_held(open_workspace(workspace))

    def ready(bound: int) -> None:
        console.print(f"listening on [bold]{host}:{bound}[/] for {source} (Ctrl-C to stop)")

    service = run_listener(workspace, host, port, source, ingest_every=ingest_every, ready=ready)
    console.print(f"stopped; {service.landed:,} messages landed")

"""``medlake rebuild``: recreate the lake from landing alone."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, error_console, print_json, progress_bar
from medlake.service.rebuild import rebuild as rebuild_lake


def register(app: typer.Typer) -> None:
    app.command("rebuild")(rebuild)


def rebuild(
    to: Annotated[
        Path | None,
        typer.Option("--to", help="Rebuild into this new folder; the live lake is untouched."),
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Recreate the lake from landing alone, replaying every recorded ingest run in order."""
    with progress_bar("replaying ingest runs") as progress:
        result = rebuild_lake(workspace, to=to, progress=progress)
    if json:
        print_json(result.as_dict())
    else:
        console.print(
            f"rebuilt {result.lake} from {result.runs} ingest runs ({result.batches} batches) "
            f"in {result.seconds:.1f} s; vocabulary: {result.vocabulary}",
            highlight=False,
        )
        if result.previous_lake is not None and to is None:
            console.print(f"the previous lake is kept as {result.previous_lake}", highlight=False)
        if result.differences == []:
            console.print("same content as the previous lake (every table's rows and checksum)")
        elif result.differences:
            console.print(f"{len(result.differences)} tables differ from the previous lake:")
            for line in result.differences[:20]:
                console.print(f"  {line}", highlight=False)
    for line in result.failed:
        error_console.print(f"[bold red]failed:[/] {line}", highlight=False)
    if result.failed:
        raise typer.Exit(1)

"""``medlake vocab``: load OHDSI Athena vocabularies (or the bundled demo vocabulary)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import WorkspaceOption
from medlake.cli.render import console, print_table, progress_bar
from medlake.service import vocabulary as service

app = typer.Typer(help="Load OMOP vocabularies into the lake.", no_args_is_help=True)


@app.command("load")
def load(
    directory: Annotated[
        Path,
        typer.Argument(help="Folder of Athena vocabulary files (CONCEPT.csv, ... tab-separated)."),
    ],
    workspace: WorkspaceOption = None,
) -> None:
    """Replace the lake's vocabulary tables with an Athena download."""
    with progress_bar("loading vocabulary") as progress:
        summary = service.load_vocabulary(workspace, directory, progress=progress)
    _print(summary)


@app.command("demo")
def demo(workspace: WorkspaceOption = None) -> None:
    """Replace the lake's vocabulary tables with the bundled demo vocabulary."""
    _print(service.load_vocabulary(workspace, None))


def _print(summary: object) -> None:
    rows = getattr(summary, "as_rows", lambda: [])()
    print_table("Vocabulary tables loaded", ["table", "rows"], rows)
    console.print("done")

"""``medlake release approve DIR``: a data steward approves an extract for release."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.access import AsOption, acting
from medlake.cli.lazy import lazy_module
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json

service = lazy_module("medlake.service.release")

app = typer.Typer(help="Approve extracts before they leave the hospital.", no_args_is_help=True)


@app.command("approve")
def approve(
    folder: Annotated[Path, typer.Argument(help="The extract's folder (medlake extract --out).")],
    note: Annotated[str, typer.Option("--note", help="What was reviewed, for the record.")],
    json: JsonOption = False,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Approve an extract for release (stewards; not the one who made it): its files must
    be exactly those the export wrote; the approval is audited and written to the folder."""
    with acting(as_user):
        approval = service.approve_release(workspace, folder, note=note)
    if json:
        print_json(approval)
        return
    console.print(f"approved {folder} for release (audit event {approval['approval_event_id']}, "
                  f"exported by {approval['exported_by']})", highlight=False)  # fmt: skip

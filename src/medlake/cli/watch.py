"""``medlake watch [status|clear]``: the ransomware watch and the read-only freeze it sets."""

from __future__ import annotations

from typing import Annotated

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, error_console, print_json, print_table
from medlake.errors import EngineError, UsageError
from medlake.service import watch as service

app = typer.Typer(
    help="Watch for ransomware; on alert the workspace is frozen read-only.",
    invoke_without_command=True,
)


@app.callback()
def run(
    ctx: typer.Context,
    workspace: WorkspaceOption = None,
) -> None:
    """Scan the workspace every watch.interval_seconds until an alert freezes it (Ctrl-C stops)."""
    if ctx.invoked_subcommand is not None:
        return
    console.print("watching for ransomware (Ctrl-C to stop)")
    try:
        record = service.watch(workspace)
    except KeyboardInterrupt:
        return
    if record is not None:
        _render_freeze(record)
        raise typer.Exit(1)


def _render_freeze(record: dict[str, object]) -> None:
    error_console.print(
        f"[bold red]workspace frozen read-only[/]: {record['reason']}; "
        f"{record['file_count']} files since {record['since']}",
        highlight=False,
    )
    rows = [[f["what"], f["seen_at"], f["path"]] for f in record["files"]]  # type: ignore[attr-defined, index]
    print_table("Files", ["what", "seen at", "path"], rows)
    error_console.print(
        "restore them from a backup ('medlake backup restore'), then 'medlake watch clear'"
    )


@app.command("status")
def status(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """Say whether the workspace is frozen, since when, why and which files (exit 1 if so)."""
    record = service.freeze_status(workspace)
    if json:
        print_json({"frozen": record is not None, **(record or {})})
    elif record is None:
        console.print("not frozen")
    else:
        _render_freeze(record)
    if record is not None:
        raise typer.Exit(1)


@app.command("clear")
def clear(
    note: Annotated[
        str, typer.Option("--note", help="What was reviewed (goes to the audit trail).")
    ],
    workspace: WorkspaceOption = None,
) -> None:
    """Lift the read-only freeze after review; audited with the note.

    With ``medlake serve`` running, the server holds the lake: clear it there instead
    (``POST /api/v1/protect/watch/clear`` or the dashboard's button, as an admin).
    """
    try:
        record = service.clear(workspace, note=note)
    except EngineError as error:
        if "lock" not in error.message.lower():
            raise
        raise UsageError(
            "another process holds the lake (a running 'medlake serve'): clear the freeze "
            "through it instead, as an admin: the dashboard's 'Clear the freeze' button "
            "(/ui/dashboard) or POST /api/v1/protect/watch/clear with {\"note\": ...}; "
            "or stop the server and run this again"
        ) from error
    console.print(f"freeze since {record.get('since')} lifted", highlight=False)

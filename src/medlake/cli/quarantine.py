"""``medlake quarantine list|show|retry``: records that could not be parsed or mapped."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.ingest import input_progress, render_report
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.service import ingest as service

app = typer.Typer(
    help="Records that could not be parsed or mapped: list, show, retry.", no_args_is_help=True
)

_REASON_CHARS = 60


@app.command("list")
def list_(
    batch: Annotated[str | None, typer.Option("--batch", help="Only this batch id.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Include resolved entries.")] = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List quarantined records (open ones; --all for resolved too)."""
    entries = service.quarantine_entries(workspace, batch_id=batch, include_resolved=all_)
    if json:
        print_json([{k: v for k, v in e.items() if k != "raw_payload"} for e in entries])
        return
    rows = [
        [
            str(e["quarantine_id"])[:12],
            str(e["batch_id"])[:12],
            e["source_system"],
            e["location"],
            e["field"],
            _short(str(e["reason"])),
        ]
        for e in entries
    ]
    print_table(
        f"Quarantine ({len(entries):,})",
        ["id", "batch", "source", "location", "field", "reason"],
        rows,
    )


@app.command("show")
def show(
    quarantine_id: Annotated[str, typer.Argument(help="Entry id (or a unique prefix of it).")],
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Show one quarantined record: where it was, why, and its raw payload."""
    entry = service.quarantine_entry(workspace, quarantine_id)
    if json:
        print_json(entry)
        return
    for key, value in entry.items():
        if key != "raw_payload":
            console.print(f"[bold]{key}[/]: {'' if value is None else value}", highlight=False)
    console.print("[bold]raw_payload[/]:")
    console.print(str(entry.get("raw_payload") or ""), highlight=False, markup=False)


@app.command("retry")
def retry(
    batch: Annotated[str | None, typer.Option("--batch", help="Only this batch id.")] = None,
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", "-m", help="The (fixed) mapping file for CSV batches."),
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Re-read landed files with open entries (e.g. after a mapping fix); resolve what loads."""
    options: dict[str, object] = {"mapping": mapping} if mapping is not None else {}
    with input_progress(enabled=not json) as progress:
        report = service.retry_quarantine(
            workspace, batch_id=batch, options=options, progress=progress
        )
    resolved = sum(r.summary.resolved for r in report.files if r.summary is not None)
    render_report(report, json=json, title=f"Retried ({resolved:,} entries resolved)")


def _short(text: str) -> str:
    return text if len(text) <= _REASON_CHARS else text[: _REASON_CHARS - 1] + "…"

"""``medlake mirror status|resync``: the health of mirrored landing, and bringing it back."""

from __future__ import annotations

import dataclasses

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, error_console, print_json, print_table, progress_bar
from medlake.service import mirror as service

app = typer.Typer(
    help="Mirrored landing: each root's health; resync a degraded root.", no_args_is_help=True
)


@app.command("status")
def status(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """Show each landing root: ok or degraded (since when, why), files, files it lacks."""
    sides = service.status(workspace)
    if json:
        print_json([dataclasses.asdict(side) for side in sides])
        return
    print_table(
        "Landing roots",
        ["side", "root", "status", "since", "reason", "files", "missing"],
        [[s.name, s.root, s.status, s.since, s.reason, s.files, s.missing] for s in sides],
    )
    if len(sides) == 1:
        console.print("no mirror configured (paths.landing_mirror in medlake.toml)")
    if any(s.status != "ok" or s.missing for s in sides):
        error_console.print("[bold yellow]run 'medlake mirror resync' once the root is back[/]")
        raise typer.Exit(1)


@app.command("resync")
def resync(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """Re-hash both roots, copy missing and repair corrupted files, mark both roots ok."""
    with progress_bar("verifying landing") as progress:
        report = service.resync_mirror(workspace, progress=progress)
    if json:
        print_json(report.as_dict())
    else:
        console.print(
            f"{report.checked:,} landed files verified; copied {report.copied or 'none'}, "
            f"repaired {report.repaired or 'none'}"
        )
    if report.lost:
        error_console.print(
            f"[bold red]{len(report.lost)} landed files have no good copy on either root[/] "
            f"(first: {report.lost[0]}); restore them from a backup"
        )
        raise typer.Exit(1)

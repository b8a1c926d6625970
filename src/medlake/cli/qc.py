"""``medlake qc run|report|checks|history``: data-quality checks and their results."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.access import Permission
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table, progress_bar
from medlake.config import open_workspace
from medlake.service import access
from medlake.service import quality as service

app = typer.Typer(
    help="Data-quality checks (DQD/Kahn): run them, report, list, see a check's trend.",
    no_args_is_help=True,
)

_STATUSES = ("fail", "error", "pass", "n/a")


@app.command("run")
def run(
    table: Annotated[
        list[str] | None, typer.Option("--table", "-t", help="Only this CDM table's checks.")
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Run the checks now and keep the results (each check's history grows by one)."""
    access.require(workspace, Permission.RUN_QC)  # refused before any progress is drawn
    if json:
        result = service.run_qc(workspace, tables=table or None)
    else:
        with progress_bar("checks") as progress:
            result = service.run_qc(workspace, tables=table or None, progress=progress)
    summary = service.qc_summary(workspace, result.run_id)
    if json:
        print_json(summary)
        return
    render_summary(summary)


def render_summary(summary: dict) -> None:  # type: ignore[type-arg]
    """Print a run's counts by category and its worst failed checks."""
    run = summary["run"]
    if run is None:
        console.print("no data-quality run yet: run 'medlake qc run'")
        return
    counts = summary["counts"]
    print_table(
        f"Data quality, run {run['run_id']} ({run['checks']:,} checks)",
        ["category", *_STATUSES],
        [[c, *(counts[c].get(s, 0) for s in _STATUSES)] for c in counts],
    )
    if summary["failed"]:
        print_table(
            f"Worst failed checks ({summary['failed_total']:,} failed)",
            ["check", "violating", "of rows", "%", "threshold %"],
            [
                [f["check_id"], f["rows_violating"], f["rows_total"], f["pct_violating"],
                 f["threshold_pct"]]
                for f in summary["failed"]
            ],
        )  # fmt: skip


@app.command("report")
def report(
    out: Annotated[Path, typer.Option("--out", "-o", help="The HTML file to write.")],
    run_id: Annotated[str | None, typer.Option("--run", help="A run id (default: latest).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Write the latest run as one HTML file: tables and charts, works offline."""
    written = service.write_report(workspace, out, run_id)
    console.print(f"wrote {written}", highlight=False)


@app.command("checks")
def checks(
    check_type: Annotated[
        str | None, typer.Option("--type", help="Only checks of this type.")
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """List the checks with their thresholds (shipped, or the workspace's override)."""
    listed = [
        c for c in service.checks_for(open_workspace(workspace))
        if check_type is None or c.check_type == check_type
    ]  # fmt: skip
    rows = [
        {"check_id": c.check_id, "type": c.check_type, "category": c.type.category,
         "level": c.type.level, "threshold_pct": c.threshold_pct, "what": c.describe()}
        for c in listed
    ]  # fmt: skip
    if json:
        print_json(rows)
        return
    print_table(
        f"Checks ({len(rows):,})",
        ["check", "category", "level", "threshold %"],
        [[r["check_id"], r["category"], r["level"], r["threshold_pct"]] for r in rows],
    )


@app.command("history")
def history(
    check_id: Annotated[
        str, typer.Argument(help="The check's id, e.g. is_required.person.year_of_birth")
    ],
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """One check's result in every run, oldest first: its trend."""
    rows = service.check_history(workspace, check_id)
    if json:
        print_json(rows)
        return
    print_table(
        f"{check_id} ({len(rows):,} runs)",
        ["run", "started (UTC)", "trigger", "violating", "of rows", "%", "status"],
        [
            [r["run_id"], str(r["started_at"])[:19], r["trigger"], r["rows_violating"],
             r["rows_total"], r["pct_violating"], r["status"]]
            for r in rows
        ],
    )  # fmt: skip

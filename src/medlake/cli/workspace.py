"""Commands about the workspace itself: ``init``, ``status``, ``schema status|upgrade``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.schema import SCHEMA_VERSION
from medlake.service import workspace as service

schema_app = typer.Typer(
    help="Show or upgrade the lake's schema version; keep its person tables in person order.",
    no_args_is_help=True,
)


def register(app: typer.Typer) -> None:
    app.command("init")(init)
    app.command("status")(status)


def init(
    directory: Annotated[Path, typer.Argument(help="Directory for the new workspace.")],
    engine: Annotated[
        str, typer.Option(help="Engine holding the lake: duckdb or spark.")
    ] = "duckdb",
    name: Annotated[str | None, typer.Option(help="Workspace name (default: folder name).")] = None,
    language: Annotated[str, typer.Option(help="Default UI language: en or zh.")] = "en",
    demo_vocabulary: Annotated[
        bool,
        typer.Option(
            "--demo-vocabulary/--no-demo-vocabulary", help="Load the bundled demo vocabulary."
        ),
    ] = True,
) -> None:
    """Create a workspace: medlake.toml, landing/, omics/, exports/, backups/ and the lake."""
    created = service.init_workspace(
        directory, engine_kind=engine, name=name, language=language, demo_vocabulary=demo_vocabulary
    )
    console.print(
        f"Created workspace [bold]{created.root}[/] (engine {engine}, schema v{SCHEMA_VERSION})."
    )
    console.print(
        f"Use it with [bold]--workspace {created.root}[/] or MEDLAKE_WORKSPACE={created.root}"
    )


def status(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Show the workspace's engine, schema version and rows per table."""
    summary = service.lake_summary(workspace)
    if as_json:
        print_json(summary.as_dict())
        return
    console.print(
        f"Workspace [bold]{summary.root}[/] on {summary.engine}, schema v{summary.schema_version}"
    )
    rows = [(t.name, t.group, t.rows) for t in summary.tables if t.rows]
    print_table("Tables with rows", ["table", "group", "rows"], rows)
    empty = sum(1 for t in summary.tables if not t.rows)
    console.print(
        f"{len(summary.tables)} tables, {empty} empty, {summary.total_rows:,} rows in all"
    )


@schema_app.command("status")
def schema_status(workspace: WorkspaceOption = None) -> None:
    """Show the lake's schema version and the one this medlake expects."""
    before, _after, _applied = service.schema_versions(workspace)
    state = "up to date" if before == SCHEMA_VERSION else "needs 'medlake schema upgrade'"
    console.print(f"lake schema v{before or 0}, medlake expects v{SCHEMA_VERSION}: {state}")


@schema_app.command("upgrade")
def schema_upgrade(workspace: WorkspaceOption = None) -> None:
    """Apply pending schema migrations, in order, recording each."""
    before, after, applied = service.upgrade_schema(workspace)
    if not applied:
        console.print(f"lake schema already at v{after}: nothing to do")
        return
    for migration in applied:
        console.print(f"applied v{migration.version}: {migration.description}")
    console.print(f"lake schema v{before or 0} -> v{after}")


@schema_app.command("layout")
def schema_layout(workspace: WorkspaceOption = None, as_json: JsonOption = False) -> None:
    """Show how many rows of each person table are stored out of person order."""
    from medlake.service.lake_layout import layout_status

    _render_layout(layout_status(workspace), as_json)


@schema_app.command("reorder")
def schema_reorder(
    workspace: WorkspaceOption = None,
    force: Annotated[
        bool, typer.Option("--all", help="Rewrite every table with rows out of order.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Rewrite the person tables past [layout] reorder_share in person order."""
    from medlake.service.lake_layout import reorder_lake

    with console.status("checking the person order of the lake's tables..."):
        report = reorder_lake(workspace, force=force)
    _render_layout(report, as_json)


def _render_layout(report: Any, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    if not report.supported:
        console.print("this engine keeps no row groups in order: nothing to do")
        return
    rows = [
        (t.table, t.rows, t.out_of_order, f"{t.share:.1%}",
         f"rewritten in {t.seconds:.1f} s" if t.reordered else "")
        for t in report.tables if t.rows
    ]  # fmt: skip
    print_table(
        f"Rows out of person order (rewrite past {report.threshold:.0%})",
        ["table", "rows", "out of order", "share", ""],
        rows,
    )

"""Commands about the workspace itself: ``init``, ``status``, ``schema status|upgrade``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.schema import SCHEMA_VERSION
from medlake.service import workspace as service

schema_app = typer.Typer(help="Show or upgrade the lake's schema version.", no_args_is_help=True)


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

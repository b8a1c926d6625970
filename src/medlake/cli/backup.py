"""``medlake backup init|run|list|prune|check|restore|drill``: backups with BorgBackup."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, error_console, print_json, print_table
from medlake.service import backup as service

app = typer.Typer(
    help="Backups of the whole workspace (BorgBackup): run, keep, check, restore, drill.",
    no_args_is_help=True,
)


def _size(value: int) -> str:
    return f"{value / 1e6:,.1f} MB"


@app.command("init")
def init(workspace: WorkspaceOption = None) -> None:
    """Create the encrypted backup repository (and its passphrase file) if there is none."""
    result = service.init_backups(workspace)
    verb = "created" if result.created else "already exists:"
    console.print(f"backup repository {verb} {result.repository}", highlight=False)
    console.print(
        f"passphrase in {result.passphrase_file}: keep a copy off this machine, "
        "without it no backup can be read",
        highlight=False,
    )


@app.command("run")
def run(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """Take a backup now: a consistent snapshot of the lake, landing, omics, audit, settings."""
    result = service.run_backup(workspace)
    if json:
        print_json(result.as_dict())
        return
    stats = result.stats
    console.print(
        f"backup {result.archive}: {stats.files:,} files, {_size(stats.original_size)} "
        f"({_size(stats.deduplicated_size)} new in the repository) in {result.seconds:.1f} s",
        highlight=False,
    )


@app.command("list")
def list_(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """List the backups in the repository, oldest first."""
    archives = service.list_backups(workspace)
    if json:
        print_json([{"name": a.name, "time": a.time.isoformat(), "id": a.id} for a in archives])
        return
    print_table(
        f"Backups ({len(archives)})",
        ["name", "time (UTC)"],
        [[a.name, a.time.isoformat(sep=" ")] for a in archives],
    )


@app.command("prune")
def prune(
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be deleted; delete nothing.")
    ] = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Delete the backups the retention policy (backup.keep_*) no longer keeps."""
    result = service.prune_backups(workspace, dry_run=dry_run)
    if json:
        print_json(
            {
                "dry_run": dry_run,
                "kept": [{"name": a.name, "rules": rules} for a, rules in result.kept],
                "deleted": [a.name for a in result.deleted],
            }
        )
        return
    verb = "would delete" if dry_run else "deleted"
    console.print(f"kept {len(result.kept)} backups; {verb} {len(result.deleted)}")
    for archive in result.deleted[:20]:
        console.print(f"  {archive.name}", highlight=False)


@app.command("check")
def check(
    verify_data: Annotated[
        bool, typer.Option("--verify-data", help="Also read and authenticate every chunk (slow).")
    ] = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Check the repository and its archives for damage (borg check)."""
    result = service.check_backups(workspace, verify_data=verify_data)
    if json:
        print_json({"healthy": result.healthy, "archives": result.archives,
                    "messages": result.messages})  # fmt: skip
    elif result.healthy:
        console.print(f"backup repository healthy ({result.archives} backups)")
    if not result.healthy:
        error_console.print("[bold red]the backup repository is damaged:[/]")
        for line in result.messages[-10:]:
            error_console.print(f"  {line}", highlight=False)
        raise typer.Exit(1)


@app.command("restore")
def restore(
    to: Annotated[Path, typer.Option("--to", help="New folder to restore the workspace into.")],
    archive: Annotated[
        str | None, typer.Option("--archive", help="Backup name (default: the newest).")
    ] = None,
    repository: Annotated[
        str | None,
        typer.Option("--repository", help="Repository, when the workspace itself is lost."),
    ] = None,
    passphrase_file: Annotated[
        Path | None, typer.Option("--passphrase-file", help="File holding the passphrase.")
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Restore a backup into a new folder and verify the lake and landing against it."""
    result = service.restore_backup(
        None if repository else workspace,
        to,
        archive=archive,
        repository=repository,
        passphrase_file=passphrase_file,
    )
    if json:
        print_json({"archive": result.archive.name, "path": str(result.path),
                    "seconds": round(result.seconds, 3), "tables": result.tables,
                    "landed_files": result.landed_files})  # fmt: skip
        return
    console.print(
        f"restored {result.archive.name} to {result.path} in {result.seconds:.1f} s: "
        f"{result.tables} tables and {result.landed_files:,} landed files verified",
        highlight=False,
    )


@app.command("drill")
def drill(
    keep: Annotated[
        bool, typer.Option("--keep", help="Keep the restored copy (its path is printed).")
    ] = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Restore the newest backup to a scratch folder, verify it, report RTO and RPO."""
    result = service.drill(workspace, keep=keep)
    if json:
        print_json(result.as_dict())
    else:
        console.print(result.summary(), highlight=False)
        console.print(
            f"since then: {result.landed_since:,} files landed, "
            f"{len(result.changed_since)} tables changed",
            highlight=False,
        )
    if not result.ok:
        error_console.print(
            f"[bold red]{len(result.missing_from_live)} landed files in the backup are "
            "missing from the live landing[/]"
        )
        raise typer.Exit(1)

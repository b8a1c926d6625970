"""``medlake demo``: the whole platform, end to end, on a synthetic hospital."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.render import console, print_table, progress_bar
from medlake.service.demo import run_demo


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[
        Path, typer.Argument(help="Folder for the demo (replaced if it holds a demo).")
    ] = Path("demo"),
    patients: Annotated[int, typer.Option(min=1, help="Synthetic patients.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """Synthesize a hospital, create a workspace and summarize what was made."""
    with progress_bar(f"synthesizing {patients:,} patients") as progress:
        result = run_demo(out, patients=patients, seed=seed, progress=progress)
    print_table(
        "Synthetic hospital (source-system exports)", ["file", "records"], result.synth.as_rows()
    )
    lake_rows = [(t.name, t.group, t.rows) for t in result.lake.tables if t.rows]
    print_table(
        f"Lake ({result.lake.engine}, schema v{result.lake.schema_version}): tables with rows",
        ["table", "group", "rows"],
        lake_rows,
    )
    print_table("Timings", ["step", "seconds"], list(result.timings.items()))
    console.print(f"Hospital exports: [bold]{result.hospital_dir}[/]")
    console.print(f"Workspace:        [bold]{result.workspace_dir}[/]")
    console.print(f"Next: medlake status --workspace {result.workspace_dir}")

"""``medlake synth``: write a synthetic hospital as its source systems would export it."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.render import console, print_table, progress_bar
from medlake.synth import generate_hospital


def register(app: typer.Typer) -> None:
    app.command("synth")(synth)


def synth(
    out: Annotated[Path, typer.Argument(help="Output directory (created; must be empty).")],
    patients: Annotated[int, typer.Option(min=1, help="Number of true persons.")] = 1000,
    seed: Annotated[int, typer.Option(help="Random seed: same seed, byte-identical output.")] = 42,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Worker processes (default: all cores).")
    ] = None,
) -> None:
    """Synthesize HIS CSV, LIS HL7 v2, EMR FHIR, omics files and truth/ for N persons."""
    with progress_bar(f"synthesizing {patients:,} patients") as progress:
        summary = generate_hospital(out, patients, seed, workers=workers, progress=progress)
    print_table("Synthetic hospital", ["file", "records"], summary.as_rows())
    console.print(f"Wrote [bold]{out}[/] (seed {seed}).")

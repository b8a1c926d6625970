"""``medlake demo``: the whole platform, end to end, on a synthetic hospital."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from medlake.cli.render import console, error_console, print_table
from medlake.service.demo import run_demo
from medlake.service.ingest import IngestProgress


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)


def demo(
    out: Annotated[
        Path, typer.Argument(help="Folder for the demo (replaced if it holds a demo).")
    ] = Path("demo"),
    patients: Annotated[int, typer.Option(min=1, help="Synthetic patients.")] = 5000,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 42,
) -> None:
    """The whole platform on a synthetic hospital: ingest, link, check, count, extract,
    analyse, de-identify, audit, back up; prints what each step did."""
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=error_console,
    ) as bars:
        synth_task = bars.add_task(f"synthesize {patients:,} patients", total=None)
        ingest_task = bars.add_task("ingest source files", total=None, start=False)
        steps_task = bars.add_task("link, check, count, analyse, protect", total=None,
                                   start=False)  # fmt: skip

        def synthesized(done: int, total: int) -> None:
            bars.update(synth_task, completed=done, total=total)

        def ingested(step: IngestProgress) -> None:
            bars.start_task(ingest_task)
            bars.update(
                ingest_task,
                description=f"ingest {step.name}"[:60],
                completed=step.index + (1 if step.done else 0),
                total=step.total,
            )

        def step_started(name: str) -> None:
            bars.start_task(steps_task)
            bars.update(steps_task, description=name)

        result = run_demo(
            out, patients=patients, seed=seed, progress=synthesized, ingest_progress=ingested,
            step_started=step_started,
        )  # fmt: skip
    print_table(
        "Ingested (per source system)", list(result.ingest.COLUMNS), result.ingest.as_rows()
    )
    print_table(
        "Synthetic hospital (source-system exports)", ["file", "records"], result.synth.as_rows()
    )
    lake_rows = [(t.name, t.group, t.rows) for t in result.lake.tables if t.rows]
    print_table(
        f"Lake ({result.lake.engine}, schema v{result.lake.schema_version}): tables with rows",
        ["table", "group", "rows"],
        lake_rows,
    )
    for section in result.sections:
        print_table(section.title, section.columns, section.rows)
        for note in section.notes:
            console.print(f"  {note}", highlight=False, markup=False)  # "[empi] ..." is text
    timings = [(step, f"{seconds:.1f}") for step, seconds in result.timings.items()]
    print_table("Timings", ["step", "seconds"], timings)
    console.print(f"Hospital exports: [bold]{result.hospital_dir}[/]")
    console.print(f"Workspace:        [bold]{result.workspace_dir}[/]")
    if result.users is not None:
        users = result.users
        console.print(
            f"Users:            {users.admin} (admin: you), {users.steward} (steward), "
            f"{users.researcher} (researcher in project {users.project}), {users.auditor} "
            "(auditor); act as one with medlake --as USER", highlight=False)  # fmt: skip
        console.print(f"Demo login:       {users.steward} (steward), API token "
                      f"{users.login_token}", highlight=False, soft_wrap=True)  # fmt: skip
    console.print(f"Next: medlake status --workspace {result.workspace_dir}")
    from medlake.cli.serve import demo_should_serve, serve_demo

    if demo_should_serve():
        users = result.users
        serve_demo(result.workspace_dir, users.steward if users else None,
                   users.login_token if users else None)  # fmt: skip

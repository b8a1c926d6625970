"""``medlake ingest PATH...``: land files and folders, parse them, load them into the lake."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, error_console, print_json, print_table
from medlake.errors import MedlakeError, UsageError
from medlake.service.ingest import IngestProgress, IngestReport, ingest_paths


def register(app: typer.Typer) -> None:
    app.command("ingest")(ingest)


def ingest(
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to ingest (any mix).")],
    format: Annotated[
        str | None,
        typer.Option(
            "--format", "-f", help="Force a format (fhir, hl7v2, csv, plink, vcf, counts...)."
        ),
    ] = None,
    source: Annotated[
        str | None,
        typer.Option("--source", "-s", help="Source system (default: from the folder name)."),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option("--mapping", "-m", help="Mapping file (TOML/YAML) for CSV exports."),
    ] = None,
    visit_system: Annotated[
        list[str] | None,
        typer.Option(
            "--visit-system",
            help="REGEX=SYSTEM: HL7 PV1-19 visit numbers matching REGEX are visits of SYSTEM "
            "(e.g. '^(MZ|ZY|JZ)\\d+$=his' when the LIS carries HIS visit numbers).",
        ),
    ] = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Land files (unchanged, by SHA-256), parse them and load them into the lake."""
    options: dict[str, object] = {"mapping": mapping} if mapping is not None else {}
    if visit_system:
        options["visit_systems"] = dict(_pattern_and_system(v) for v in visit_system)
    with input_progress(enabled=not json) as progress:
        report = ingest_paths(
            workspace,
            paths,
            format=format,
            source_system=source,
            options=options,
            progress=progress,
        )
    render_report(report, json=json, title="Ingested")


def _pattern_and_system(value: str) -> tuple[str, str]:
    pattern, sep, system = value.rpartition("=")
    if not sep or not pattern or not system:
        raise UsageError(f"--visit-system {value!r}: expected REGEX=SYSTEM")
    try:
        re.compile(pattern)
    except re.error as error:
        raise UsageError(f"--visit-system {value!r}: bad regular expression ({error})") from None
    return pattern, system


def render_report(report: IngestReport, *, json: bool, title: str) -> None:
    """The per-source table (or JSON); failed files on stderr and a non-zero exit."""
    if json:
        print_json(report.as_dict())
    else:
        print_table(title, IngestReport.COLUMNS, report.as_rows())
        if report.seconds > 0 and report.records_read:
            console.print(
                f"whole run: {report.records_read:,} records in {report.seconds:.2f} s "
                f"({report.records_read / report.seconds:,.0f}/s), with what the run does "
                "once (linking, checks, person order, checkpoint)",
                highlight=False,
            )
        if report.ignored:
            console.print(f"{len(report.ignored)} files ignored (no reader recognised them):")
            for path in report.ignored[:20]:
                console.print(f"  {path}", highlight=False)
        unmapped = report.unmapped
        if unmapped:
            listed = ", ".join(f"{t}/{v} {n:,}" for (t, v), n in sorted(unmapped.items()))
            console.print(f"unmapped codes (concept 0): {listed}", highlight=False)
    failed = report.failed
    for result in failed:
        error_console.print(
            f"[bold red]error:[/] {result.path}: {result.message}", highlight=False, soft_wrap=True
        )
    if failed:
        first = failed[0].error
        raise typer.Exit(first.exit_code if isinstance(first, MedlakeError) else 1)


@contextmanager
def input_progress(*, enabled: bool) -> Iterator[Callable[[IngestProgress], None] | None]:
    """Progress on stderr: inputs done of all, and a line for the input being read.

    The line shows the records read so far; it goes when its input is done, so an
    ingest of hundreds of small files stays a two-line display.
    """
    if not enabled:
        yield None
        return
    with Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[records]:>12,} records"),
        TimeElapsedColumn(),
        console=error_console,
        transient=False,
    ) as bar:
        overall = bar.add_task("inputs", total=None, records=0)
        current: dict[int, TaskID] = {}
        totals = {"records": 0}

        def update(event: IngestProgress) -> None:
            bar.update(overall, total=event.total)
            task = current.get(event.index)
            if task is None:
                task = current[event.index] = bar.add_task(event.name, total=None, records=0)
            bar.update(task, records=event.records_read)
            if event.done:
                bar.remove_task(current.pop(event.index))
                totals["records"] += event.records_read
                bar.update(overall, advance=1, records=totals["records"])

        yield update

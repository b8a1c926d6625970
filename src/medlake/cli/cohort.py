"""``medlake cohort``: count a cohort definition with attrition, or store its members."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.access import AsOption, acting
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.service import cohort as service

app = typer.Typer(help="Cohorts: feasibility counts with attrition, materialized cohorts.")

FileArgument = Annotated[
    Path, typer.Argument(help="Cohort definition: medlake JSON, or Circe JSON with --circe.")
]
CirceOption = Annotated[
    bool, typer.Option("--circe", help="The file is an OHDSI ATLAS/Circe cohort expression.")
]


@app.command("count")
def count(
    file: FileArgument,
    circe: CirceOption = False,
    exact: Annotated[
        bool,
        typer.Option("--exact", help="Show exact counts (no small-cell suppression; stewards)."),
    ] = False,
    json: JsonOption = False,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Count the persons a definition finds, with the attrition per inclusion rule."""
    definition = service.load_definition(file, circe=circe)
    with acting(as_user):
        result = service.count_cohort(workspace, definition, exact=exact)
    if json:
        print_json(result.as_dict())
        return
    note = "exact" if exact else f"counts under {result.threshold} hidden"
    print_table(
        f"{definition.name} ({note})",
        ["step", "remaining", "excluded", "excluded alone"],
        result.as_rows(),
    )
    final = result.final if exact else str(result.suppressed.final)
    console.print(f"persons in the cohort: {final}")


@app.command("create")
def create(
    file: FileArgument,
    name: Annotated[
        str | None,
        typer.Option("--name", help="Cohort name (default: the definition's name)."),
    ] = None,
    circe: CirceOption = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Store the cohort in the OMOP cohort and cohort_definition tables."""
    definition = service.load_definition(file, circe=circe)
    created = service.create_cohort(workspace, definition, name)
    if json:
        print_json(created.as_dict())
        return
    console.print(
        f"cohort {created.name!r} (cohort_definition_id {created.cohort_definition_id}): "
        f"{created.rows:,} periods stored"
    )

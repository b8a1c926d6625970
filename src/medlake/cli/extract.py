"""``medlake extract``: a cohort's de-identified analysis dataset, as Parquet and CSV."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.access import AsOption, acting
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.service import cohort as cohort_service
from medlake.service import extract as service
from medlake.service.extract_spec import load_feature_spec


def register(app: typer.Typer) -> None:
    app.command("extract")(extract)


def extract(
    file: Annotated[
        Path, typer.Argument(help="Cohort definition: medlake JSON, or Circe JSON with --circe.")
    ],
    features: Annotated[
        Path, typer.Option("--features", help="Feature spec (JSON; see docs/privacy.md).")
    ],
    out: Annotated[Path, typer.Option("--out", help="New (or empty) folder for the dataset.")],
    circe: Annotated[
        bool, typer.Option("--circe", help="The file is an OHDSI ATLAS/Circe cohort expression.")
    ] = False,
    project: Annotated[
        str | None,
        typer.Option("--project", help="The project the extract is for (researchers: theirs)."),
    ] = None,
    json: JsonOption = False,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Write the cohort's dataset: pseudonymous ids, shifted dates, banded ages, k-anonymous
    (stewards; researchers in their own project)."""
    definition = cohort_service.load_definition(file, circe=circe)
    spec = load_feature_spec(features)
    with console.status("extracting..."), acting(as_user, project):
        result = service.extract_cohort(workspace, definition, spec, out)
    if json:
        print_json(result.as_dict())
        return
    print_table(
        f"{definition.name}: extract",
        ["", "value"],
        [
            ["persons in the cohort", result.persons],
            ["rows written", result.rows],
            ["quasi-identifiers suppressed", result.suppressed_rows],
            ["rows dropped for k-anonymity", result.dropped_rows],
            ["k (achieved)", f"{result.k} ({result.k_achieved})"],
            ["quasi-identifiers", ", ".join(result.quasi_identifiers)],
        ],
    )
    for name in [*result.files, service.MANIFEST]:
        console.print(f"  {result.out_dir / name}")

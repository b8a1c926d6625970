"""``medlake person timeline ID``: patient 360 on the command line."""

from __future__ import annotations

from typing import Annotated

import typer

from medlake.cli.access import AsOption, acting
from medlake.cli.lazy import lazy_module
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table

patient360 = lazy_module("medlake.service.patient360")

app = typer.Typer(
    help="One person's record across every linked source (patient 360).", no_args_is_help=True
)


@app.command("timeline")
def timeline(
    person_id: Annotated[int, typer.Argument(help="The person_id.")],
    notes: Annotated[bool, typer.Option("--notes", help="Include notes' full text.")] = False,
    json: JsonOption = False,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Everything recorded about the person, oldest first, with the source of each item
    (identified data: stewards; the read is audited)."""
    with acting(as_user):
        result = patient360.person_timeline(workspace, person_id, with_note_text=notes)
    if json:
        print_json(result.as_dict())
        return
    sources = ", ".join(
        f"{s['source_system']}:{s['source_patient_id']}" for s in result.source_patients
    )
    console.print(
        f"person {person_id}: born {result.year_of_birth}, {result.gender}; "
        f"sources {sources}; omics samples {len(result.omics_samples)}"
    )
    rows = [
        [
            str(i.start or ""),
            i.kind,
            i.concept_name or "",
            i.source_value or "",
            " ".join(f"{k}={v}" for k, v in i.values.items())[:60],
            f"{i.source_system or ''}:{i.source_record_id or ''}",
        ]
        for i in result.items
    ]
    print_table(
        f"Timeline ({len(rows)} items)",
        ["date", "kind", "concept", "source code", "values", "source record"],
        rows,
    )

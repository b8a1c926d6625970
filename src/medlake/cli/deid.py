"""``medlake deid text|score``: scrub PHI from free text; score the scrubber on notes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from medlake.cli.access import AsOption, acting
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.errors import InputError, UsageError
from medlake.service import deid as service

app = typer.Typer(
    help="De-identify free text (clinical notes): names, ID numbers, phones, addresses, "
    "dates, MRNs, e-mails.",
    no_args_is_help=True,
)


@app.command("text")
def text(
    path: Annotated[
        Path | None, typer.Argument(help="UTF-8 text file (default: standard input).")
    ] = None,
    shift_days: Annotated[
        int | None,
        typer.Option("--shift-days", help="Move dates by this many days (else tag them)."),
    ] = None,
    json: JsonOption = False,
) -> None:
    """Print the text with its PHI replaced (--json: also the spans found)."""
    if path is None:
        content = sys.stdin.read()
    else:
        try:
            content = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: cannot read as UTF-8 text ({error})") from None
    result = service.scrub(content, shift_days=shift_days)
    if json:
        print_json({
            "text": result.text,
            "spans": [{"entity": s.entity, "start": s.start, "end": s.end, "text": s.text}
                      for s in result.spans],
        })  # fmt: skip
        return
    sys.stdout.write(result.text)


@app.command("score")
def score(
    hospital: Annotated[Path, typer.Argument(help="A folder written by `medlake synth`.")],
    known: Annotated[
        bool, typer.Option("--known", help="Give the scrubber each patient's identifiers.")
    ] = False,
    json: JsonOption = False,
) -> None:
    """Recall and precision per PHI type on a synthetic hospital's notes, against truth/."""
    result = service.score_hospital_notes(hospital, use_known=known)
    rows = [[s.entity, s.labelled, s.found, f"{s.recall:.4f}", s.detected, f"{s.precision:.4f}"]
            for s in result.scores.values()]  # fmt: skip
    if json:
        print_json({"documents": result.documents, "entities": [
            {"entity": s.entity, "labelled": s.labelled, "found": s.found, "recall": s.recall,
             "detected": s.detected, "precision": s.precision}
            for s in result.scores.values()]})  # fmt: skip
        return
    columns = ["entity", "labelled", "found", "recall", "detected", "precision"]
    print_table(f"PHI in {result.documents:,} notes", columns, rows)
    console.print("found: every character of the labelled PHI removed; precision: detected "
                  "spans that overlap labelled PHI")  # fmt: skip


@app.command("notes")
def notes(
    out: Annotated[Path, typer.Option("--out", help="Parquet file to write (must not exist).")],
    person: Annotated[
        list[int] | None, typer.Option("--person", help="Only this person (repeatable).")
    ] = None,
    as_user: AsOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Write the lake's notes de-identified: PHI replaced, dates shifted per person
    (reads identified data to do so: stewards)."""
    import pyarrow.parquet as pq

    if out.exists():
        raise UsageError(f"{out} exists; choose a new file")
    with acting(as_user):
        table = service.deidentified_notes(workspace, person_ids=person or None)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, out)
    found = sum(table.column("phi_found").to_pylist()) if table.num_rows else 0
    console.print(f"{table.num_rows:,} notes, {found:,} pieces of PHI replaced -> {out}")

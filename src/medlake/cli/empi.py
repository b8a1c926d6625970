"""``medlake empi link|train|review|decide|merge|unmerge|history|score|dedupe``."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from medlake.cli.lazy import lazy_module
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, error_console, print_json, print_table
from medlake.errors import UsageError

service = lazy_module("medlake.service.empi")
access = lazy_module("medlake.service.access")

app = typer.Typer(
    help="Link source patients into persons (EMPI): link, review, merge, unmerge, dedupe.",
    no_args_is_help=True,
)

StewardOption = Annotated[
    str | None,
    typer.Option(
        "--as",
        "--steward",
        help="The steward who decides (a medlake user with the steward role; default: "
        "$MEDLAKE_USER, else your login name). Recorded and audited.",
        show_default=False,
    ),
]


def _steward(ctx: typer.Context, workspace: Path | None, name: str | None) -> str:
    """The acting user, who must hold the steward's review permission (refusals audited);
    the rest of the command runs as them."""
    from medlake.access import Permission
    from medlake.cli.access import acting

    # The command's own context (Typer's): the standalone click package's current
    # context is not the one Typer runs commands in.
    ctx.with_resource(acting(name))
    return access.require(workspace, Permission.REVIEW_LINKS).user_name


_FIELDS = (
    "name_hanzi", "name_pinyin", "family_name", "given_name", "resident_id", "birth_date",
    "sex", "phone", "address", "postcode",
)  # fmt: skip


@app.command("link")
def link(
    full: Annotated[
        bool, typer.Option("--full", help="Re-score every pair, not only new records.")
    ] = False,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Link source patients into persons (new and changed records unless --full)."""
    with error_console.status("linking source patients"):
        outcome = service.link_workspace(workspace, full=full, actor=access.acting_user_name())
    if json:
        print_json(asdict(outcome) | {"person_ids": len(outcome.person_ids)})
        return
    if outcome.mode == "nothing":
        console.print(f"Nothing new to link ({outcome.records:,} records already linked).")
        return
    print_table(
        f"EMPI link ({outcome.mode})",
        ["", "value"],
        [
            ["records", outcome.records],
            ["new or changed records", outcome.new_records],
            ["model trained now", "yes" if outcome.trained else "no"],
            ["pairs scored", outcome.pairs_scored],
            ["links at threshold", outcome.links],
            ["persons before", outcome.persons_before],
            ["persons after", outcome.persons_after],
            ["source patients moved", outcome.changes],
            ["review queue", outcome.review_queue],
            *[[f"rows moved: {t}", n] for t, n in sorted(outcome.rows_moved.items())],
            *[[f"seconds: {k}", round(v, 2)] for k, v in outcome.seconds.items()],
        ],
    )


@app.command("train")
def train(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """Retrain the linkage model without labels (EM); the next link uses it."""
    with error_console.status("training the linkage model"):
        report = service.train_workspace(workspace, actor=access.acting_user_name())
    if json:
        print_json(asdict(report))
        return
    console.print(f"Trained model {report.model_id} on {report.records:,} records (now active).")


def _side_by_side(item: service.ReviewItem) -> Table:
    table = Table(
        title=f"pair {item.pair_id}  p={item.match_probability:.3f}", title_justify="left"
    )
    for column in ("field", "left", "right"):
        table.add_column(column)
    table.add_row("record", _record(item.left), _record(item.right))
    table.add_row("person", str(item.left.get("person_id")), str(item.right.get("person_id")))
    for name in _FIELDS:
        table.add_row(name, _text(item.left.get(name)), _text(item.right.get(name)))
    evidence = Table(title="evidence", title_justify="left")
    for column in ("comparison", "level", "Bayes factor"):
        evidence.add_column(column)
    for name, level in item.evidence.items():
        bf = level.get("bayes_factor")
        evidence.add_row(name, str(level.get("label")), "" if bf is None else f"{bf:,.3g}")
    outer = Table.grid(padding=(0, 4))
    outer.add_row(table, evidence)
    return outer


def _record(record: dict[str, Any]) -> str:
    return f"{record.get('source_system')}:{record.get('source_patient_id')}"


def _text(value: Any) -> str:
    return "" if value is None else str(value)


@app.command("review")
def review(
    ctx: typer.Context,
    limit: Annotated[int, typer.Option("--limit", help="Pairs to show.")] = 10,
    interactive: Annotated[
        bool,
        typer.Option("--interactive", "-i", help="Ask for a decision on each pair (m/n/s/q)."),
    ] = False,
    steward: StewardOption = None,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Show queued pairs side by side with the evidence per field; -i to decide them.

    Shows identified records: stewards only."""
    steward = _steward(ctx, workspace, steward)
    total, items = service.review_queue(workspace, limit=limit)
    if json:
        print_json({"queue": total, "pairs": [asdict(i) for i in items]})
        return
    console.print(f"Review queue: {total:,} pairs")
    for item in items:
        console.print(_side_by_side(item))
        if not interactive:
            continue
        answer = typer.prompt("match (m), not a match (n), skip (s), quit (q)", default="s")
        if answer.lower().startswith("q"):
            break
        if answer.lower()[:1] in ("m", "n"):
            decision = "match" if answer.lower().startswith("m") else "no_match"
            report = service.decide_pair(workspace, item.pair_id, decision, steward=steward)
            console.print(f"  {decision}: {report.changes:,} source patients moved")


@app.command("decide")
def decide(
    ctx: typer.Context,
    pair: Annotated[str, typer.Argument(help="Pair id from the review queue, or SYS:ID,SYS:ID.")],
    decision: Annotated[str, typer.Argument(help="match or no_match.")],
    steward: StewardOption = None,
    note: Annotated[str | None, typer.Option("--note", help="Why (kept with it).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Record and apply a steward's decision; automatic runs never override it."""
    steward = _steward(ctx, workspace, steward)
    target: str | tuple[str, str, str, str] = pair
    if "," in pair:
        left, _, right = pair.partition(",")
        if ":" not in left or ":" not in right:
            raise UsageError("give two records as SYSTEM:ID,SYSTEM:ID")
        ls, _, li = left.partition(":")
        rs, _, ri = right.partition(":")
        target = (ls, li, rs, ri)
    report = service.decide_pair(workspace, target, decision, steward=steward, note=note)
    console.print(
        f"{report.decision} recorded for pair {report.pair_id}; "
        f"{report.changes:,} source patients moved"
        + (f" (operation {report.operation_id})" if report.operation_id else "")
    )


@app.command("merge")
def merge(
    ctx: typer.Context,
    keep: Annotated[int, typer.Argument(help="Person id that stays.")],
    other: Annotated[int, typer.Argument(help="Person id merged into it.")],
    steward: StewardOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Merge one person into another: every CDM row and omics sample moves (stewards)."""
    steward = _steward(ctx, workspace, steward)
    report = service.merge_persons(workspace, keep, other, actor=steward)
    console.print(
        f"Merged person {report.merged} into {report.kept}: "
        f"{report.source_patients_moved:,} source patients (operation {report.operation_id})."
    )


@app.command("unmerge")
def unmerge(
    ctx: typer.Context,
    operation: Annotated[str, typer.Argument(help="Operation id (see 'medlake empi history').")],
    steward: StewardOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Reverse a merge, decision or link operation exactly (stewards)."""
    steward = _steward(ctx, workspace, steward)
    report = service.unmerge_operation(workspace, operation, actor=steward)
    console.print(
        f"Undid operation {report.undone}: {report.source_patients_moved:,} source patients "
        f"moved back (operation {report.operation_id})."
    )


@app.command("history")
def history(
    limit: Annotated[int, typer.Option("--limit", help="Operations to show.")] = 20,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """EMPI operations, newest first: links, merges, decisions, unmerges."""
    rows = service.operations(workspace, limit=limit)
    if json:
        print_json(rows)
        return
    print_table(
        "EMPI operations",
        ["operation", "kind", "actor", "at", "changes", "undone by"],
        [[r["operation_id"], r["kind"], r["actor"], r["performed_at"], r["changes"],
          r["undone_by"] or ""] for r in rows],
    )  # fmt: skip


@app.command("score")
def score(
    hospital: Annotated[Path, typer.Argument(help="Synthetic hospital folder (with truth/).")],
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Pairwise precision and recall of the lake's persons against a synthetic truth."""
    result = service.score_against_truth(workspace, hospital)
    if json:
        print_json(asdict(result))
        return
    console.print(
        f"precision {result.precision:.4f}  recall {result.recall:.4f}  F1 {result.f1:.4f}  "
        f"({result.records:,} records, {result.true_pairs:,} true pairs, "
        f"review queue {result.review_queue:,})"
    )
    if result.records_without_identifiers:
        console.print(
            f"{result.records_without_identifiers:,} source patients have no identifiers "
            f"(patient record quarantined); recall over the others "
            f"{result.recall_with_identifiers:.4f}"
        )


@app.command("dedupe")
def dedupe(
    file: Annotated[Path, typer.Argument(help="CSV file of people, one per row.")],
    id_column: Annotated[str, typer.Option("--id", help="Column with each row's id.")],
    field: Annotated[
        list[str],
        typer.Option("--field", help="KIND=COLUMN, repeated (given_name, birth_date, ...)."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Where to write id,cluster_id.")],
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Link probability (default 0.99).")
    ] = None,
) -> None:
    """Deduplicate a CSV without a workspace; writes id,cluster_id."""
    fields = {}
    for item in field:
        kind, sep, column = item.partition("=")
        if not sep:
            raise UsageError(f"--field {item!r}: write KIND=COLUMN")
        fields[kind.strip()] = column.strip()
    with error_console.status(f"deduplicating {file.name}"):
        report = service.dedupe_file(
            file, id_column=id_column, fields=fields, out=out, threshold=threshold
        )
    console.print(
        f"{report.records:,} records → {report.clusters:,} clusters "
        f"({report.pairs_scored:,} pairs scored); wrote {report.out}"
    )

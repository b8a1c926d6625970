"""``medlake audit verify|show|anchor``: check and read the audit trail (never change it)."""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import typer

from medlake.audit import AuditTrailAlteredError, EventFilter
from medlake.cli.options import JsonOption, WorkspaceOption
from medlake.cli.render import console, print_json, print_table
from medlake.errors import UsageError
from medlake.service import audit as service

app = typer.Typer(
    help="The tamper-evident audit trail: verify it, show events, anchor its head.",
    no_args_is_help=True,
)


@app.command("verify")
def verify(json: JsonOption = False, workspace: WorkspaceOption = None) -> None:
    """Check every event's hash and link and the anchors; name any altered event."""
    result = service.verify_trail(workspace)
    if json:
        print_json(service.verify_summary(result))
    elif result.ok:
        console.print(
            f"[green]audit trail intact[/]: {result.events:,} events, head {result.head_id} "
            f"{result.head_hash[:12]}…, {result.anchors_checked:,} anchors checked",
            highlight=False,
        )
    else:
        print_table(
            f"Audit trail: {len(result.findings)} findings",
            ["kind", "event", "what"],
            [[f.kind, f.event_id, f.message] for f in result.findings],
        )
    if not result.ok:
        raise AuditTrailAlteredError(
            f"the audit trail was altered: {len(result.findings)} findings "
            f"(first: {result.findings[0].message})"
        )


@app.command("show")
def show(
    user: Annotated[str | None, typer.Option("--user", help="Only this actor.")] = None,
    person: Annotated[
        int | None, typer.Option("--person", help="Only events about this person_id.")
    ] = None,
    action: Annotated[
        str | None, typer.Option("--action", help="Only this action (export finds export.*).")
    ] = None,
    outcome: Annotated[
        str | None, typer.Option("--outcome", help="Only ok, denied or failed.")
    ] = None,
    since: Annotated[
        str | None, typer.Option("--since", help="From this UTC time (ISO 8601, e.g. 2026-01-31).")
    ] = None,
    until: Annotated[
        str | None, typer.Option("--until", help="Before this UTC time (ISO 8601).")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most this many (0: all).")] = 100,
    json: JsonOption = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Show events, newest first, filtered by user, person, action, outcome and time."""
    where = EventFilter(
        actor=user,
        person_id=person,
        action=action,
        outcome=outcome,
        since=_time(since, "--since"),
        until=_time(until, "--until"),
        limit=limit or None,
    )
    events = service.show_events(workspace, where)
    if json:
        print_json(events)
        return
    print_table(
        f"Audit events ({len(events):,})",
        ["id", "when (UTC)", "actor", "action", "object", "outcome", "origin"],
        [
            [
                e["event_id"],
                str(e["occurred_at"])[:19],
                e["actor"],
                e["action"],
                f"{e['object_type'] or ''} {e['object_id'] or ''}".strip(),
                e["outcome"],
                e["origin"],
            ]
            for e in events
        ],
    )


@app.command("anchor")
def anchor(workspace: WorkspaceOption = None) -> None:
    """Write the chain head to audit/anchors.jsonl (and the configured copies) now."""
    written = service.anchor_now(workspace)
    if written is None:
        console.print("head already anchored (or the trail is empty)")
    else:
        console.print(
            f"anchored event {written.event_id} {written.event_hash[:12]}… "
            f"at {written.anchored_at}",
            highlight=False,
        )


def _time(text: str | None, option: str) -> dt.datetime | None:
    if text is None:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError as exc:
        raise UsageError(f"{option}: {text!r} is not an ISO 8601 time") from exc

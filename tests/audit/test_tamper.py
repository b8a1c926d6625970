"""``verify`` names every edited, deleted, inserted or reordered event, and a cut tail.

Each test alters the stored trail the way someone with access to the lake could:
through SQL on the engine, or by opening the DuckDB file with DuckDB itself (no medlake
in between), and expects verification to name exactly the events altered.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import duckdb
import pytest

from medlake.audit import AuditEvent, event_hash, read_events
from medlake.audit.verify import DELETED, EDITED, INSERTED, REORDERED, REWRITTEN, TRUNCATED
from medlake.config import open_workspace
from medlake.service.audit import verify_trail
from medlake.service.workspace import open_lake


def _sql(workspace: Path, statement: str, via: str) -> None:
    if via == "engine":
        with open_lake(open_workspace(workspace)) as engine:
            engine.run_sql(statement)
    else:
        con = duckdb.connect(str(workspace / "lake.duckdb"))
        con.execute(statement)
        con.close()


def _events(workspace: Path) -> list[AuditEvent]:
    with open_lake(open_workspace(workspace)) as engine:
        return read_events(engine)


def _kinds(result) -> set[tuple[str, int | None]]:  # type: ignore[no-untyped-def]
    return {(f.kind, f.event_id) for f in result.findings}


VIA = pytest.mark.parametrize("via", ["engine", "duckdb-file"])


def test_untouched_trail_verifies(trail: Path, trail_shape: tuple[int, int]) -> None:
    result = verify_trail(trail)
    assert result.ok, result.findings
    assert result.events == trail_shape[0]
    assert result.anchors_checked == 1
    # and every stored hash is what the fields call for, recomputed independently
    events = _events(trail)
    assert [e.event_id for e in events] == list(range(1, trail_shape[0] + 1))
    assert all(e.prev_hash == p.event_hash for p, e in itertools.pairwise(events))


@VIA
def test_edited_field_is_named(trail: Path, via: str) -> None:
    _sql(trail, "UPDATE audit_event SET actor = 'mallory' WHERE event_id = 5", via)
    result = verify_trail(trail)
    assert _kinds(result) == {(EDITED, 5)}


@VIA
def test_edited_detail_is_named(trail: Path, via: str) -> None:
    _sql(
        trail,
        """UPDATE audit_event SET detail = replace(detail, '"note"', '"Note"')
           WHERE event_id = 3""",
        via,
    )
    assert _kinds(verify_trail(trail)) == {(EDITED, 3)}


@VIA
def test_edited_and_rehashed_event_is_named(trail: Path, via: str) -> None:
    event = next(e for e in _events(trail) if e.event_id == 10)
    forged = dataclasses.replace(event, outcome="ok" if event.outcome != "ok" else "denied")
    _sql(
        trail,
        f"UPDATE audit_event SET outcome = '{forged.outcome}', "
        f"event_hash = '{event_hash(forged)}' WHERE event_id = 10",
        via,
    )
    assert _kinds(verify_trail(trail)) == {(EDITED, 10)}


@VIA
def test_deleted_event_is_named(trail: Path, via: str) -> None:
    _sql(trail, "DELETE FROM audit_event WHERE event_id IN (6, 7)", via)
    assert _kinds(verify_trail(trail)) == {(DELETED, 6), (DELETED, 7)}


@VIA
def test_inserted_event_is_named(trail: Path, via: str) -> None:
    # A forger who knows the hash: a new event 4 linked to event 3, later ones renumbered.
    events = _events(trail)
    third = events[2]
    forged = dataclasses.replace(
        events[3], actor="mallory", action="read", prev_hash=third.event_hash
    )
    forged = dataclasses.replace(forged, event_hash=event_hash(forged))
    _sql(trail, "UPDATE audit_event SET event_id = event_id + 1 WHERE event_id >= 4", via)
    _sql(trail, _insert_statement(forged), via)
    assert _kinds(verify_trail(trail)) == {(INSERTED, 4)}


@VIA
def test_inserted_duplicate_id_is_named(trail: Path, via: str) -> None:
    events = _events(trail)
    forged = dataclasses.replace(events[8], actor="mallory", occurred_at=events[8].occurred_at)
    forged = dataclasses.replace(forged, event_hash=event_hash(forged))
    _sql(trail, _insert_statement(forged), via)
    assert (INSERTED, 9) in _kinds(verify_trail(trail))
    assert {event_id for _, event_id in _kinds(verify_trail(trail))} == {9}


@VIA
def test_swapped_events_are_named(trail: Path, via: str) -> None:
    _sql(
        trail,
        "UPDATE audit_event SET event_id = CASE event_id WHEN 4 THEN 5 ELSE 4 END "
        "WHERE event_id IN (4, 5)",
        via,
    )
    assert _kinds(verify_trail(trail)) == {(REORDERED, 4), (REORDERED, 5)}


@VIA
def test_truncated_tail_is_caught_by_the_anchor(
    trail: Path, trail_shape: tuple[int, int], via: str
) -> None:
    anchored = trail_shape[1]
    # Cut the trail back before the anchored head, and the head row with it.
    _sql(trail, f"DELETE FROM audit_event WHERE event_id >= {anchored}", via)
    _sql(trail, f"UPDATE audit_head SET event_id = {anchored - 1}", via)
    kept = _events(trail)[-1]
    _sql(trail, f"UPDATE audit_head SET event_hash = '{kept.event_hash}'", via)
    assert _kinds(verify_trail(trail)) == {(TRUNCATED, anchored)}


def test_truncated_tail_is_caught_by_the_head_row(
    trail: Path, trail_shape: tuple[int, int]
) -> None:
    events, anchored = trail_shape
    _sql(trail, f"DELETE FROM audit_event WHERE event_id > {anchored}", "engine")
    assert _kinds(verify_trail(trail)) == {(TRUNCATED, events)}


def test_rewritten_chain_is_caught_by_the_anchor(trail: Path, trail_shape: tuple[int, int]) -> None:
    # Edit event 2 and recompute every hash after it: the chain is consistent again,
    # but the anchored head no longer has the hash the anchor recorded.
    events = _events(trail)
    rewritten: list[AuditEvent] = []
    prev = events[0].event_hash
    for event in events[1:]:
        changed = dataclasses.replace(
            event, prev_hash=prev, actor="mallory" if event.event_id == 2 else event.actor
        )
        changed = dataclasses.replace(changed, event_hash=event_hash(changed))
        rewritten.append(changed)
        prev = changed.event_hash
    _sql(trail, "DELETE FROM audit_event WHERE event_id >= 2", "duckdb-file")
    for event in rewritten:
        _sql(trail, _insert_statement(event), "duckdb-file")
    _sql(trail, f"UPDATE audit_head SET event_hash = '{prev}'", "duckdb-file")
    assert _kinds(verify_trail(trail)) == {(REWRITTEN, trail_shape[1])}


def test_verify_cli_exits_non_zero_and_names_the_event(trail: Path) -> None:
    from typer.testing import CliRunner

    from medlake.cli.main import app

    _sql(trail, "DELETE FROM audit_event WHERE event_id = 11", "engine")
    result = CliRunner().invoke(app, ["audit", "verify", "--json", "-w", str(trail)])
    assert result.exit_code != 0
    findings = json.loads(result.output)["findings"]
    assert [(f["kind"], f["event_id"]) for f in findings] == [("deleted", 11)]


def _insert_statement(event: AuditEvent) -> str:
    def literal(value: object) -> str:
        if value is None:
            return "NULL"
        if isinstance(value, int):
            return str(value)
        return "'" + str(value).replace("'", "''") + "'"

    values = dataclasses.asdict(event)
    values["occurred_at"] = event.occurred_at.isoformat(sep=" ", timespec="microseconds")
    columns = ", ".join(values)
    row = ", ".join(literal(v) for v in values.values())
    return f"INSERT INTO audit_event ({columns}) VALUES ({row})"

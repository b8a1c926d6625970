"""EMPI stewardship: the review queue, steward decisions, merge and unmerge of persons.

The CLI and the server call these for data stewards. Every change of a person is applied
by :func:`medlake.empi.run.apply_and_record` (one transaction, snapshots, per-patient
changes) and written to the audit trail (``empi.decide``, ``merge``, ``unmerge``).
Linking, training and scoring are in :mod:`medlake.service.empi`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from medlake.access import Permission
from medlake.audit import append_event
from medlake.clock import utc_now
from medlake.config import open_workspace
from medlake.empi import store
from medlake.empi.moves import decode_rows
from medlake.empi.run import LinkOptions, apply_and_record, relink_persons
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.service.empi_common import home_ids, options_from, refresh_periods
from medlake.service.policy import authorized, record_read
from medlake.service.workspace import open_lake

__all__ = [
    "DecisionReport",
    "MergeReport",
    "ReviewItem",
    "UnmergeReport",
    "decide_pair",
    "merge_persons",
    "review_queue",
    "unmerge_operation",
]


# ---------------------------------------------------------------------- review


@dataclass(frozen=True)
class ReviewItem:
    """A queued pair: both records side by side and the evidence per field."""

    pair_id: str
    match_probability: float
    left: dict[str, Any]
    right: dict[str, Any]
    evidence: dict[str, Any]


@authorized(Permission.REVIEW_LINKS)
def review_queue(
    workspace_dir: Path | str | None, *, limit: int = 20
) -> tuple[int, list[ReviewItem]]:
    """The queue's size and its first ``limit`` pairs, most uncertain first."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        pairs = engine.table("empi_pair").filter(lambda t: t.status == "pending")
        total = engine.count(pairs)
        rows = engine.execute(
            pairs.order_by((pairs.match_probability - 0.5).abs()).limit(limit)
        ).to_pylist()
        records = _records_by_key(
            engine,
            [(r["left_system"], r["left_id"]) for r in rows]
            + [(r["right_system"], r["right_id"]) for r in rows],
        )
        items = [
            ReviewItem(
                pair_id=r["pair_id"],
                match_probability=r["match_probability"],
                left=records.get(store.record_key(r["left_system"], r["left_id"]), {}),
                right=records.get(store.record_key(r["right_system"], r["right_id"]), {}),
                evidence=json.loads(r["evidence_json"]),
            )
            for r in rows
        ]
        shown = [item.get("person_id") for i in items for item in (i.left, i.right)]
        record_read(engine, "empi_review", "queue", person_ids=[p for p in shown if p is not None],
                    detail={"pairs": [i.pair_id for i in items]})  # fmt: skip
        return total, items


def _records_by_key(engine: Engine, wanted: list[tuple[str, str]]) -> dict[str, dict[str, Any]]:
    if not wanted:
        return {}
    records = store.load_records(engine)
    keys = {store.record_key(s, p) for s, p in wanted}
    return {r["unique_id"]: r for r in records.to_pylist() if r["unique_id"] in keys}


@dataclass(frozen=True)
class DecisionReport:
    pair_id: str
    decision: str
    operation_id: str | None
    changes: int


@authorized(Permission.REVIEW_LINKS)
def decide_pair(
    workspace_dir: Path | str | None,
    pair: str | tuple[str, str, str, str],
    decision: str,
    *,
    steward: str,
    note: str | None = None,
) -> DecisionReport:
    """Record a steward's decision on a queued pair (by id) or any two source patients
    (``(system, id, system, id)``) and apply it: *match* merges their persons, *no_match*
    splits them if they are one person. Later automatic runs never override it."""
    if decision not in ("match", "no_match"):
        raise UsageError(f"decision must be 'match' or 'no_match', not {decision!r}")
    workspace = open_workspace(workspace_dir)
    options = options_from(workspace.settings.empi)
    with open_lake(workspace) as engine:
        left, right = _pair_records(engine, pair)
        pid = store.pair_id(store.record_key(*left), store.record_key(*right))
        with store.atomically(engine):
            engine.load_arrow(
                "empi_decision",
                pa.table(
                    {
                        "decision_id": [store.new_id()], "pair_id": [pid],
                        "left_system": [left[0]], "left_id": [left[1]],
                        "right_system": [right[0]], "right_id": [right[1]],
                        "decision": [decision], "steward": [steward],
                        "decided_at": pa.array([utc_now()], pa.timestamp("us")),
                        "note": pa.array([note], pa.string()),
                    }
                ),
            )  # fmt: skip
            queue = engine.table("empi_pair")
            queued = engine.execute(queue.filter(queue.pair_id == pid))
            if queued.num_rows:
                engine.delete_where("empi_pair", queue.pair_id == pid)
                engine.load_arrow(
                    "empi_pair",
                    queued.set_column(
                        queued.column_names.index("status"), "status", pa.array(["decided"])
                    ),
                )
        persons = _person_of(engine, [left, right])
        operation_id, changes = None, 0
        if decision == "match" and persons[0] != persons[1]:
            operation_id, changes = _merge(engine, persons[0], persons[1], steward, options,
                                           kind="decision", detail={"pair_id": pid})  # fmt: skip
        elif decision == "no_match" and persons[0] == persons[1]:
            operation_id, changes = relink_persons(
                engine, options, [persons[0]], home_ids=home_ids, actor=steward
            )
        append_event(
            engine, actor=steward, action="empi.decide", object_type="empi_pair", object_id=pid,
            detail={"decision": decision, "operation_id": operation_id,
                    "person_ids": sorted(set(persons))},
        )  # fmt: skip
        refresh_periods(engine, [operation_id])
        return DecisionReport(pid, decision, operation_id, changes)


def _pair_records(
    engine: Engine, pair: str | tuple[str, str, str, str]
) -> tuple[tuple[str, str], tuple[str, str]]:
    if isinstance(pair, tuple):
        return (pair[0], pair[1]), (pair[2], pair[3])
    queue = engine.table("empi_pair")
    rows = engine.execute(queue.filter(queue.pair_id == pair)).to_pylist()
    if not rows:
        raise UsageError(f"no pair {pair!r} in the review queue")
    row = rows[0]
    return (row["left_system"], row["left_id"]), (row["right_system"], row["right_id"])


def _person_of(engine: Engine, patients: list[tuple[str, str]]) -> list[int]:
    table = engine.table("source_patient")
    out = []
    for system, patient in patients:
        rows = engine.execute(
            table.filter(
                (table.source_system == system) & (table.source_patient_id == patient)
            ).select("person_id")
        )
        if rows.num_rows == 0:
            raise UsageError(f"no source patient {system}:{patient} in the lake")
        out.append(int(rows.column("person_id")[0].as_py()))
    return out


# ---------------------------------------------------------------------- merge / unmerge


def _members(engine: Engine, person_id: int) -> pa.Table:
    table = engine.table("source_patient")
    return engine.execute(
        table.filter(table.person_id == person_id).select("source_system", "source_patient_id")
    )


def _merge(
    engine: Engine,
    keep: int,
    other: int,
    actor: str,
    options: LinkOptions,
    *,
    kind: str,
    detail: dict[str, Any],
) -> tuple[str, int]:
    moving = _members(engine, other)
    if moving.num_rows == 0:
        raise UsageError(f"person {other} has no source patients")
    count = moving.num_rows
    changes = moving.append_column(
        "old_person_id", pa.array([other] * count, pa.int64())
    ).append_column("new_person_id", pa.array([keep] * count, pa.int64()))
    operation_id, _ = apply_and_record(
        engine, changes, kind=kind, actor=actor,
        detail={**detail, "kept": keep, "merged": other}, options=options,
    )  # fmt: skip
    return operation_id, count


@dataclass(frozen=True)
class MergeReport:
    operation_id: str
    kept: int
    merged: int
    source_patients_moved: int


@authorized(Permission.REVIEW_LINKS)
def merge_persons(
    workspace_dir: Path | str | None, keep: int, other: int, *, actor: str
) -> MergeReport:
    """Merge person ``other`` into ``keep``: every row of ``other`` moves to ``keep``.

    Recorded as a steward *match* between one record of each, so later automatic runs
    keep them together.
    """
    if keep == other:
        raise UsageError("cannot merge a person with itself")
    workspace = open_workspace(workspace_dir)
    options = options_from(workspace.settings.empi)
    with open_lake(workspace) as engine:
        a, b = _members(engine, keep), _members(engine, other)
        if a.num_rows == 0 or b.num_rows == 0:
            raise UsageError(f"person {keep if a.num_rows == 0 else other} has no source patients")
        left = (a.column(0)[0].as_py(), a.column(1)[0].as_py())
        right = (b.column(0)[0].as_py(), b.column(1)[0].as_py())
        _store_decision(engine, left, right, "match", actor, "merge")
        operation_id, moved = _merge(engine, keep, other, actor, options, kind="merge", detail={})
        append_event(
            engine, actor=actor, action="merge", object_type="person", object_id=str(keep),
            detail={"operation_id": operation_id, "person_ids": [keep, other]},
        )  # fmt: skip
        refresh_periods(engine, [operation_id])
        return MergeReport(operation_id, keep, other, moved)


def _store_decision(
    engine: Engine, left: tuple[str, str], right: tuple[str, str], decision: str, actor: str,
    note: str,
) -> None:  # fmt: skip
    engine.load_arrow(
        "empi_decision",
        pa.table(
            {
                "decision_id": [store.new_id()],
                "pair_id": [store.pair_id(store.record_key(*left), store.record_key(*right))],
                "left_system": [left[0]], "left_id": [left[1]],
                "right_system": [right[0]], "right_id": [right[1]],
                "decision": [decision], "steward": [actor],
                "decided_at": pa.array([utc_now()], pa.timestamp("us")), "note": [note],
            }
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class UnmergeReport:
    operation_id: str
    undone: str
    source_patients_moved: int


@authorized(Permission.REVIEW_LINKS)
def unmerge_operation(
    workspace_dir: Path | str | None, operation_id: str, *, actor: str
) -> UnmergeReport:
    """Reverse an operation exactly: its source patients, rows and person rows go back.

    Refused when a later operation moved any of its source patients again (unmerge that
    one first). The separated records get steward *not a match* decisions, so an
    automatic run does not join them again.
    """
    workspace = open_workspace(workspace_dir)
    options = options_from(workspace.settings.empi)
    with open_lake(workspace) as engine:
        ops = engine.table("empi_operation")
        found = engine.execute(ops.filter(ops.operation_id == operation_id)).to_pylist()
        if not found:
            raise UsageError(f"no EMPI operation {operation_id!r}")
        if found[0]["undone_by"]:
            raise UsageError(f"operation {operation_id} was already undone")
        changes_t = engine.table("empi_change")
        changes = engine.execute(changes_t.filter(changes_t.operation_id == operation_id))
        now_at = {
            store.record_key(s, p): n
            for s, p, n in zip(
                *[engine.execute(engine.table("source_patient")).column(c).to_pylist()
                  for c in ("source_system", "source_patient_id", "person_id")],
                strict=True,
            )
        }  # fmt: skip
        rows = changes.to_pylist()
        for row in rows:
            if (
                now_at.get(store.record_key(row["source_system"], row["source_patient_id"]))
                != row["new_person_id"]
            ):
                raise UsageError(
                    f"source patient {row['source_system']}:{row['source_patient_id']} moved "
                    f"again after operation {operation_id}; unmerge the later operation first"
                )
        reverse = pa.table(
            {
                "source_system": [r["source_system"] for r in rows],
                "source_patient_id": [r["source_patient_id"] for r in rows],
                "old_person_id": pa.array([r["new_person_id"] for r in rows], pa.int64()),
                "new_person_id": pa.array([r["old_person_id"] for r in rows], pa.int64()),
            }
        )
        snaps_t = engine.table("empi_snapshot")
        snaps = engine.execute(snaps_t.filter(snaps_t.operation_id == operation_id)).to_pylist()
        restore = {
            (s["table_name"], s["person_id"]): decode_rows(s["rows_ipc"])
            for s in snaps
            if s["kind"] == "removed"
        }
        drop = {(s["table_name"], s["person_id"]): True for s in snaps if s["kind"] == "created"}
        with store.atomically(engine):
            _separate(engine, rows, now_at, actor)
            new_op, _ = apply_and_record(
                engine, reverse, kind="unmerge", actor=actor,
                detail={"undoes": operation_id}, options=options, undoes=operation_id,
                restore=restore, drop_created=drop,
            )  # fmt: skip
        append_event(
            engine, actor=actor, action="unmerge", object_type="empi_operation",
            object_id=operation_id,
            detail={"operation_id": new_op,
                    "person_ids": sorted({r["old_person_id"] for r in rows}
                                         | {r["new_person_id"] for r in rows})},
        )  # fmt: skip
        refresh_periods(engine, [new_op])
        return UnmergeReport(new_op, operation_id, reverse.num_rows)


def _separate(
    engine: Engine, rows: list[dict[str, Any]], now_at: dict[str, int], actor: str
) -> None:
    """*Not a match* between each record going back and one that stays where it was."""
    moving = {store.record_key(r["source_system"], r["source_patient_id"]) for r in rows}
    stayers: dict[int, str] = {}
    for key, person in sorted(now_at.items()):
        if key not in moving:
            stayers.setdefault(person, key)
    for row in rows:
        stay = stayers.get(row["new_person_id"])
        if stay is not None:
            _store_decision(
                engine, (row["source_system"], row["source_patient_id"]), store.split_key(stay),
                "no_match", actor, "unmerge",
            )  # fmt: skip
    # A steward's earlier *match* across the separation (the merge's own) is revoked.
    person_of_stayer = {key: person for key, person in now_at.items() if key not in moving}
    for decision in store.decisions(engine).values():
        if decision["decision"] != "match":
            continue
        left = store.record_key(decision["left_system"], decision["left_id"])
        right = store.record_key(decision["right_system"], decision["right_id"])
        for mover, other in ((left, right), (right, left)):
            if mover in moving and other in person_of_stayer:
                _store_decision(
                    engine,
                    store.split_key(left),
                    store.split_key(right),
                    "no_match",
                    actor,
                    "unmerge",
                )
                break

"""EMPI use cases: link a workspace's patients, train, review, merge, unmerge, score.

The CLI, the server and ``make demo`` call these. Each opens the workspace's lake,
runs the :mod:`medlake.empi` domain on it, and writes an audit event for every change
of a person (``empi.link``, ``merge``, ``unmerge``, ``empi.decide``, ``empi.train``).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from medlake.audit import append_event
from medlake.config import EmpiSection, Workspace, open_workspace
from medlake.empi import store
from medlake.empi.evaluate import pairwise_score
from medlake.empi.run import (
    LinkOptions,
    LinkOutcome,
    apply_and_record,
    link,
    relink_persons,
    train_model,
)
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.ingest.ids import initial_person_id
from medlake.service.workspace import open_lake

SYSTEM_ACTOR = "system:empi"

__all__ = [
    "LinkOutcome",
    "ReviewItem",
    "TruthScore",
    "decide_pair",
    "dedupe_file",
    "link_engine",
    "link_workspace",
    "merge_persons",
    "operations",
    "review_queue",
    "score_against_truth",
    "score_lake",
    "train_workspace",
    "unmerge_operation",
]


def options_from(section: EmpiSection) -> LinkOptions:
    return LinkOptions(
        link_threshold=section.link_threshold,
        review_threshold=section.review_threshold,
        survivorship=section.survivorship,
        trusted_sources=tuple(section.trusted_sources),
        train_max_pairs=section.train_max_pairs,
    )


def home_ids(systems: Sequence[str], patients: Sequence[str]) -> list[int]:
    """The person id ingest gave each source patient (its own, before any link)."""
    return [initial_person_id(s, p) for s, p in zip(systems, patients, strict=True)]


def link_workspace(
    workspace_dir: Path | str | None,
    *,
    full: bool = False,
    actor: str = SYSTEM_ACTOR,
) -> LinkOutcome:
    """Link the workspace's source patients into persons (incremental unless ``full``)."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        return _link(engine, options_from(workspace.settings.empi), full=full, actor=actor)


def _link(engine: Engine, options: LinkOptions, *, full: bool, actor: str) -> LinkOutcome:
    outcome = link(engine, options, home_ids=home_ids, actor=actor, full=full)
    if outcome.mode != "nothing":
        append_event(
            engine, actor=actor, action="empi.link", object_type="empi_operation",
            object_id=outcome.operation_id,
            detail={"mode": outcome.mode, "records": outcome.records,
                    "changes": outcome.changes, "review_queue": outcome.review_queue,
                    "person_ids": outcome.person_ids[:1000]},
        )  # fmt: skip
    return outcome


def link_engine(engine: Engine, workspace: Workspace) -> LinkOutcome | None:
    """The ingest hook: link new source patients on an open lake (incremental)."""
    if engine.count("pii_person") == 0:
        return None
    return _link(engine, options_from(workspace.settings.empi), full=False, actor=SYSTEM_ACTOR)


@dataclass(frozen=True)
class TrainReport:
    model_id: str
    records: int


def train_workspace(workspace_dir: Path | str | None, *, actor: str = SYSTEM_ACTOR) -> TrainReport:
    """Retrain the linkage model (EM, no labels) and make it the active one.

    Persons do not change until the next ``link``; steward decisions still hold then.
    """
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        model_id, records = train_model(engine, options_from(workspace.settings.empi), actor)
        append_event(
            engine, actor=actor, action="empi.train", object_type="empi_model",
            object_id=model_id, detail={"records": records},
        )  # fmt: skip
        return TrainReport(model_id, records)


# ---------------------------------------------------------------------- review


@dataclass(frozen=True)
class ReviewItem:
    """A queued pair: both records side by side and the evidence per field."""

    pair_id: str
    match_probability: float
    left: dict[str, Any]
    right: dict[str, Any]
    evidence: dict[str, Any]


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
        with engine.transaction():
            engine.load_arrow(
                "empi_decision",
                pa.table(
                    {
                        "decision_id": [store.new_id()], "pair_id": [pid],
                        "left_system": [left[0]], "left_id": [left[1]],
                        "right_system": [right[0]], "right_id": [right[1]],
                        "decision": [decision], "steward": [steward],
                        "decided_at": pa.array([store.now()], pa.timestamp("us")),
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
                "decided_at": pa.array([store.now()], pa.timestamp("us")), "note": [note],
            }
        ),
    )  # fmt: skip


@dataclass(frozen=True)
class UnmergeReport:
    operation_id: str
    undone: str
    source_patients_moved: int


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
        from medlake.empi.moves import decode_rows

        restore = {
            (s["table_name"], s["person_id"]): decode_rows(s["rows_ipc"])
            for s in snaps
            if s["kind"] == "removed"
        }
        drop = {(s["table_name"], s["person_id"]): True for s in snaps if s["kind"] == "created"}
        with engine.transaction():
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


# ---------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class TruthScore:
    """The lake's persons against a synthetic hospital's truth."""

    precision: float
    recall: float
    f1: float
    records: int
    predicted_pairs: int
    true_pairs: int
    review_queue: int

    #: Source patients with no identifiers in the lake (their patient record was
    #: quarantined): nothing to link them on, so they count against recall.
    records_without_identifiers: int = 0
    #: Recall over the source patients that have identifiers.
    recall_with_identifiers: float = 1.0


def _truth_mapping(hospital_dir: Path) -> dict[str, str]:
    """Source patient key (as the lake names it) → true person, from ``truth/``."""
    from medlake.synth.emr import fhir_patient_id

    truth = hospital_dir / "truth"
    seed = json.loads((truth / "manifest.json").read_text(encoding="utf-8"))["seed"]
    mapping = {}
    with (truth / "source_records.csv").open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            system = row["system"].lower()
            patient = row["source_patient_id"]
            if system == "emr":  # the lake knows EMR patients by their FHIR id
                patient = fhir_patient_id(seed, patient)
            mapping[store.record_key(system, patient)] = row["person_key"]
    return mapping


def score_lake(engine: Engine, hospital_dir: Path) -> TruthScore:
    """Pairwise precision/recall of the lake's ``source_patient`` persons vs truth."""
    truth = _truth_mapping(Path(hospital_dir))
    patients = engine.execute(
        engine.table("source_patient").select("source_system", "source_patient_id", "person_id")
    )
    pii = engine.execute(
        engine.table("pii_person").select("source_system", "source_patient_id").distinct()
    )
    identified = {
        store.record_key(s, p)
        for s, p in zip(pii.column(0).to_pylist(), pii.column(1).to_pylist(), strict=True)
    }
    predicted, actual, has_identifiers = [], [], []
    for s, p, person in zip(
        *[
            patients.column(c).to_pylist()
            for c in ("source_system", "source_patient_id", "person_id")
        ],
        strict=True,
    ):
        key = store.record_key(s, p)
        if key in truth:
            predicted.append(person)
            actual.append(truth[key])
            has_identifiers.append(key in identified)
    queue = engine.count(engine.table("empi_pair").filter(lambda t: t.status == "pending"))
    score = pairwise_score(predicted, actual)
    linkable = pairwise_score(
        [x for x, ok in zip(predicted, has_identifiers, strict=True) if ok],
        [x for x, ok in zip(actual, has_identifiers, strict=True) if ok],
    )
    return TruthScore(
        score.precision, score.recall, score.f1, score.records, score.predicted_pairs,
        score.true_pairs, queue, has_identifiers.count(False), linkable.recall,
    )  # fmt: skip


def score_against_truth(workspace_dir: Path | str | None, hospital_dir: Path | str) -> TruthScore:
    """Score the workspace's persons against ``hospital_dir/truth`` (for ``make demo``)."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        return score_lake(engine, Path(hospital_dir))


# ---------------------------------------------------------------------- plain files


@dataclass(frozen=True)
class DedupeReport:
    records: int
    clusters: int
    pairs_scored: int
    links: int
    out: Path


def dedupe_file(
    path: Path | str,
    *,
    id_column: str,
    fields: dict[str, str],
    out: Path | str,
    threshold: float | None = None,
) -> DedupeReport:
    """Deduplicate a CSV of people; write ``id,cluster_id`` to ``out``."""
    import pyarrow.csv as pacsv

    from medlake.config import EngineSettings
    from medlake.empi.dedupe import dedupe, records_from
    from medlake.engine import open_engine

    source = Path(path)
    if not source.is_file():
        raise UsageError(f"{source}: no such file")
    table = pacsv.read_csv(
        source,
        convert_options=pacsv.ConvertOptions(
            column_types={}, strings_can_be_null=True, auto_dict_encode=False
        ),
        read_options=pacsv.ReadOptions(autogenerate_column_names=False),
    )
    table = table.cast(pa.schema([(name, pa.string()) for name in table.column_names]))
    records = records_from(table, id_column, fields)
    section = EmpiSection()
    with open_engine(EngineSettings(kind="duckdb", path=":memory:"), source.parent) as engine:
        result = dedupe(
            engine,
            records,
            threshold=threshold if threshold is not None else section.link_threshold,
            max_pairs=section.train_max_pairs,
        )
    target = Path(out)
    with target.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["id", "cluster_id"])
        writer.writerows(zip(result.ids, result.clusters, strict=True))
    return DedupeReport(
        len(result.ids), result.cluster_count, result.pairs_scored, result.links, target
    )


def operations(workspace_dir: Path | str | None, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest EMPI operations, newest first."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        ops = engine.table("empi_operation")
        return engine.execute(ops.order_by(ops.seq.desc()).limit(limit)).to_pylist()

"""EMPI use cases: link a workspace's patients, train, score against truth, dedupe files.

The CLI, the server, ingest's hook and ``make demo`` call these. Each opens the
workspace's lake, runs the :mod:`medlake.empi` domain on it, and writes an audit event
for every change of a person (``empi.link``, ``empi.train``). Stewardship (review queue,
decisions, merge, unmerge) is in :mod:`medlake.service.empi_steward`; its names are
re-exported here so ``medlake.service.empi`` stays the one place to import from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from medlake.access import Permission
from medlake.audit import append_event
from medlake.clock import utc_now
from medlake.config import EmpiSection, Workspace, open_workspace
from medlake.empi import store
from medlake.empi.evaluate import pairwise_score
from medlake.empi.model import TrainingError
from medlake.empi.run import LinkOptions, LinkOutcome, link, train_model
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.service.empi_common import SYSTEM_ACTOR, home_ids, options_from, refresh_periods
from medlake.service.empi_steward import (
    DecisionReport,
    MergeReport,
    ReviewItem,
    UnmergeReport,
    decide_pair,
    merge_persons,
    review_queue,
    unmerge_operation,
)
from medlake.service.policy import acting_user_name, authorized, current_principal
from medlake.service.workspace import open_lake

__all__ = [
    "SYSTEM_ACTOR",
    "DecisionReport",
    "LinkOutcome",
    "MergeReport",
    "ReviewItem",
    "TrainReport",
    "TruthScore",
    "UnmergeReport",
    "decide_pair",
    "dedupe_file",
    "home_ids",
    "link_engine",
    "link_workspace",
    "merge_persons",
    "operations",
    "options_from",
    "review_queue",
    "score_against_truth",
    "score_lake",
    "train_workspace",
    "unmerge_operation",
]


@authorized(Permission.REVIEW_LINKS)
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


def _link(
    engine: Engine,
    options: LinkOptions,
    *,
    full: bool,
    actor: str,
    role: str | None = None,
    triggered_by: str | None = None,
) -> LinkOutcome:
    outcome = link(engine, options, home_ids=home_ids, actor=actor, full=full)
    if outcome.changes:
        refresh_periods(engine, [outcome.operation_id])
    if outcome.mode != "nothing":
        detail: dict[str, Any] = {
            "mode": outcome.mode, "records": outcome.records, "changes": outcome.changes,
            "review_queue": outcome.review_queue, "person_ids": outcome.person_ids[:1000],
            "trained": outcome.trained,
        }  # fmt: skip
        if triggered_by:
            detail["triggered_by"] = triggered_by
        append_event(
            engine, actor=actor, role=role, action="empi.link", object_type="empi_operation",
            object_id=outcome.operation_id, detail=detail, occurred_at=utc_now(),
        )  # fmt: skip
    return outcome


def link_engine(engine: Engine, workspace: Workspace) -> LinkOutcome | None:
    """The ingest hook: link new source patients on an open lake (incremental).

    None when there is nothing to link yet: no identifiers, or no two records sharing
    anything a model could be trained on (a first small ingest); the next run tries
    again. A run that brought no new or changed identifiers costs one anti-join.

    The run, its audit event and any model it trains are the acting user's (who ran the
    ingest; ``$MEDLAKE_USER`` or the login outside a checked call), the event's detail
    saying ``"triggered_by": "ingest"``.
    """
    if engine.count("pii_person") == 0:
        return None
    principal = current_principal()
    try:
        return _link(
            engine, options_from(workspace.settings.empi), full=False,
            actor=acting_user_name(None), role=principal.role.value if principal else None,
            triggered_by="ingest",
        )  # fmt: skip
    except TrainingError:
        return None


@dataclass(frozen=True)
class TrainReport:
    model_id: str
    records: int


@authorized(Permission.REVIEW_LINKS)
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
    #: Persons the scored source patients form in the lake.
    persons: int = 0


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
        len(set(predicted)),
    )  # fmt: skip


@authorized(Permission.REVIEW_LINKS)
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


@authorized(Permission.REVIEW_LINKS)
def operations(workspace_dir: Path | str | None, *, limit: int = 20) -> list[dict[str, Any]]:
    """The latest EMPI operations, newest first."""
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        ops = engine.table("empi_operation")
        return engine.execute(ops.order_by(ops.seq.desc()).limit(limit)).to_pylist()

"""Patient 360 (患者360视图): one person's whole timeline across every linked source system.

Visits, diagnoses, drugs, procedures, measurements with values, observations, specimens,
devices, notes, death and omics samples, each item with its concept, its source code,
and where it came from (source system, source record id, batch), so a clinician or a
steward can go from the lake back to the record in the HIS, LIS or EMR. The timeline is
built from the lake tables through the engine, one query per domain.

Each query is built with Ibis and compiled once per process and lake (with a sentinel
person id), then reused with the person's id put in the sentinel's place: building and
compiling a dozen Ibis expressions per call cost far more than running them (patient 360
answers many calls a second in the server).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import ibis.expr.types as ir
import sqlglot
import sqlglot.expressions as sge

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.service.policy import authorized, record_read
from medlake.service.workspace import open_lake


@dataclass(frozen=True)
class Domain:
    """How one CDM table becomes timeline items."""

    table: str
    kind: str
    row_id: str | None
    concept: str | None
    start: str
    end: str | None = None
    source_value: str | None = None
    value: tuple[str, ...] = ()


DOMAINS: tuple[Domain, ...] = (
    Domain("visit_occurrence", "visit", "visit_occurrence_id", "visit_concept_id",
           "visit_start_date", "visit_end_date", "visit_source_value"),
    Domain("condition_occurrence", "condition", "condition_occurrence_id", "condition_concept_id",
           "condition_start_date", "condition_end_date", "condition_source_value"),
    Domain("drug_exposure", "drug", "drug_exposure_id", "drug_concept_id",
           "drug_exposure_start_date", "drug_exposure_end_date", "drug_source_value",
           ("quantity", "days_supply", "sig")),
    Domain("procedure_occurrence", "procedure", "procedure_occurrence_id", "procedure_concept_id",
           "procedure_date", "procedure_end_date", "procedure_source_value"),
    Domain("measurement", "measurement", "measurement_id", "measurement_concept_id",
           "measurement_date", None, "measurement_source_value",
           ("value_as_number", "unit_source_value", "range_low", "range_high",
            "value_source_value")),
    Domain("observation", "observation", "observation_id", "observation_concept_id",
           "observation_date", None, "observation_source_value",
           ("value_as_number", "value_as_string", "unit_source_value")),
    Domain("specimen", "specimen", "specimen_id", "specimen_concept_id", "specimen_date",
           None, "specimen_source_value"),
    Domain("device_exposure", "device", "device_exposure_id", "device_concept_id",
           "device_exposure_start_date", "device_exposure_end_date", "device_source_value"),
    Domain("note", "note", "note_id", "note_class_concept_id", "note_date", None,
           "note_source_value", ("note_title",)),
    Domain("death", "death", None, "cause_concept_id", "death_date", None, "cause_source_value"),
)  # fmt: skip


@dataclass
class TimelineItem:
    kind: str
    start: dt.date | None
    end: dt.date | None
    concept_id: int | None
    concept_name: str | None
    source_value: str | None
    values: dict[str, Any]
    visit_occurrence_id: int | None
    source_system: str | None
    source_record_id: str | None
    batch_id: str | None


@dataclass
class PersonTimeline:
    person_id: int
    year_of_birth: int | None
    gender: str | None
    death_date: dt.date | None
    source_patients: list[dict[str, Any]]
    items: list[TimelineItem] = field(default_factory=list)
    omics_samples: list[dict[str, Any]] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for item in self.items:
            out[item.kind] = out.get(item.kind, 0) + 1
        return out

    def as_dict(self) -> dict[str, Any]:
        return asdict(self) | {"counts": self.counts()}


@authorized(Permission.READ_IDENTIFIED)
def person_timeline(
    workspace_dir: Path | Workspace | None, person_id: int, *, with_note_text: bool = False
) -> PersonTimeline:
    """The person's timeline, oldest first (items without a date last).

    ``with_note_text`` adds each note's full text (identified data) to its values.

    Raises:
        UsageError: no person with that id.
    """
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        person = _one(engine, "person", person_id)
        if person is None:
            raise UsageError(f"no person {person_id} in the lake")
        record_read(engine, "person", str(person_id), person_ids=[person_id],
                    detail={"view": "timeline", "note_text": with_note_text})  # fmt: skip
        items = []
        for domain in DOMAINS:
            items += _items(engine, domain, person_id, with_note_text)
        _name_concepts(engine, items)

        def build_sources(pid: int) -> ir.Table:
            patients = engine.table("source_patient")
            return (
                patients.filter(patients.person_id == pid)
                .select("source_system", "source_patient_id", "first_seen", "last_seen")
                .order_by(["source_system", "source_patient_id"])
            )

        def build_omics(pid: int) -> ir.Table:
            samples = engine.table("omics_sample")
            return (
                samples.filter(samples.person_id == pid)
                .select("sample_id", "assay", "file_format", "source_system",
                        "source_patient_id", "collected_date")
                .order_by(["assay", "sample_id"])
            )  # fmt: skip

        sources, _ = _person_rows(engine, "sources", build_sources, person_id)
        omics, _ = _person_rows(engine, "omics", build_omics, person_id)
        gender = _concept_names(engine, [person["gender_concept_id"]]).get(
            person["gender_concept_id"]
        )
    death = next((item.start for item in items if item.kind == "death"), None)
    items.sort(key=lambda item: (item.start is None, item.start or dt.date.min, item.kind))
    return PersonTimeline(person_id, person.get("year_of_birth"), gender, death, sources, items,
                          omics)  # fmt: skip


#: A person id no lake holds: marks where a cached statement takes the person's id.
_SENTINEL = 7_316_028_455_204_913_113
_STATEMENTS: dict[tuple[str, str, str], tuple[sge.Expression, tuple[str, ...]]] = {}
_STATEMENTS_LOCK = threading.Lock()


def _person_rows(engine: Engine, key: str, build: Callable[[int], ir.Table],
                 person_id: int) -> tuple[list[dict[str, Any]], tuple[str, ...]]:  # fmt: skip
    """The rows of ``build(person_id)`` and the first table's columns, with the statement
    compiled once per lake and kept (see the module docstring)."""
    cache_key = (engine.kind, str(getattr(engine, "path", "")), key)
    with _STATEMENTS_LOCK:
        cached = _STATEMENTS.get(cache_key)
    if cached is None:
        expr = build(_SENTINEL)
        sql = str(engine.ibis.compile(expr))
        cached = (sqlglot.parse_one(sql, read=engine.sql_dialect), tuple(expr.columns))
        with _STATEMENTS_LOCK:
            _STATEMENTS[cache_key] = cached
    statement, columns = cached
    sentinel = str(_SENTINEL)
    bound = statement.transform(
        lambda node: (
            sge.convert(int(person_id))
            if isinstance(node, sge.Literal) and not node.is_string and node.this == sentinel
            else node
        )
    )
    result = engine.run_sql(bound, dialect=engine.sql_dialect)
    return ([] if result is None else result.to_pylist()), columns


def _one(engine: Engine, table: str, person_id: int) -> dict[str, Any] | None:
    def build(pid: int) -> ir.Table:
        t = engine.table(table)
        return t.filter(t.person_id == pid).limit(1)

    rows, _ = _person_rows(engine, f"one:{table}", build, person_id)
    return rows[0] if rows else None


def _items(engine: Engine, domain: Domain, person_id: int, with_text: bool) -> list[TimelineItem]:
    def build(pid: int) -> ir.Table:
        table = engine.table(domain.table)
        rows_expr = table.filter(table.person_id == pid)
        if domain.row_id is not None:
            records = engine.table("source_record")
            current = records.filter(
                (records.cdm_table == domain.table) & records.is_current
            ).select(
                _row=records.cdm_row_id, source_system=records.source_system,
                source_record_id=records.source_record_id, batch_id=records.batch_id,
            )  # fmt: skip
            rows_expr = rows_expr.left_join(current, rows_expr[domain.row_id] == current._row)
        return rows_expr

    rows, all_columns = _person_rows(engine, f"items:{domain.table}", build, person_id)
    columns = set(all_columns)
    value_columns = [c for c in domain.value if c in columns]
    if with_text and domain.table == "note":
        value_columns.append("note_text")
    items = []
    for row in rows:
        items.append(TimelineItem(
            kind=domain.kind,
            start=row.get(domain.start),
            end=row.get(domain.end) if domain.end else None,
            concept_id=row.get(domain.concept) if domain.concept else None,
            concept_name=None,
            source_value=row.get(domain.source_value) if domain.source_value else None,
            values={c: row[c] for c in value_columns if row.get(c) is not None},
            visit_occurrence_id=row.get("visit_occurrence_id"),
            source_system=row.get("source_system"),
            source_record_id=row.get("source_record_id"),
            batch_id=row.get("batch_id"),
        ))  # fmt: skip
    return items


def _name_concepts(engine: Engine, items: list[TimelineItem]) -> None:
    names = _concept_names(engine, [item.concept_id for item in items])
    for item in items:
        item.concept_name = names.get(item.concept_id)


def _concept_names(engine: Engine, ids: list[int | None]) -> dict[int | None, str]:
    wanted = sorted({i for i in ids if i})
    if not wanted:
        return {}
    concept = engine.table("concept")
    rows = engine.execute(
        concept.filter(concept.concept_id.isin(wanted)).select("concept_id", "concept_name")
    ).to_pylist()
    return {row["concept_id"]: row["concept_name"] for row in rows}

"""Patient 360 (患者360视图): one person's whole timeline across every linked source system.

Visits, diagnoses, drugs, procedures, measurements with values, observations, specimens,
devices, notes, death and omics samples, each item with its concept, its source code,
and where it came from (source system, source record id, batch), so a clinician or a
steward can go from the lake back to the record in the HIS, LIS or EMR. The timeline is
built from the lake tables through the engine in four statements: the person, every
domain's items with their source records at once, the source patients and the omics
samples.

Patient 360 answers many calls a second in the server, and per call the work around the
query used to cost far more than running it (a dozen Ibis expressions built and
compiled, each table's schema looked up, the concept names fetched in a second round).
So the items are one ``UNION ALL`` over the domains and the person's current source
records, built once per process and lake as a
:class:`~medlake.engine.prepared.PreparedQuery` and run with the person id bound; the
records and the concept names (kept per data version of ``concept``) are joined to the
rows in Python, because DuckDB's hash joins cost more than the rows (1M lake: 8.4 ->
6.2 ms CPU per call). Each branch filters ``person_id = ?``: on a lake whose tables are in
person order (zone maps: DuckDB reads only the row groups whose min/max hold the id)
that touches one row group per table. In the server the engine comes from
:func:`~medlake.service.lake_pool.pooled_lake` rather than a fresh connection per call.
"""

from __future__ import annotations

import contextvars
import datetime as dt
import threading
from collections.abc import Hashable
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import sqlglot.expressions as sge

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.engine.prepared import PreparedQuery
from medlake.errors import UsageError
from medlake.service.lake_pool import is_serving, pooled_lake
from medlake.service.policy import authorized, record_read


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

    def as_dict(self) -> dict[str, Any]:
        out = {name: getattr(self, name) for name in _ITEM_FIELDS}
        out["values"] = dict(self.values)
        return out


_ITEM_FIELDS = tuple(TimelineItem.__dataclass_fields__)


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
        """The timeline as plain data: what ``dataclasses.asdict`` gives, built field by
        field (``asdict`` deep-copies every value: about 1 ms a call, a tenth of one)."""
        out = {name: getattr(self, name) for name in _TIMELINE_FIELDS}
        out["source_patients"] = [dict(row) for row in self.source_patients]
        out["items"] = [item.as_dict() for item in self.items]
        out["omics_samples"] = [dict(row) for row in self.omics_samples]
        return out | {"counts": self.counts()}


_TIMELINE_FIELDS = tuple(PersonTimeline.__dataclass_fields__)


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
    pid = int(person_id)
    with pooled_lake(workspace) as engine:
        statements = _statements(engine)
        person = engine.run_prepared_rows(statements.person, [pid])
        if not person:
            raise UsageError(f"no person {person_id} in the lake")
        gender_id = person[0]["gender_concept_id"]
        gender = None
        if gender_id:
            gender = next(iter(_concept_names(engine, statements, {gender_id})[gender_id]), None)
        detail = {"view": "timeline", "note_text": with_note_text}
        if is_serving(workspace):
            # The audited read's commit and the reads below overlap (another pooled
            # engine, in a thread with this call's context); the call still returns
            # only once its event is in the trail, and not at all if that failed.
            audit = _AUDIT_THREADS.submit(contextvars.copy_context().run, _audit_read,
                                          workspace, pid, detail)  # fmt: skip
        else:
            record_read(engine, "person", str(pid), person_ids=[pid], detail=detail)
            audit = None
        try:
            items, sources, omics = _read(engine, statements, pid, with_note_text)
        except BaseException:
            if audit is not None:
                wait([audit])
            raise
        if audit is not None:
            audit.result()
    first = person[0]
    death = next((item.start for item in items if item.kind == "death"), None)
    items.sort(key=lambda item: (item.start is None, item.start or dt.date.min, item.kind))
    return PersonTimeline(pid, first["year_of_birth"], gender, death, sources, items, omics)


def _read(engine: Engine, statements: _Statements, pid: int, with_text: bool
          ) -> tuple[list[TimelineItem], list[dict[str, Any]], list[dict[str, Any]]]:  # fmt: skip
    items_query = _items_query(engine, statements, with_text)
    items = []
    if items_query is not None:
        rows = engine.run_prepared_rows(items_query, [pid] * items_query.parameter_count)
        concepts = {
            row[_CONCEPT]
            for row in rows
            if row[_CONCEPT] is not None and row[_DOMAIN] != _RECORD_DOMAIN
        }
        items = _items(rows, _concept_names(engine, statements, concepts) if concepts else {})
    # Like the domain tables, a table with no rows at all is not asked (a hospital
    # without omics; 0.5 ms each under load).
    present = _present_tables(engine, statements)
    sources = engine.run_prepared_rows(statements.sources, [pid]) if _SOURCES in present else []
    omics = engine.run_prepared_rows(statements.omics, [pid]) if _OMICS in present else []
    return items, sources, omics


_AUDIT_THREADS = ThreadPoolExecutor(max_workers=32, thread_name_prefix="p360-audit")


def _audit_read(workspace: Workspace, pid: int, detail: dict[str, Any]) -> None:
    with pooled_lake(workspace) as engine:
        record_read(engine, "person", str(pid), person_ids=[pid], detail=detail)


@dataclass
class _Statements:
    """One lake's prepared statements (and what building them needs), per process."""

    person: PreparedQuery
    sources: PreparedQuery
    omics: PreparedQuery
    #: whether each domain's table (and source_record) holds any row: one statement, run
    #: again when the data version of those tables moves
    any_rows: PreparedQuery
    schemas: dict[str, Any]  # the domain tables' Ibis schemas
    type_mapper: Any
    #: items statements by (tables included, with note text)
    items: dict[tuple[tuple[str, ...], bool], PreparedQuery] = field(default_factory=dict)
    #: (data version of the tables, the tables with rows then)
    present: tuple[Hashable, tuple[str, ...]] | None = None
    #: (data version of concept, the names read under it by concept id)
    names: tuple[Hashable, dict[int, tuple[str | None, ...]]] | None = None
    #: concept name lookups by how many ids they bind
    lookups: dict[int, PreparedQuery] = field(default_factory=dict)


_STATEMENTS: dict[tuple[str, str], _Statements] = {}
_STATEMENTS_LOCK = threading.Lock()
# Column names of the items statement (value columns are "<kind>__<column>").
_DOMAIN, _ROW, _TABLE, _START, _END, _CONCEPT, _SOURCE_VALUE, _VISIT = (
    "_domain", "_row", "_table", "_start", "_end", "_concept_id",
    "_source_value", "_visit",
)  # fmt: skip
_PROVENANCE = ("source_system", "source_record_id", "batch_id")
#: ``_domain`` of the items statement's source record rows (past every domain's index).
_RECORD_DOMAIN = len(DOMAINS)
_SOURCE_RECORD = "source_record"
_SOURCES, _OMICS = "source_patient", "omics_sample"
#: The tables whose having any row at all is checked (again when their version moves).
_PRESENCE = (*(d.table for d in DOMAINS), _SOURCE_RECORD, _SOURCES, _OMICS)


def _statements(engine: Engine) -> _Statements:
    """The prepared statements for this lake, built on the first call in this process."""
    key = (engine.kind, str(getattr(engine, "path", "")))
    with _STATEMENTS_LOCK:
        cached = _STATEMENTS.get(key)
    if cached is None:
        cached = _build_statements(engine)
        with _STATEMENTS_LOCK:
            _STATEMENTS[key] = cached
    return cached


def _by_person(table: str, columns: list[str], order: list[str]) -> PreparedQuery:
    return PreparedQuery(
        sge.select(*columns)
        .from_(table)
        .where(sge.column("person_id").eq(sge.Placeholder()))
        .order_by(*order)
    )


def _items_query(engine: Engine, statements: _Statements, with_text: bool) -> PreparedQuery | None:
    """The items statement over the domains whose tables hold rows (None: none do).

    Each branch of the ``UNION ALL`` (and the join to ``source_record``) costs DuckDB a
    table to bind and plan, about as much as scanning the person's row group, so tables
    with no rows at all are left out; which those are is asked again whenever the
    engine's data version of the tables moves.
    """
    present = _present_tables(engine, statements)
    domains = tuple(d for d in DOMAINS if d.table in present)
    if not domains:
        return None
    key = (present, with_text)
    with _STATEMENTS_LOCK:
        query = statements.items.get(key)
    if query is None:
        provenance = _SOURCE_RECORD in present
        query = PreparedQuery(
            _items_statement(statements, domains, provenance=provenance, with_text=with_text)
        )
        with _STATEMENTS_LOCK:
            statements.items[key] = query
    return query


def _present_tables(engine: Engine, statements: _Statements) -> tuple[str, ...]:
    tables = _PRESENCE
    version = engine.data_version(tables)  # read before the check
    if version is None:
        return tuple(tables)  # the backend cannot tell when they change: keep them all
    present = statements.present
    if present is not None and present[0] == version:
        return present[1]
    (flags,) = engine.run_prepared(statements.any_rows).to_pylist()
    with_rows = tuple(t for t in tables if flags[t])
    statements.present = (version, with_rows)
    return with_rows


#: Concept names kept per lake: the concepts a hospital's records use (tens of thousands
#: at most); past this the cache starts again.
_MAX_NAMES = 65_536
#: The most concept ids one lookup binds; fewer are padded to a power of two (by
#: repeating an id), so a handful of statement texts serve every call.
_LOOKUP_IDS = 256


def _concept_names(
    engine: Engine, statements: _Statements, concept_ids: set[int]
) -> dict[int, tuple[str | None, ...]]:
    """Each concept's name(s) (empty when the vocabulary lacks it; more than one only if
    ``concept`` repeats the id), read once per id while the data version of ``concept``
    holds (on every call if the backend cannot tell)."""
    version = engine.data_version(["concept"])  # read before the lookup
    found: dict[int, tuple[str | None, ...]] = {}
    with _STATEMENTS_LOCK:
        names = statements.names
        if version is not None and names is not None and names[0] == version:
            found = {i: names[1][i] for i in concept_ids if i in names[1]}
    missing = sorted(concept_ids - found.keys())
    read: dict[int, tuple[str | None, ...]] = {}
    for start in range(0, len(missing), _LOOKUP_IDS):
        chunk = missing[start : start + _LOOKUP_IDS]
        size = 1 << (len(chunk) - 1).bit_length()
        rows = engine.run_prepared_rows(
            _lookup_statement(statements, size), chunk + chunk[:1] * (size - len(chunk))
        )
        by_id: dict[int, list[str | None]] = {i: [] for i in chunk}
        for row in rows:
            by_id[row["concept_id"]].append(row["concept_name"])
        read.update((i, tuple(n)) for i, n in by_id.items())
    if version is not None and read:
        with _STATEMENTS_LOCK:
            names = statements.names
            if names is None or names[0] != version or len(names[1]) + len(read) > _MAX_NAMES:
                names = statements.names = (version, {})
            names[1].update(read)
    return found | read


def _lookup_statement(statements: _Statements, size: int) -> PreparedQuery:
    with _STATEMENTS_LOCK:
        query = statements.lookups.get(size)
    if query is None:
        query = PreparedQuery(
            sge.select("concept_id", "concept_name")
            .from_("concept")
            .where(sge.column("concept_id").isin(*[sge.Placeholder() for _ in range(size)]))
        )
        with _STATEMENTS_LOCK:
            statements.lookups[size] = query
    return query


def _build_statements(engine: Engine) -> _Statements:
    # The gender's name is not joined in: joining concept cost DuckDB more than the
    # person row itself (1.3 vs 0.5 ms CPU on the 1M lake); it is looked up by id.
    person = (
        sge.select("year_of_birth", "gender_concept_id")
        .from_("person")
        .where(sge.column("person_id").eq(sge.Placeholder()))
        .limit(1)
    )
    tables = _PRESENCE
    any_rows = sge.select(*[sge.Exists(this=sge.select("1").from_(t)).as_(t) for t in tables])
    return _Statements(
        person=PreparedQuery(person),
        any_rows=PreparedQuery(any_rows),
        schemas={d.table: engine.table(d.table).schema() for d in DOMAINS},
        type_mapper=engine.ibis.compiler.type_mapper,  # type: ignore[attr-defined]
        sources=_by_person(
            "source_patient",
            ["source_system", "source_patient_id", "first_seen", "last_seen"],
            ["source_system", "source_patient_id"],
        ),
        omics=_by_person(
            "omics_sample",
            [
                "sample_id",
                "assay",
                "file_format",
                "source_system",
                "source_patient_id",
                "collected_date",
            ],
            ["assay", "sample_id"],
        ),
    )


def _value_columns(domain: Domain, columns: set[str], with_text: bool) -> list[str]:
    wanted = [c for c in domain.value if c in columns]
    if with_text and domain.table == "note" and "note_text" in columns:
        wanted.append("note_text")
    return wanted


def _items_statement(
    statements: _Statements, domains: tuple[Domain, ...], *, provenance: bool, with_text: bool
) -> sge.Query:
    """The ``domains``' rows of one person (``?`` per domain) and, when ``provenance``, the
    person's current source records (one more ``?``): one ``UNION ALL``, no join.

    Joining in DuckDB cost more than the rows themselves (on the 1M lake: the branches
    3.4 ms, the provenance rows 1.1 ms, but joined to them 4 ms more, and to the 359-row
    ``concept`` 2.8 ms more: a hash join's pipelines per statement). So the source records
    come as rows of their own (``_domain`` past the last domain, the row's table in
    ``_table`` and id in ``_row``) and :func:`_items` joins them in Python; concept names
    come from :func:`_concept_names`' cache.
    """
    mapper, schemas = statements.type_mapper, statements.schemas

    def typed_null(table: str, column: str, fallback: str) -> sge.Expression:
        schema = schemas[table]
        kind = (
            mapper.from_ibis(schema[column]) if column in schema else sge.DataType.build(fallback)
        )
        return sge.cast(sge.null(), kind)

    def null(kind: str) -> sge.Expression:
        return sge.cast(sge.null(), sge.DataType.build(kind))

    values = [(d, c) for d in domains for c in _value_columns(d, set(schemas[d.table]), with_text)]
    branches: list[sge.Select] = []
    for domain in domains:
        index = DOMAINS.index(domain)
        columns = set(schemas[domain.table])

        def own(column: str | None, fallback: str, *, columns: set[str] = columns,
                table: str = domain.table) -> sge.Expression:  # fmt: skip
            if column is not None and column in columns:
                return sge.column(column, table="t")
            return null(fallback)

        has_row = domain.row_id is not None and domain.row_id in columns
        select = [
            sge.convert(index).as_(_DOMAIN),
            own(domain.row_id, "bigint").as_(_ROW),
            (sge.convert(domain.table) if has_row else null("varchar")).as_(_TABLE),
            own(domain.start, "date").as_(_START),
            own(domain.end, "date").as_(_END),
            own(domain.concept, "bigint").as_(_CONCEPT),
            own(domain.source_value, "varchar").as_(_SOURCE_VALUE),
            own("visit_occurrence_id", "bigint").as_(_VISIT),
        ]
        for owner, column in values:
            value = (
                sge.column(column, table="t")
                if owner is domain
                else typed_null(owner.table, column, "varchar")
            )
            select.append(value.as_(f"{owner.kind}__{column}"))
        select += [null("varchar").as_(c) for c in _PROVENANCE]
        branches.append(
            sge.select(*select)
            .from_(sge.to_table(domain.table).as_("t"))
            .where(sge.column("person_id", table="t").eq(sge.Placeholder()))
        )
    if provenance:
        # The person's provenance rows only (``person_id``, kept by ingest and the EMPI):
        # the table holds a row per CDM row, and reading by row id alone reads it whole.
        # Columns by position: the first branch names them.
        width = len(branches[0].selects)
        record = [
            sge.convert(_RECORD_DOMAIN),
            sge.column("cdm_row_id"),
            sge.column("cdm_table"),
            # untyped NULLs take each column's type from the domain branches
            *[sge.null() for _ in range(width - 3 - len(_PROVENANCE))],
            *[sge.column(c) for c in _PROVENANCE],
        ]
        branches.append(
            sge.select(*record)
            .from_(_SOURCE_RECORD)
            .where(sge.column("person_id").eq(sge.Placeholder()))
            .where("is_current")
        )
    union: sge.Query = branches[0]
    for branch in branches[1:]:
        union = sge.union(union, branch, distinct=False)
    return union


def _items(
    rows: list[dict[str, Any]], names: dict[int, tuple[str | None, ...]]
) -> list[TimelineItem]:
    """Timeline items from the statement's rows, in domain and row order, each with its
    concept name(s) and current source record(s), as the joins this replaced gave them:
    an item with two current records (or a concept id with two names) is two items."""
    records: dict[tuple[str, int], list[tuple[Any, ...]]] = {}
    domain_rows = []
    for row in rows:
        if row[_DOMAIN] == _RECORD_DOMAIN:
            records.setdefault((row[_TABLE], row[_ROW]), []).append(
                tuple(row[c] for c in _PROVENANCE)
            )
        else:
            domain_rows.append(row)
    domain_rows.sort(key=lambda row: (row[_DOMAIN], row[_ROW] is None, row[_ROW] or 0))
    no_record = [(None,) * len(_PROVENANCE)]
    no_name: tuple[str | None, ...] = (None,)
    items = []
    for row in domain_rows:
        domain = DOMAINS[row[_DOMAIN]]
        prefix = f"{domain.kind}__"
        values = {
            name[len(prefix) :]: value
            for name, value in row.items()
            if name.startswith(prefix) and value is not None
        }
        concept = row[_CONCEPT]
        concept_names = (names.get(concept) or no_name) if concept is not None else no_name
        concept_id = concept if domain.concept else None
        sources = records.get((row[_TABLE], row[_ROW]), no_record) if row[_TABLE] else no_record
        for name in concept_names:
            for system, record_id, batch in sources:
                items.append(TimelineItem(
                    kind=domain.kind,
                    start=row[_START],
                    end=row[_END] if domain.end else None,
                    concept_id=concept_id,
                    concept_name=name if concept_id else None,
                    source_value=row[_SOURCE_VALUE] if domain.source_value else None,
                    values=dict(values),
                    visit_occurrence_id=row[_VISIT],
                    source_system=system,
                    source_record_id=record_id,
                    batch_id=batch,
                ))  # fmt: skip
    return items

"""The statements patient 360 runs: what each CDM table gives a timeline, and the SQL.

Split from :mod:`medlake.service.patient360` (which runs them, caches them per lake and
turns their rows into a timeline) so the one statement per call can be read on its own.

One call reads the person's row, then everything else in one ``UNION ALL`` with the
person id bound once per branch: every domain's rows, the person's current source
records, source patients and omics samples. Nothing is joined in SQL. On the 1M lake a
DuckDB hash join cost more than the rows themselves (the domain branches 3.4 ms, the
provenance rows 1.1 ms, but joined to them 4 ms more, and to the 359-row ``concept``
2.8 ms more), and each statement costs about 0.5 ms however small; so the rows come
back side by side, told apart by ``_domain``, and are joined in Python.

Every branch names every column of the statement (a typed ``NULL`` where it has none),
so no branch's types leak into another's column: a timestamp never widens a date.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlglot.expressions as sge


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

SOURCE_RECORD, SOURCES, OMICS = "source_record", "source_patient", "omics_sample"
#: The columns of a current source record an item shows.
PROVENANCE = ("source_system", "source_record_id", "batch_id")
#: The columns (and order) of the person's source patients and omics samples.
SOURCE_COLUMNS = ("source_system", "source_patient_id", "first_seen", "last_seen")
SOURCE_ORDER = ("source_system", "source_patient_id")
OMICS_COLUMNS = ("sample_id", "assay", "file_format", "source_system", "source_patient_id",
                 "collected_date")  # fmt: skip
OMICS_ORDER = ("assay", "sample_id")
#: ``_domain`` of the rows that are not a domain's: past every domain's index.
RECORD_DOMAIN, SOURCES_DOMAIN, OMICS_DOMAIN = len(DOMAINS), len(DOMAINS) + 1, len(DOMAINS) + 2
# The statement's own columns; a domain's values are "<kind>__<column>", a source
# patient's "source_patient__<column>", an omics sample's "omics_sample__<column>".
DOMAIN, ROW, TABLE, START, END, CONCEPT, SOURCE_VALUE, VISIT = (
    "_domain", "_row", "_table", "_start", "_end", "_concept_id", "_source_value", "_visit",
)  # fmt: skip
_OWN = ((DOMAIN, "int"), (ROW, "bigint"), (TABLE, "varchar"), (START, "date"), (END, "date"),
        (CONCEPT, "bigint"), (SOURCE_VALUE, "varchar"), (VISIT, "bigint"))  # fmt: skip


def value_columns(domain: Domain, columns: Sequence[str], with_text: bool) -> list[str]:
    """The domain's value columns its table has (and the note's text when asked)."""
    wanted = [c for c in domain.value if c in columns]
    if with_text and domain.table == "note" and "note_text" in columns:
        wanted.append("note_text")
    return wanted


def person_statement() -> sge.Query:
    # The gender's name is not joined in: joining concept cost DuckDB more than the
    # person row itself (1.3 vs 0.5 ms CPU on the 1M lake); it is looked up by id.
    return (
        sge.select("year_of_birth", "gender_concept_id")
        .from_("person")
        .where(sge.column("person_id").eq(sge.Placeholder()))
        .limit(1)
    )


def any_rows_statement(tables: Sequence[str]) -> sge.Query:
    """One row: for each table, whether it holds any row at all."""
    return sge.select(*[sge.Exists(this=sge.select("1").from_(t)).as_(t) for t in tables])


def names_statement(ids: int) -> sge.Query:
    """The names of ``ids`` concepts (``?`` each)."""
    return (
        sge.select("concept_id", "concept_name")
        .from_("concept")
        .where(sge.column("concept_id").isin(*[sge.Placeholder() for _ in range(ids)]))
    )


def items_statement(
    schemas: Mapping[str, Any],
    type_of: Any,
    domains: Sequence[Domain],
    others: Sequence[str],
    *,
    with_text: bool,
) -> sge.Query:
    """One person's rows (``?`` per branch) of ``domains`` and of ``others`` (any of
    :data:`SOURCE_RECORD` (current rows), :data:`SOURCES`, :data:`OMICS`).

    ``schemas`` holds each table's Ibis schema, ``type_of`` turns an Ibis type into a
    SQLGlot one (the backend's type mapper).
    """
    query, _ = _union(schemas, type_of, domains, others, with_text=with_text,
                      person=lambda: sge.column("person_id").eq(sge.Placeholder()))  # fmt: skip
    return query


#: The serving copy's own columns (:mod:`medlake.service.patient360_copy`): the person
#: each row is of, the row's place in its table (``rowid``: the order the live statement
#: reads a branch's rows in), and the person's row.
PERSON, ORDER = "_person", "_order"
PERSON_DOMAIN = len(DOMAINS) + 3
PERSON_COLUMNS = ("year_of_birth", "gender_concept_id")


def copy_statement(
    schemas: Mapping[str, Any],
    type_of: Any,
    *,
    low: int | None,
    high: int | None,
) -> tuple[sge.Query, dict[int, dict[str, str]]]:
    """Every row :func:`items_statement` gives (every domain, all others, note text
    included) and each person's row (``_domain`` :data:`PERSON_DOMAIN`), for the
    persons with ``low <= person_id < high`` (None: unbounded), each row with its
    :data:`PERSON` and :data:`ORDER`; a branch's values are in shared columns, and the
    second value says, per ``_domain``, which shared column holds which of
    :func:`items_statement`'s columns (:func:`_slotted`)."""

    def person() -> sge.Expression | None:
        bounds = []
        if low is not None:
            bounds.append(sge.column("person_id") >= sge.convert(low))
        if high is not None:
            bounds.append(sge.column("person_id") < sge.convert(high))
        return sge.and_(*bounds) if bounds else None

    return _union(schemas, type_of, DOMAINS, (SOURCE_RECORD, SOURCES, OMICS),
                  with_text=True, person=person, copy=True)  # fmt: skip


def _union(
    schemas: Mapping[str, Any],
    type_of: Any,
    domains: Sequence[Domain],
    others: Sequence[str],
    *,
    with_text: bool,
    person: Any,
    copy: bool = False,
) -> tuple[sge.Query, dict[int, dict[str, str]]]:

    def kind(table: str, column: str) -> sge.DataType:
        return type_of(schemas[table][column])  # type: ignore[no-any-return]

    columns: dict[str, sge.DataType] = {name: sge.DataType.build(k) for name, k in _OWN}
    if copy:
        columns = {PERSON: sge.DataType.build("bigint"), ORDER: sge.DataType.build("bigint"),
                   **columns}  # fmt: skip
        for column in PERSON_COLUMNS:
            columns[f"person__{column}"] = kind("person", column)
    for domain in domains:
        for column in value_columns(domain, list(schemas[domain.table]), with_text):
            columns[f"{domain.kind}__{column}"] = kind(domain.table, column)
    for column in PROVENANCE:
        columns[column] = sge.DataType.build("varchar")
    for table, names in ((SOURCES, SOURCE_COLUMNS), (OMICS, OMICS_COLUMNS)):
        if table in others:
            for column in names:
                columns[f"{table}__{column}"] = kind(table, column)

    specs: list[tuple[int, str, dict[str, sge.Expression], tuple[sge.Expression, ...]]] = []

    def branch(code: int, table: str, given: dict[str, sge.Expression],
               *where: sge.Expression) -> None:  # fmt: skip
        if copy:
            given = given | {PERSON: col("person_id"), ORDER: col("rowid")}
        specs.append((code, table, given, where))

    def col(name: str) -> sge.Expression:
        return sge.column(name)

    branches = []
    for domain in domains:
        has = set(schemas[domain.table])
        mapped = {ROW: domain.row_id, START: domain.start, END: domain.end,
                  CONCEPT: domain.concept, SOURCE_VALUE: domain.source_value,
                  VISIT: "visit_occurrence_id"}  # fmt: skip
        given = {name: col(c) for name, c in mapped.items() if c is not None and c in has}
        if ROW in given:
            given[TABLE] = sge.convert(domain.table)
        for column in value_columns(domain, list(has), with_text):
            given[f"{domain.kind}__{column}"] = col(column)
        branches.append(branch(DOMAINS.index(domain), domain.table, given))
    if SOURCE_RECORD in others:
        # The person's records only (``person_id``, kept by ingest and the EMPI): the
        # table holds a row per CDM row, and reading by row id alone reads it whole.
        given = {ROW: col("cdm_row_id"), TABLE: col("cdm_table")}
        given |= {c: col(c) for c in PROVENANCE}
        branches.append(branch(RECORD_DOMAIN, SOURCE_RECORD, given, col("is_current")))
    for code, table, names in ((SOURCES_DOMAIN, SOURCES, SOURCE_COLUMNS),
                               (OMICS_DOMAIN, OMICS, OMICS_COLUMNS)):  # fmt: skip
        if table in others:
            branches.append(branch(code, table, {f"{table}__{c}": col(c) for c in names}))
    if copy:
        branches.append(branch(PERSON_DOMAIN, "person",
                               {f"person__{c}": col(c) for c in PERSON_COLUMNS}))  # fmt: skip
    slots: dict[int, dict[str, str]] = {}
    if copy:
        columns, specs, slots = _slotted(columns, specs)
    branches = []
    for code, table, given, where in specs:
        select = [
            (sge.convert(code) if name == DOMAIN else
             given.get(name) or sge.cast(sge.null(), type_.copy())).as_(name)
            for name, type_ in columns.items()
        ]  # fmt: skip
        query = sge.select(*select).from_(table)
        for condition in (person(), *where):
            if condition is not None:
                query = query.where(condition)
        branches.append(query)
    union: sge.Query = branches[0]
    for other in branches[1:]:
        union = sge.union(union, other, distinct=False)
    return union, slots


def _slotted(
    columns: dict[str, sge.DataType],
    specs: list[tuple[int, str, dict[str, sge.Expression], tuple[sge.Expression, ...]]],
) -> tuple[dict[str, sge.DataType], list[Any], dict[int, dict[str, str]]]:
    """The copy's columns: each branch's own values put in shared columns by type
    (``_<type>_<n>``), since a branch fills only its own few of the statement's 40 and
    DuckDB pays per column read (a person's rows: 3.2 ms for all 40, 0.9 ms for 3).
    Returns the columns, the branches with their values renamed, and per ``_domain`` which
    shared column holds which of the statement's columns."""
    own = {PERSON, ORDER, *(name for name, _ in _OWN)}
    out = {name: type_ for name, type_ in columns.items() if name in own}
    renamed_specs = []
    slots: dict[int, dict[str, str]] = {}
    for code, table, given, where in specs:
        used: dict[str, int] = {}
        renamed: dict[str, sge.Expression] = {}
        for name, expression in given.items():
            if name in own:
                renamed[name] = expression
                continue
            type_ = columns[name]
            key = re.sub(r"\W+", "_", type_.sql(dialect="duckdb").lower()).strip("_")
            slot = f"_{key}_{used.get(key, 0)}"
            used[key] = used.get(key, 0) + 1
            out.setdefault(slot, type_)
            renamed[slot] = expression
            slots.setdefault(code, {})[slot] = name
        renamed_specs.append((code, table, renamed, where))
    return out, renamed_specs, slots


__all__ = ["DOMAINS", "Domain"]

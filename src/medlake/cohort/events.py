"""Criteria to event tables: one Ibis table of matching events per criterion.

Every domain criterion becomes a table with the same columns, whatever the domain:
``person_id``, ``source_id`` (the row's own id), ``start_date``, ``end_date``,
``visit_id`` and ``concept_id``. Omics criteria cannot be expressed in SQL (the values
are in PLINK and Parquet files); the service resolves each into a table of
``person_id, source_id, start_date, end_date`` beforehand and hands it in by
:func:`omics_key`, so this module stays free of backend and file code.

Conventions follow OHDSI Circe: a missing end date is the start date plus one day
(drugs: plus ``days_supply`` where known); ``first`` is the person's first event in the
concept set, chosen before the other filters; age is the calendar-year difference
between the event and the year of birth.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

from medlake.cohort.model import (
    ConceptSet,
    DateRange,
    DomainCriterion,
    DrugExposure,
    Expression,
    Genotype,
    Measurement,
    NumericRange,
    ObservationPeriod,
    OmicsCriterion,
    ValuedCriterion,
    VisitOccurrence,
)
from medlake.errors import UsageError

TableGetter = Callable[[str], ir.Table]
EVENT_COLUMNS = ("person_id", "source_id", "start_date", "end_date", "visit_id", "concept_id")


@dataclass(frozen=True)
class DomainColumns:
    """Where a domain keeps what a criterion filters on."""

    table: str
    id: str | None
    concept: str | None
    source_concept: str | None
    start: str
    end: str | None
    type_concept: str | None
    visit: str | None = "visit_occurrence_id"


DOMAINS: dict[str, DomainColumns] = {
    "condition_occurrence": DomainColumns(
        "condition_occurrence",
        "condition_occurrence_id",
        "condition_concept_id",
        "condition_source_concept_id",
        "condition_start_date",
        "condition_end_date",
        "condition_type_concept_id",
    ),
    "drug_exposure": DomainColumns(
        "drug_exposure",
        "drug_exposure_id",
        "drug_concept_id",
        "drug_source_concept_id",
        "drug_exposure_start_date",
        "drug_exposure_end_date",
        "drug_type_concept_id",
    ),
    "procedure_occurrence": DomainColumns(
        "procedure_occurrence",
        "procedure_occurrence_id",
        "procedure_concept_id",
        "procedure_source_concept_id",
        "procedure_date",
        "procedure_end_date",
        "procedure_type_concept_id",
    ),
    "measurement": DomainColumns(
        "measurement",
        "measurement_id",
        "measurement_concept_id",
        "measurement_source_concept_id",
        "measurement_date",
        None,
        "measurement_type_concept_id",
    ),
    "observation": DomainColumns(
        "observation",
        "observation_id",
        "observation_concept_id",
        "observation_source_concept_id",
        "observation_date",
        None,
        "observation_type_concept_id",
    ),
    "visit_occurrence": DomainColumns(
        "visit_occurrence",
        "visit_occurrence_id",
        "visit_concept_id",
        "visit_source_concept_id",
        "visit_start_date",
        "visit_end_date",
        "visit_type_concept_id",
    ),
    "device_exposure": DomainColumns(
        "device_exposure",
        "device_exposure_id",
        "device_concept_id",
        "device_source_concept_id",
        "device_exposure_start_date",
        "device_exposure_end_date",
        "device_type_concept_id",
    ),
    "specimen": DomainColumns(
        "specimen",
        "specimen_id",
        "specimen_concept_id",
        None,
        "specimen_date",
        None,
        "specimen_type_concept_id",
        visit=None,
    ),
    "death": DomainColumns(
        "death",
        None,
        "cause_concept_id",
        "cause_source_concept_id",
        "death_date",
        None,
        "death_type_concept_id",
        visit=None,
    ),
    "observation_period": DomainColumns(
        "observation_period",
        "observation_period_id",
        None,
        None,
        "observation_period_start_date",
        "observation_period_end_date",
        "period_type_concept_id",
        visit=None,
    ),
}


def omics_key(criterion: OmicsCriterion) -> str:
    """The key under which the service hands in an omics criterion's resolved events."""
    return criterion.model_dump_json()


def union_all(tables: list[ir.Table]) -> ir.Table:
    """``UNION ALL`` of tables with the same columns, whatever their NOT NULL flags."""
    loose = [
        t.cast({name: dtype.copy(nullable=True) for name, dtype in t.schema().items()})
        for t in tables
    ]
    return loose[0] if len(loose) == 1 else ibis.union(*loose, distinct=False)


def days(n: int) -> ir.IntervalScalar:
    return ibis.interval(days=n)


def shift(date: ir.DateValue, n: int) -> ir.DateValue:
    """``date`` plus ``n`` days, as a date.

    In DuckDB ``date + INTERVAL`` is a timestamp, so a join comparing it with a date
    column casts that column on every pair; Ibis types the sum as a date and drops a
    plain cast to date, hence the cast through timestamp.
    """
    return date if n == 0 else (date + days(n)).cast("timestamp").cast("date")


def range_predicate(column: ir.Value, value_range: NumericRange | DateRange) -> ir.BooleanValue:
    """``column op value`` for one of Circe's operators (``bt``/``nbt`` inclusive)."""
    value = ibis.literal(value_range.value)
    match value_range.op:
        case "lt":
            return column < value
        case "lte":
            return column <= value
        case "gt":
            return column > value
        case "gte":
            return column >= value
        case "eq":
            return column == value
        case "neq":
            return column != value
        case "bt":
            return column.between(value, ibis.literal(value_range.extent))
        case _:  # nbt
            return ~column.between(value, ibis.literal(value_range.extent))


class EventBuilder:
    """Builds event tables on ``table`` (the engine's tables, by name)."""

    def __init__(
        self,
        table: TableGetter,
        concept_sets: list[ConceptSet],
        omics_events: Mapping[str, ir.Table],
        resolved: Mapping[int, Sequence[int]] | None = None,
    ) -> None:
        self._table = table
        self._concept_sets = {c.id: c for c in concept_sets}
        self._omics = omics_events
        self._codesets: dict[int, ir.Table] = {}
        self._resolved = resolved

    def codeset_query(self) -> ir.Table:
        """``codeset_id, concept_id`` of every concept set, to resolve them ahead."""
        parts = [
            self.codeset(c).mutate(codeset_id=ibis.literal(c, "int64")) for c in self._concept_sets
        ]
        if not parts:
            return ibis.memtable(
                {"codeset_id": [], "concept_id": []},
                schema={"codeset_id": "int64", "concept_id": "int64"},
            )
        return union_all(parts)

    def in_codeset(self, column: ir.IntegerColumn, codeset_id: int) -> ir.BooleanValue:
        """``column`` holds a concept of the set: a literal list when resolved ahead (the
        engine can then filter while scanning), else a subquery on the vocabulary."""
        if self._resolved is not None:
            ids = list(self._resolved.get(codeset_id, ()))
            return column.isin(ids) if ids else ibis.literal(False)
        return column.isin(self.codeset(codeset_id).concept_id)

    # ------------------------------------------------------------------ concept sets

    def codeset(self, codeset_id: int) -> ir.Table:
        """The concept ids of a concept set (one column ``concept_id``), distinct."""
        if codeset_id not in self._codesets:
            concept_set = self._concept_sets[codeset_id]
            included = [i for i in concept_set.items if not i.excluded]
            excluded = [i for i in concept_set.items if i.excluded]
            ids = self._expand(included)
            if excluded:
                ids = ids.anti_join(self._expand(excluded), "concept_id")
            self._codesets[codeset_id] = ids.distinct()
        return self._codesets[codeset_id]

    def _expand(self, items: list) -> ir.Table:  # type: ignore[type-arg]
        concept = self._table("concept")
        parts: list[ir.Table] = []
        for item in items:
            if item.concept_id is not None:
                match = concept.concept_id == item.concept_id
            else:
                match = (concept.vocabulary_id == item.vocabulary_id) & (
                    concept.concept_code == item.concept_code
                )
            base = concept.filter(match).select("concept_id")
            found = base
            if item.include_descendants:
                ancestor = self._table("concept_ancestor")
                below = ancestor.filter(ancestor.ancestor_concept_id.isin(base.concept_id)).select(
                    concept_id=ancestor.descendant_concept_id
                )
                found = union_all([found, below])
            if item.include_mapped:
                relationship = self._table("concept_relationship")
                mapped = relationship.filter(
                    (relationship.relationship_id == "Maps to")
                    & relationship.concept_id_2.isin(found.concept_id)
                ).select(concept_id=relationship.concept_id_1)
                found = union_all([found, mapped])
            parts.append(found)
        return union_all(parts)

    # ------------------------------------------------------------------ events

    def events(self, criterion: DomainCriterion | OmicsCriterion) -> ir.Table:
        """The events matching ``criterion``, in the common event columns."""
        if isinstance(criterion, Genotype | Expression):
            return self._omics_events(criterion)
        return self._domain_events(criterion)

    def _omics_events(self, criterion: OmicsCriterion) -> ir.Table:
        key = omics_key(criterion)
        if key not in self._omics:
            raise UsageError(f"the {criterion.domain} criterion was not resolved before compiling")
        events = self._omics[key]
        return events.select(
            person_id=events.person_id.cast("int64"),
            source_id=events.source_id.cast("int64"),
            start_date=events.start_date.cast("date"),
            end_date=events.end_date.cast("date"),
            visit_id=ibis.null("int64"),
            concept_id=ibis.null("int64"),
        )

    def _domain_events(self, criterion: DomainCriterion) -> ir.Table:
        domain = DOMAINS[criterion.domain]  # type: ignore[attr-defined]
        t = self._table(domain.table)
        start = t[domain.start]
        end = _end_date(t, domain, criterion)
        events = t.select(
            person_id=t.person_id.cast("int64"),
            source_id=(t[domain.id] if domain.id else t.person_id).cast("int64"),
            start_date=start,
            end_date=end,
            visit_id=(t[domain.visit] if domain.visit else ibis.null("int64")).cast("int64"),
            concept_id=(t[domain.concept] if domain.concept else ibis.null("int64")).cast("int64"),
            **_extra_columns(t, domain, criterion),
        )
        if criterion.codeset_id is not None:
            events = events.filter(self.in_codeset(events.concept_id, criterion.codeset_id))
        if criterion.source_codeset_id is not None:
            if domain.source_concept is None:
                raise UsageError(f"{criterion.domain} has no source concept column")  # type: ignore[attr-defined]
            events = events.filter(
                self.in_codeset(events.source_concept, criterion.source_codeset_id)
            )
        if criterion.first:
            order = ibis.window(group_by="person_id", order_by=["start_date", "source_id"])
            events = events.filter(ibis.row_number().over(order) == 0)
        filters = self._filters(events, criterion)
        if filters:
            events = events.filter(filters)
        if criterion.age is not None or criterion.gender:
            person = self._table("person")
            events = events.join(
                person.select("person_id", "year_of_birth", "gender_concept_id"), "person_id"
            )
            conditions = []
            if criterion.age is not None:
                age = events.start_date.year() - events.year_of_birth
                conditions.append(range_predicate(age, criterion.age))
            if criterion.gender:
                conditions.append(events.gender_concept_id.isin(criterion.gender))
            events = events.filter(conditions)
        if criterion.visit_type and criterion.domain != "visit_occurrence":  # type: ignore[attr-defined]
            visit = self._table("visit_occurrence")
            visits = visit.filter(visit.visit_concept_id.isin(criterion.visit_type))
            events = events.filter(events.visit_id.isin(visits.visit_occurrence_id))
        return events.select(*EVENT_COLUMNS)

    def _filters(self, events: ir.Table, criterion: DomainCriterion) -> list[ir.BooleanValue]:
        found: list[ir.BooleanValue] = []
        if criterion.start_date is not None:
            found.append(range_predicate(events.start_date, criterion.start_date))
        if criterion.end_date is not None:
            found.append(range_predicate(events.end_date, criterion.end_date))
        if criterion.type_concept:
            found.append(events.type_concept.isin(criterion.type_concept))
        if isinstance(criterion, VisitOccurrence) and criterion.visit_type:
            found.append(events.concept_id.isin(criterion.visit_type))
        if isinstance(criterion, VisitOccurrence | ObservationPeriod) and criterion.length_days:
            length = events.end_date.delta(events.start_date, unit="day")
            found.append(range_predicate(length, criterion.length_days))
        if isinstance(criterion, DrugExposure) and criterion.days_supply is not None:
            found.append(range_predicate(events.days_supply, criterion.days_supply))
        if isinstance(criterion, ValuedCriterion):
            if criterion.value_as_number is not None:
                found.append(range_predicate(events.value_as_number, criterion.value_as_number))
            if criterion.value_as_concept:
                found.append(events.value_as_concept_id.isin(criterion.value_as_concept))
            if criterion.unit:
                found.append(events.unit_concept_id.isin(criterion.unit))
        if isinstance(criterion, Measurement):
            if criterion.range_low is not None:
                found.append(range_predicate(events.range_low, criterion.range_low))
            if criterion.range_high is not None:
                found.append(range_predicate(events.range_high, criterion.range_high))
            if criterion.abnormal:
                found.append(
                    (events.value_as_number < events.range_low)
                    | (events.value_as_number > events.range_high)
                )
        return found


def _end_date(t: ir.Table, domain: DomainColumns, criterion: DomainCriterion) -> ir.DateValue:
    start = t[domain.start]
    next_day = start + days(1)
    if domain.end is None:
        return next_day
    if isinstance(criterion, DrugExposure):
        supplied = start + t.days_supply.cast("int32").as_interval("D")
        return ibis.coalesce(t[domain.end], supplied, next_day)
    return ibis.coalesce(t[domain.end], next_day)


def _extra_columns(
    t: ir.Table, domain: DomainColumns, criterion: DomainCriterion
) -> dict[str, ir.Value]:
    """The domain's own columns this criterion filters on (only those: a smaller graph)."""
    extra: dict[str, ir.Value] = {}
    if domain.source_concept and criterion.source_codeset_id is not None:
        extra["source_concept"] = t[domain.source_concept].cast("int64")
    if domain.type_concept and criterion.type_concept:
        extra["type_concept"] = t[domain.type_concept].cast("int64")
    if isinstance(criterion, DrugExposure) and criterion.days_supply is not None:
        extra["days_supply"] = t.days_supply
    if isinstance(criterion, ValuedCriterion):
        wanted = {
            "value_as_number": criterion.value_as_number is not None
            or (isinstance(criterion, Measurement) and criterion.abnormal),
            "value_as_concept_id": bool(criterion.value_as_concept),
            "unit_concept_id": bool(criterion.unit),
        }
        extra |= {name: t[name] for name, used in wanted.items() if used}
    if isinstance(criterion, Measurement):
        if criterion.range_low is not None or criterion.abnormal:
            extra["range_low"] = t.range_low
        if criterion.range_high is not None or criterion.abnormal:
            extra["range_high"] = t.range_high
    return extra

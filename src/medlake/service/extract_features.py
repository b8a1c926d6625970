"""Clinical features of a cohort's members, as Ibis queries on the engine.

One query per feature, each returning one row per member who has a value (person_id
plus the feature's columns); :func:`clinical_features` joins them onto the members in
Arrow, filling flags and counts with 0 where a member has no event. Concept sets are
expanded by the cohort domain's :class:`~medlake.cohort.events.EventBuilder`, so a set
means the same concepts in a cohort and in its extract.
"""

from __future__ import annotations

from collections.abc import Callable

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from medlake.cohort.events import EventBuilder
from medlake.cohort.model import ConceptSet
from medlake.engine import Engine
from medlake.errors import UsageError
from medlake.service.extract_spec import (
    ConditionFeature,
    DrugFeature,
    FeatureSpec,
    MeasurementFeature,
    Window,
)

PERSON = "person_id"
INDEX = "cohort_start_date"


def first_eras(members: pa.Table) -> pa.Table:
    """One row per person: the earliest era (an analysis dataset has a row per person)."""
    ordered = members.sort_by([(PERSON, "ascending"), (INDEX, "ascending")])
    persons = ordered.column(PERSON).to_numpy()
    first = [0, *[i for i in range(1, len(persons)) if persons[i] != persons[i - 1]]]
    return ordered.take(first) if len(persons) else ordered


class FeatureQueries:
    """Builds each feature's query against ``members`` (person_id, cohort_start_date)."""

    def __init__(self, engine: Engine, members: pa.Table, concept_sets: list[ConceptSet]) -> None:
        self._engine = engine
        self._members = ibis.memtable(members.select([PERSON, INDEX]))
        self._codesets = EventBuilder(engine.table, concept_sets, {})
        self._known = {c.id for c in concept_sets}

    def _codeset(self, codeset_id: int) -> ir.Table:
        if codeset_id not in self._known:
            raise UsageError(f"feature spec: no concept set with id {codeset_id}")
        return self._codesets.codeset(codeset_id)

    def _events(
        self, table: str, concept: str, date: str, codeset_id: int, window: Window
    ) -> ir.Table:
        """Member events of the concept set in the window, with ``day`` relative to index."""
        t = self._engine.table(table)
        t = t.filter(t[concept].isin(self._codeset(codeset_id).concept_id))
        m = self._members
        joined = t.join(m, t.person_id == m.person_id)
        day = joined[date].cast("date").delta(joined[INDEX].cast("date"), unit="day")
        events = joined.mutate(day=day)
        if window.start is not None:
            events = events.filter(events.day >= window.start)
        if window.end is not None:
            events = events.filter(events.day <= window.end)
        return events

    def condition(self, feature: ConditionFeature) -> pa.Table:
        e = self._events(
            "condition_occurrence",
            "condition_concept_id",
            "condition_start_date",
            feature.codeset_id,
            feature.window,
        )
        query = e.select(person_id=e.person_id.cast("int64")).distinct()
        hits = self._engine.execute(query)
        return hits.append_column(feature.name, pa.repeat(pa.scalar(1, pa.int8()), hits.num_rows))

    def drug(self, feature: DrugFeature) -> pa.Table:
        e = self._events(
            "drug_exposure",
            "drug_concept_id",
            "drug_exposure_start_date",
            feature.codeset_id,
            feature.window,
        )
        query = e.group_by(person_id=e.person_id.cast("int64")).aggregate(
            **{
                f"{feature.name}_exposed": ibis.literal(1, "int8"),
                f"{feature.name}_count": e.count().cast("int64"),
                f"{feature.name}_first_day": e.day.min().cast("int32"),
            }
        )
        return self._engine.execute(query)

    def measurement(self, feature: MeasurementFeature) -> pa.Table:
        e = self._events(
            "measurement",
            "measurement_concept_id",
            "measurement_date",
            feature.codeset_id,
            feature.window,
        )
        e = e.filter(e.value_as_number.notnull())
        if feature.unit_concept_id is not None:
            e = e.filter(e.unit_concept_id == feature.unit_concept_id)
        # The latest: by date, then time, then id, so ties resolve the same everywhere.
        order = [ibis.desc(e.measurement_date), ibis.desc(e.measurement_datetime)]
        order.append(ibis.desc(e.measurement_id))
        ranked = e.mutate(
            rank=ibis.row_number().over(ibis.window(group_by=e.person_id, order_by=order))
        )
        name = feature.name
        stats: dict[str, Callable[[ir.Table], ir.Value]] = {
            "min": lambda t: t.value_as_number.min().cast("float64"),
            "max": lambda t: t.value_as_number.max().cast("float64"),
            "mean": lambda t: t.value_as_number.mean().cast("float64"),
            "count": lambda t: t.count().cast("int64"),
            "latest": lambda t: t.value_as_number.max(where=t["rank"] == 0).cast("float64"),
            "latest_day": lambda t: t.day.max(where=t["rank"] == 0).cast("int32"),
        }
        query = ranked.group_by(person_id=ranked.person_id.cast("int64")).aggregate(
            **{f"{name}_{stat}": stats[stat](ranked) for stat in feature.stats}
        )
        return self._engine.execute(query)


def clinical_features(
    engine: Engine, members: pa.Table, spec: FeatureSpec, concept_sets: list[ConceptSet]
) -> pa.Table:
    """``members`` (one row per person) with every clinical feature column of ``spec``."""
    queries = FeatureQueries(engine, members, concept_sets)
    out = members
    for condition in spec.conditions:
        out = _attach(out, queries.condition(condition), fill={condition.name: 0})
    for drug in spec.drugs:
        fill = {f"{drug.name}_exposed": 0, f"{drug.name}_count": 0}
        out = _attach(out, queries.drug(drug), fill=fill)
    for measurement in spec.measurements:
        fill = {f"{measurement.name}_count": 0} if "count" in measurement.stats else {}
        out = _attach(out, queries.measurement(measurement), fill=fill)
    return out


def _attach(base: pa.Table, feature: pa.Table, fill: dict[str, int]) -> pa.Table:
    """Left-join ``feature`` onto ``base`` by person, keeping ``base``'s row order."""
    position = pa.array(range(base.num_rows), type=pa.int64())
    joined = (
        base.append_column("__row", position)
        .join(feature, PERSON, join_type="left outer")
        .sort_by("__row")
        .drop_columns(["__row"])
    )
    for name, value in fill.items():
        column = joined.column(name)
        filled = pc.fill_null(column, pa.scalar(value, column.type))
        joined = joined.set_column(joined.column_names.index(name), name, filled)
    return joined

"""``observation_period`` derived from each person's records, as OMOP asks of EHR data.

A hospital's EHR has no enrolment file, so OMOP's convention for EHR sources applies:
a person is observed from their earliest to their latest dated record. The rule here:

- **records**: every row of the clinical event tables in :data:`EVENT_DATES` (visits,
  visit details, conditions, drugs, procedures, devices, measurements, observations,
  specimens, notes, death) with that person's ``person_id``;
- **start**: the earliest start date; **end**: the latest of every record's end date,
  or its start date where it has no end (a record never ends before it starts: the
  later of the two counts);
- **one period per person**, ``observation_period_id`` = ``person_id`` (gaps are not
  split: the synthetic and real EMR exports medlake serves are one hospital's
  continuous care, and cohort windows then see every record);
- ``period_type_concept_id`` = 32882 *Standard algorithm from EHR* (Type Concept), the
  type OHDSI's own ETL-Synthea writes for periods derived from EHR records;
- a person with no dated record has no period.

:func:`refresh_observation_periods` recomputes the periods of the given persons (or of
everyone) in one transaction where the engine has them: ingest calls it for the persons
a run touched, ``medlake rebuild`` for everyone, and the EMPI after merges and unmerges.
It is one aggregate in the engine (Ibis), so a full refresh of a large lake costs one
scan of the event tables.
"""

from __future__ import annotations

from collections.abc import Iterable

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.ingest.lake_tables import atomically

TABLE = "observation_period"
PERIOD_TYPE_CONCEPT_ID = 32882  # Type Concept "Standard algorithm from EHR"

# Clinical event tables and their (start, end) date columns; end None = a point event.
EVENT_DATES: dict[str, tuple[str, str | None]] = {
    "visit_occurrence": ("visit_start_date", "visit_end_date"),
    "visit_detail": ("visit_detail_start_date", "visit_detail_end_date"),
    "condition_occurrence": ("condition_start_date", "condition_end_date"),
    "drug_exposure": ("drug_exposure_start_date", "drug_exposure_end_date"),
    "procedure_occurrence": ("procedure_date", "procedure_end_date"),
    "device_exposure": ("device_exposure_start_date", "device_exposure_end_date"),
    "measurement": ("measurement_date", None),
    "observation": ("observation_date", None),
    "specimen": ("specimen_date", None),
    "note": ("note_date", None),
    "death": ("death_date", None),
}

# Past this many persons a refresh recomputes everyone: one scan either way, and a
# whole-table replace is cheaper than an IN-list of that size.
_ALL_FROM = 200_000


def observation_periods_query(engine: Engine, persons: ir.Table | None = None) -> ir.Table:
    """The derived periods (``observation_period`` columns), of ``persons.person_id`` only
    when given."""
    spans = []
    present = set(engine.list_tables())  # one look-up, not one per event table
    for table, (start_column, end_column) in EVENT_DATES.items():
        if table not in present:
            continue
        t = engine.table(table)
        if persons is not None:
            t = t.filter(t.person_id.isin(persons.person_id))
        start = t[start_column].cast("date")
        end = start if end_column is None else t[end_column].cast("date")
        spans.append(
            t.select(
                person_id=t.person_id.cast("int64"),
                start=start,
                end=ibis.greatest(start, ibis.coalesce(end, start)),
            ).filter(lambda s: s.start.notnull())
        )
    union = spans[0]
    for span in spans[1:]:
        union = union.union(span)  # distinct union: fewer rows to aggregate
    periods = union.group_by("person_id").agg(start=union.start.min(), end=union.end.max())
    return periods.select(
        observation_period_id=periods.person_id,
        person_id=periods.person_id,
        observation_period_start_date=periods.start,
        observation_period_end_date=periods.end,
        period_type_concept_id=ibis.literal(PERIOD_TYPE_CONCEPT_ID, "int64"),
    )


def refresh_observation_periods(engine: Engine, person_ids: Iterable[int] | None = None) -> int:
    """Recompute the observation periods of ``person_ids`` (all persons when None).

    The persons' old periods are deleted and their periods derived afresh from the
    event tables (the rule is in this module's docstring), atomically where the engine
    has transactions. A person without records any more (merged away, every record
    retracted) is left without a period. Returns the number of periods written.
    """
    ids = None if person_ids is None else sorted({int(i) for i in person_ids})
    if ids is not None and not ids:
        return 0
    if ids is not None and len(ids) >= _ALL_FROM:
        ids = None
    with atomically(engine):
        current = engine.table(TABLE)
        if ids is None:
            engine.delete_where(TABLE, current.person_id.notnull())
            rows = engine.execute(observation_periods_query(engine))
        else:
            wanted = ibis.memtable(pa.table({"person_id": pa.array(ids, pa.int64())}))
            engine.delete_where(TABLE, current.person_id.isin(wanted.person_id))
            rows = engine.execute(observation_periods_query(engine, wanted))
        if rows.num_rows:
            engine.load_arrow(TABLE, rows)
    return rows.num_rows


# ---------------------------------------------------------------------- during ingest


def event_spans(table: str, rows: pa.Table) -> pa.Table | None:
    """``person_id, start, end`` of CDM ``rows`` of an event table (the rule above)."""
    columns = EVENT_DATES.get(table)
    if columns is None or "person_id" not in rows.column_names:
        return None
    start_column, end_column = columns
    if start_column not in rows.column_names or rows.num_rows == 0:
        return None
    start = pc.cast(rows.column(start_column), pa.date32())
    end = start
    if end_column is not None and end_column in rows.column_names:
        end = pc.coalesce(pc.cast(rows.column(end_column), pa.date32()), start)
        end = pc.max_element_wise(start, end)
    spans = pa.table(
        {"person_id": pc.cast(rows.column("person_id"), pa.int64()), "start": start, "end": end}
    )
    return spans.filter(pc.and_(pc.is_valid(spans.column("start")),
                                pc.is_valid(spans.column("person_id"))))  # fmt: skip


def update_observation_periods(
    engine: Engine, spans: list[pa.Table], recompute: Iterable[int]
) -> None:
    """After a batch: widen periods by the ``spans`` of rows it inserted, and recompute
    the periods of persons whose rows it replaced, retracted or merged (``recompute``).

    Widening is exact because the table always holds every person's span (ingest,
    merges and rebuilds keep it so): a period only grows when records are added. A lake
    whose table is empty (new, or made before medlake derived periods) is recomputed
    whole once. Call inside the batch's transaction.
    """
    redo = {int(p) for p in recompute}
    new = pa.concat_tables([s for s in spans if s.num_rows]) if spans else None
    if not redo and (new is None or new.num_rows == 0):
        return
    if engine.count(TABLE) == 0:
        refresh_observation_periods(engine)
        return
    if new is not None and new.num_rows:
        added = new.group_by("person_id").aggregate([("start", "min"), ("end", "max")])
        if redo:
            keep = pc.invert(
                pc.is_in(added.column("person_id"), pa.array(sorted(redo), pa.int64()))
            )
            added = added.filter(keep)
        _widen(engine, added)
    if redo:
        refresh_observation_periods(engine, redo)


def _widen(engine: Engine, added: pa.Table) -> None:
    """Merge ``person_id, start_min, end_max`` into the persons' periods; write changes."""
    if added.num_rows == 0:
        return
    op = engine.table(TABLE)
    wanted = ibis.memtable(pa.table({"person_id": added.column("person_id")}))
    current = engine.execute(
        op.filter(op.person_id.isin(wanted.person_id)).select(
            person_id=op.person_id.cast("int64"),
            old_start=op.observation_period_start_date,
            old_end=op.observation_period_end_date,
        )
    )
    joined = added.join(current, "person_id", join_type="left outer")
    start = pc.min_element_wise(joined.column("start_min"), joined.column("old_start"))
    end = pc.max_element_wise(joined.column("end_max"), joined.column("old_end"))
    # No period yet (a new person), or a wider one; Kleene logic: null compares are false.
    widened = pc.or_kleene(pc.not_equal(start, joined.column("old_start")),
                           pc.not_equal(end, joined.column("old_end")))  # fmt: skip
    changed = pc.or_(pc.is_null(joined.column("old_start")), pc.fill_null(widened, False))
    rows = pa.table(
        {
            "observation_period_id": joined.column("person_id"),
            "person_id": joined.column("person_id"),
            "observation_period_start_date": start,
            "observation_period_end_date": end,
            "period_type_concept_id": pa.array([PERIOD_TYPE_CONCEPT_ID] * joined.num_rows,
                                               pa.int64()),
        }
    ).filter(changed)  # fmt: skip
    if rows.num_rows == 0:
        return
    gone = ibis.memtable(pa.table({"person_id": rows.column("person_id")}))
    engine.delete_where(TABLE, op.person_id.isin(gone.person_id))
    engine.load_arrow(TABLE, rows)

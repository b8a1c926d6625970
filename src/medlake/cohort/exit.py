"""The cohort's exit: end dates by the end strategy, censoring, and eras collapsed.

Part of the one compiler (:mod:`medlake.cohort.compiler`): functions from the index
events that passed every rule (:data:`~medlake.cohort.compiler.INDEX_COLUMNS`) to the
cohort's periods, following OHDSI Circe — an end strategy never ends a period past its
observation period; a censoring event ends it at the first such event; periods of a
person closer than ``collapse_days`` merge into one era (gaps and islands).
"""

from __future__ import annotations

import ibis
import ibis.expr.types as ir

from medlake.cohort.events import EventBuilder, shift, union_all
from medlake.cohort.model import (
    Criterion,
    DrugEra,
    DrugExposure,
    EndOfObservation,
    FixedOffset,
)

#: The index columns kept through the exit steps.
INDEX_COLUMNS = (
    "person_id",
    "event_id",
    "start_date",
    "end_date",
    "visit_id",
    "op_start",
    "op_end",
)


def with_end_dates(
    index: ir.Table, strategy: EndOfObservation | FixedOffset | DrugEra, events: EventBuilder
) -> ir.Table:
    """``index`` with ``cohort_end`` by the end strategy (never past the period end)."""
    if isinstance(strategy, FixedOffset):
        anchor = index.start_date if strategy.date_field == "start" else index.end_date
        return index.mutate(
            cohort_end=ibis.least(shift(anchor, strategy.offset_days), index.op_end)
        )
    if isinstance(strategy, DrugEra):
        return _drug_era_end(index, strategy, events)
    return index.mutate(cohort_end=index.op_end)


def _drug_era_end(index: ir.Table, strategy: DrugEra, events: EventBuilder) -> ir.Table:
    # Eras of the concept set's exposures (gap_days bridged); the era holding the index
    # start ends the cohort. An index outside every era ends on its own start date.
    exposures = events.events(DrugExposure(codeset_id=strategy.codeset_id)).select(
        "person_id", start="start_date", end="end_date"
    )
    eras = collapse(exposures, strategy.gap_days).rename(era_person="person_id")
    holding = (
        index.join(
            eras,
            [
                index.person_id == eras.era_person,
                eras.start <= index.start_date,
                eras.end >= index.start_date,
            ],
        )
        .group_by("event_id")
        .agg(era_end=eras.end.max())
    )
    found = index.left_join(holding, index.event_id == holding.event_id)
    era_end = shift(found.era_end, strategy.offset_days)
    return found.select(
        *[found[c] for c in INDEX_COLUMNS],
        cohort_end=ibis.least(ibis.coalesce(era_end, found.start_date), found.op_end),
    )


def censor(ended: ir.Table, criteria: list[Criterion], events: EventBuilder) -> ir.Table:
    """``ended`` with ``cohort_end`` moved to the first censoring event inside the period."""
    if not criteria:
        return ended
    parts = [events.events(c).select("person_id", "start_date") for c in criteria]
    union = union_all(parts).rename(c_person="person_id", c_start="start_date")
    first = (
        ended.join(
            union,
            [
                ended.person_id == union.c_person,
                union.c_start >= ended.start_date,
                union.c_start <= ended.cohort_end,
            ],
        )
        .group_by("event_id")
        .agg(censor=union.c_start.min())
    )
    joined = ended.left_join(first, ended.event_id == first.event_id)
    return joined.select(
        *[joined[c] for c in INDEX_COLUMNS],
        cohort_end=ibis.least(joined.cohort_end, ibis.coalesce(joined.censor, joined.cohort_end)),
    )


def collapse(periods: ir.Table, gap_days: int) -> ir.Table:
    """Merge each person's ``start``/``end`` periods that overlap or lie ``gap_days`` apart.

    Gaps and islands: a period opens a new island when it starts after the latest end of
    the person's earlier periods plus ``gap_days``.
    """
    before = ibis.window(group_by="person_id", order_by=["start", "end"], rows=(None, -1))
    marked = periods.mutate(previous_end=periods.end.max().over(before))
    marked = marked.mutate(
        opens=ibis.ifelse(
            marked.previous_end.isnull() | (marked.start > shift(marked.previous_end, gap_days)),
            1,
            0,
        )
    )
    running = ibis.window(group_by="person_id", order_by=["start", "end"], rows=(None, 0))
    numbered = marked.mutate(island=marked.opens.sum().over(running))
    return (
        numbered.group_by(["person_id", "island"])
        .agg(start=numbered.start.min(), end=numbered.end.max())
        .select("person_id", "start", "end")
    )

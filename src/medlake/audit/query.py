"""Finding events: by user, person, action, outcome and time, newest first.

A person is found where the event is about them (``object_type = 'person'``) or where
its ``detail`` lists them (``"person_id": N`` or ``"person_ids": [..., N, ...]``), as
:func:`medlake.audit.append_event` asks services to record bulk reads and exports.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import ibis.expr.types as ir

from medlake.audit.chain import EVENT_TABLE
from medlake.engine import Engine


@dataclass(frozen=True)
class EventFilter:
    """What ``medlake audit show`` asks for; unset fields do not filter."""

    actor: str | None = None
    person_id: int | None = None
    action: str | None = None
    object_type: str | None = None
    object_id: str | None = None
    outcome: str | None = None
    since: dt.datetime | None = None
    until: dt.datetime | None = None
    limit: int | None = 100


def _utc_naive(value: dt.datetime) -> dt.datetime:
    return value if value.tzinfo is None else value.astimezone(dt.UTC).replace(tzinfo=None)


def events_query(engine: Engine, where: EventFilter) -> ir.Table:
    """The events ``where`` selects, newest first (``limit`` of them, if set)."""
    events = engine.table(EVENT_TABLE)
    predicates: list[ir.BooleanValue] = []
    if where.actor is not None:
        predicates.append(events.actor == where.actor)
    if where.action is not None:
        # "export" also finds "export.dataset"; an exact verb with a dot finds only itself.
        predicates.append(
            (events.action == where.action) | events.action.startswith(where.action + ".")
        )
    if where.object_type is not None:
        predicates.append(events.object_type == where.object_type)
    if where.object_id is not None:
        predicates.append(events.object_id == where.object_id)
    if where.outcome is not None:
        predicates.append(events.outcome == where.outcome)
    if where.since is not None:
        predicates.append(events.occurred_at >= _utc_naive(where.since))
    if where.until is not None:
        predicates.append(events.occurred_at < _utc_naive(where.until))
    if where.person_id is not None:
        predicates.append(_person_predicate(events, int(where.person_id)))
    if predicates:
        events = events.filter(predicates)
    events = events.order_by(events.event_id.desc())
    return events.limit(where.limit) if where.limit else events


def _person_predicate(events: ir.Table, person_id: int) -> ir.BooleanValue:
    about = (events.object_type == "person") & (events.object_id == str(person_id))
    # detail is canonical JSON (no spaces), so the id is delimited by : [ , ] or }.
    single = rf'"person_id":{person_id}[,}}]'
    listed = rf'"person_ids":\[([^\]]*,)?{person_id}[,\]]'
    mentioned = events.detail.re_search(single) | events.detail.re_search(listed)
    return about | mentioned.fill_null(False)


__all__ = ["EventFilter", "events_query"]

"""Appending to the audit trail: one hash-chained event per read, export or change.

Each event's ``event_hash`` is the SHA-256 of a canonical text of its fields
(``occurred_at``, ``actor``, ``role``, ``action``, ``object_type``, ``object_id``,
``project_id``, ``detail``, ``outcome``, ``origin``) and of ``prev_hash``, the previous
event's hash (64 zeros for the first). Changing, removing, inserting or reordering an
event therefore breaks the chain at that event (:mod:`medlake.audit.verify` says where).
``event_id`` is the event's position (1, 2, 3, ...); it is not hashed because the
position is already fixed by the links, and verification checks that ids follow them.

Appends are serialized: on engines with transactions the new events and the one-row
``audit_head`` table are written in one transaction, and the head row is moved by a
compare-and-set (``UPDATE ... WHERE event_id = <the head the events link to> AND
event_hash = ...``), so two writers that start from the same head cannot both commit:
the loser hits no row (or DuckDB's write conflict on that row) and retries on the new
head instead of forking the chain. Engines without transactions (Spark) rely on a single
writer process. Concurrent appends in one process are grouped
(:mod:`medlake.audit.group_commit`): the events queued while a write is under way go
into the next transaction together, in queue order, and each caller returns once its
event has committed.

An audited read answers a user many times a second, so a group's transaction is kept
to what durability needs: one prepared multi-row ``INSERT`` and the head's
compare-and-set, with the head the events link to taken from memory (what this process
last committed on that lake) rather than read back. The memory is only a hint: the
compare-and-set checks it against the stored row in the same transaction, and a stale
hint (another connection or process appended meanwhile) rolls back and retries from
the stored head. Appends inside a caller's own transaction never use the hint: they
claim and read the head row there, as a stale hint would abort the caller's work.

Written here rather than taken from a library: the chain is a few lines of
:mod:`hashlib` over a canonical JSON text, and a library (e.g. an append-only log
service) would add a server the hospital must run.
"""

from __future__ import annotations

import datetime as dt
import getpass
import hashlib
import json
import os
import random
import socket
import sys
import threading
import time
import weakref
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import sqlglot.expressions as sge

from medlake.audit.group_commit import GroupCommit
from medlake.clock import utc_now
from medlake.engine import Engine, SupportsTransactions
from medlake.engine.prepared import PreparedQuery, PreparedWrite
from medlake.errors import EngineError, UsageError
from medlake.log import get_logger

logger = get_logger(__name__)

EVENT_TABLE = "audit_event"
HEAD_TABLE = "audit_head"
ZERO_HASH = "0" * 64
#: Outcomes an event may record.
OUTCOMES = ("ok", "denied", "failed")
_HASH_DOMAIN = "medlake-audit-v1\n"
_HEAD_KEY = "main"
_RETRIES = 200
# Writers in this process take turns; other connections are kept out by audit_head.
_LOCK = threading.Lock()


@dataclass(frozen=True)
class AuditEvent:
    """One event as stored in ``audit_event``."""

    event_id: int
    occurred_at: dt.datetime
    actor: str
    role: str | None
    action: str
    object_type: str | None
    object_id: str | None
    project_id: str | None
    detail: str | None  # canonical JSON text, as hashed
    outcome: str | None
    origin: str | None
    prev_hash: str
    event_hash: str

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AuditEvent:
        return cls(**{name: row.get(name) for name in cls.__dataclass_fields__})  # type: ignore[arg-type]

    def detail_object(self) -> Any:
        """``detail`` parsed back from JSON (None when there is none)."""
        return None if self.detail is None else json.loads(self.detail)

    def computed_hash(self) -> str:
        """The hash this event's stored fields and ``prev_hash`` call for."""
        return event_hash(self)


def canonical_json(value: Any) -> str:
    """JSON with sorted keys, no spaces and UTF-8 kept: one text per value."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)


def _timestamp(value: dt.datetime) -> str:
    # Naive UTC, microseconds always written, so the text survives a round trip.
    if value.tzinfo is not None:
        value = value.astimezone(dt.UTC).replace(tzinfo=None)
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


def event_hash(event: AuditEvent) -> str:
    """SHA-256 hex of the event's canonical fields and its ``prev_hash``."""
    fields = {
        "occurred_at": _timestamp(event.occurred_at),
        "actor": event.actor,
        "role": event.role,
        "action": event.action,
        "object_type": event.object_type,
        "object_id": event.object_id,
        "project_id": event.project_id,
        "detail": event.detail,
        "outcome": event.outcome,
        "origin": event.origin,
        "prev_hash": event.prev_hash,
    }
    return hashlib.sha256((_HASH_DOMAIN + canonical_json(fields)).encode()).hexdigest()


def default_actor() -> str:
    """Who acts when there are no medlake users yet: ``os:<login name>``.

    Once users exist (the access layer), services pass the signed-in user instead.
    """
    try:
        name = getpass.getuser()
    except (OSError, KeyError):  # no login name (containers without a passwd entry)
        name = str(os.getuid()) if hasattr(os, "getuid") else "unknown"
    return f"os:{name}"


def default_origin() -> str:
    """Where this process runs: ``<host>/<program>``, e.g. ``ward-pc/medlake``."""
    program = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "python"
    return f"{socket.gethostname()}/{program}"


def append_event(
    engine: Engine,
    *,
    actor: str,
    action: str,
    object_type: str | None = None,
    object_id: str | None = None,
    role: str | None = None,
    project_id: str | None = None,
    detail: Mapping[str, Any] | None = None,
    outcome: str = "ok",
    origin: str | None = None,
    occurred_at: dt.datetime | None = None,
) -> int:
    """Append one event to the trail and return its ``event_id``.

    ``actor`` is the user (or ``system:<job>``; :func:`default_actor` while there are no
    users); ``action`` a short verb (``read``, ``export``, ``merge``, ``unmerge``,
    ``user.add``, ``settings.change``...); ``object_type``/``object_id`` what it acted
    on (``person``/``"123"``, ``cohort``/``"c7"``); persons touched in bulk go in
    ``detail`` as ``{"person_ids": [...]}`` so ``medlake audit show --person`` finds
    them. ``outcome`` is ``ok``, ``denied`` or ``failed``; ``origin`` defaults to
    :func:`default_origin`. Called inside an open ``engine.transaction()`` the event
    commits (or rolls back) with that work; otherwise it commits on its own.

    Raises:
        UsageError: empty actor or action, or an unknown outcome.
        EngineError: the lake could not be written.
    """
    if not actor or not actor.strip():
        raise UsageError("audit event needs an actor (a user, or system:<job>)")
    if not action or not action.strip():
        raise UsageError("audit event needs an action")
    if outcome not in OUTCOMES:
        raise UsageError(f"audit outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    when = utc_now() if occurred_at is None else occurred_at.astimezone(dt.UTC).replace(tzinfo=None)
    draft = AuditEvent(
        event_id=0,
        occurred_at=when,
        actor=actor,
        role=role,
        action=action,
        object_type=object_type,
        object_id=None if object_id is None else str(object_id),
        project_id=project_id,
        detail=None if detail is None else canonical_json(dict(detail)),
        outcome=outcome,
        origin=origin if origin is not None else default_origin(),
        prev_hash=ZERO_HASH,
        event_hash="",
    )
    journal = _LIVE.get(_lake_key(engine)) if _LIVE else None
    if journal is not None:
        # While served, the lake's appends go to its journal (medlake.audit.journal).
        if engine.in_transaction:
            with engine.writes_while_frozen():
                return journal.write_in_transaction(engine, [draft])[0]  # type: ignore[no-any-return]
        if journal.held_by_this_thread():
            raise EngineError(
                "audit append outside the transaction this thread has open on the lake: "
                "append on that transaction's engine"
            )
    if isinstance(engine, SupportsTransactions) and not engine.in_transaction:
        # Concurrent appends to one lake share a transaction (group commit); each call
        # still returns only once its own event has committed (to the journal's fsync'd
        # file while one is live).
        return _GROUPS.submit(_lake_key(engine), draft, lambda drafts: _grouped(engine, drafts))
    return _write(engine, [draft])[0]


def _grouped(engine: Engine, drafts: list[AuditEvent]) -> list[int]:
    journal = _LIVE.get(_lake_key(engine)) if _LIVE else None
    if journal is not None:
        ids = journal.append(drafts)
        if ids is not None:
            return ids  # type: ignore[no-any-return]
    return _write(engine, drafts)


def _write(engine: Engine, drafts: list[AuditEvent]) -> list[int]:
    """Append ``drafts`` in order, in one transaction where the engine has them."""
    # The trail is written even while the workspace is frozen read-only: it must record
    # the alert, the refused attempts and the review that lifts the freeze.
    with _LOCK, engine.writes_while_frozen():
        journal_now = _LIVE.get(_lake_key(engine)) if _LIVE else None
        if journal_now is not None:  # went live since the caller looked
            if engine.in_transaction:
                return journal_now.write_in_transaction(engine, drafts)  # type: ignore[no-any-return]
            ids = journal_now.append(drafts)
            if ids is not None:
                return ids  # type: ignore[no-any-return]
        if not isinstance(engine, SupportsTransactions) or not _has_head_table(engine):
            return _append(engine, drafts)
        from medlake.audit import journal  # (imports this module)

        if journal.has_unmoved(engine):
            journal.recover(engine)  # a dead process's journal first: one chain
        # In a caller's transaction the commit is the caller's: no hint taken or kept.
        own = not engine.in_transaction
        key = _lake_key(engine)
        for attempt in range(_RETRIES):
            hint = _HEADS.get(key) if own else None
            try:
                # Only the trail's tables: never waits for a CDM table's rewrite.
                with engine.transaction(tables=(EVENT_TABLE, HEAD_TABLE)):
                    events = _append_guarded(engine, drafts, hint)
            except _HeadMovedError:
                _HEADS.pop(key, None)  # another writer appended: start from the stored head
                continue
            except EngineError as error:
                _HEADS.pop(key, None)
                if not _is_conflict(error) or attempt == _RETRIES - 1:
                    raise
                logger.debug("audit append met another writer; retrying (%s)", attempt + 1)
                # Random back-off, so racing writers do not meet again in step.
                time.sleep(random.uniform(0.001, 0.004) * min(attempt + 1, 10))
                continue
            if own:
                _HEADS[key] = (events[-1].event_id, events[-1].event_hash)  # committed
            else:
                _HEADS.pop(key, None)  # the caller may still roll it back
            return [event.event_id for event in events]
    raise EngineError(f"audit append gave up after {_RETRIES} attempts: {HEAD_TABLE} kept moving")


_GROUPS: GroupCommit[AuditEvent] = GroupCommit()
# Per lake (_lake_key): the (event_id, event_hash) this process last committed as the
# head. A hint, checked by the compare-and-set of every append that uses it.
_HEADS: dict[Hashable, tuple[int, str]] = {}


class _HeadMovedError(Exception):
    """The stored head is not the hint the events were linked to: roll back, retry."""


def _lake_key(engine: Engine) -> Hashable:
    """Engines on the same lake file share a queue; an in-memory lake is its own."""
    path = str(getattr(engine, "path", "") or "")
    if not path or path == ":memory:":
        return ("engine", id(engine))
    real = _REAL_PATHS.get(path)
    if real is None:  # realpath lstat()s every part: 0.07 ms, three times an append
        real = _REAL_PATHS[path] = os.path.realpath(path)
    return (engine.kind, real)


_REAL_PATHS: dict[str, str] = {}


def _is_conflict(error: EngineError) -> bool:
    text = error.message.lower()
    return "conflict" in text


def chain_head(engine: Engine) -> tuple[int, str]:
    """``(event_id, event_hash)`` of the last event, or ``(0, ZERO_HASH)`` when empty (the
    live journal's last event while one is live)."""
    journal = _LIVE.get(_lake_key(engine)) if _LIVE else None
    if journal is not None:
        return journal.head  # type: ignore[no-any-return]
    return _table_head(engine)


def _table_head(engine: Engine) -> tuple[int, str]:
    events = engine.table(EVENT_TABLE)
    last = engine.execute(
        events.select("event_id", "event_hash").order_by(events.event_id.desc()).limit(1)
    ).to_pylist()
    if not last:
        return 0, ZERO_HASH
    return int(last[0]["event_id"]), str(last[0]["event_hash"])


def _chained(drafts: list[AuditEvent], last_id: int, last_hash: str) -> list[AuditEvent]:
    """``drafts`` numbered and linked after the event ``(last_id, last_hash)``."""
    events = []
    for draft in drafts:
        event = AuditEvent(
            **{**draft.__dict__, "event_id": last_id + 1, "prev_hash": last_hash, "event_hash": ""}
        )
        event = AuditEvent(**{**event.__dict__, "event_hash": event_hash(event)})
        events.append(event)
        last_id, last_hash = event.event_id, event.event_hash
    return events


def _append(engine: Engine, drafts: list[AuditEvent]) -> list[int]:
    """Append on an engine without transactions or a lake from before ``audit_head``:
    a single writer, the head read from the trail itself."""
    events = _chained(drafts, *_table_head(engine))
    engine.load_arrow(EVENT_TABLE, pa.Table.from_pylist([event.__dict__ for event in events]))
    return [event.event_id for event in events]


def _append_guarded(
    engine: Engine, drafts: list[AuditEvent], hint: tuple[int, str] | None
) -> list[AuditEvent]:
    """Insert ``drafts`` after the head and move the head row, in the open transaction:
    after ``hint`` when given (checked by the compare-and-set), else after the stored head."""
    hinted = hint is not None
    if hint is None:
        # Claimed before it is read: a second writer conflicts right here.
        engine.run_prepared_write(_CLAIM_HEAD, [_HEAD_KEY])
        hint = _read_head_row(engine)
    events = _chained(drafts, *hint)
    if not _stored(engine, events, hint):
        if hinted:
            raise _HeadMovedError()
        raise EngineError(f"{HEAD_TABLE} moved under a claimed append; nothing was written")
    return events


def _stored(engine: Engine, events: list[AuditEvent], head: tuple[int, str]) -> bool:
    """Insert ``events`` and move the head row from ``head`` to the last of them, in the
    open transaction; False when the head row was not at ``head`` (roll back)."""
    for start in range(0, len(events), _INSERT_ROWS):
        chunk = events[start : start + _INSERT_ROWS]
        engine.run_prepared_write(
            _insert_statement(len(chunk)),
            [getattr(event, name) for event in chunk for name in _COLUMNS],
        )
    last = events[-1]
    moved = engine.run_prepared_write(
        _MOVE_HEAD, [last.event_id, last.event_hash, utc_now(), _HEAD_KEY, *head]
    )
    return moved == 1


# ------------------------------------------------------------------ for the journal

#: The trail's tables: what a transaction that appends writes.
TRAIL_TABLES = (EVENT_TABLE, HEAD_TABLE)
# Per lake (_lake_key): the journal live in this process (medlake.audit.journal).
_LIVE: dict[Hashable, Any] = {}


def lake_key(engine: Engine) -> Hashable:
    """What identifies the engine's lake in this process (its file's real path)."""
    return _lake_key(engine)


def chained(drafts: list[AuditEvent], last_id: int, last_hash: str) -> list[AuditEvent]:
    """``drafts`` numbered and linked after the event ``(last_id, last_hash)``."""
    return _chained(drafts, last_id, last_hash)


def claim_head(engine: Engine) -> tuple[int, str]:
    """In the open transaction: take the head row (another writer now conflicts) and
    return the stored head (made first from the trail on a lake without the row)."""
    if not _has_head_table(engine):
        raise EngineError(f"the lake has no {HEAD_TABLE} table: upgrade its schema")
    engine.run_prepared_write(_CLAIM_HEAD, [_HEAD_KEY])
    return _read_head_row(engine)


def store_events(engine: Engine, events: list[AuditEvent], head: tuple[int, str]) -> None:
    """In the open transaction: insert ``events`` (chained after ``head``) and move the
    head row from ``head`` to the last of them."""
    if not _stored(engine, events, head):
        raise EngineError(f"{HEAD_TABLE} moved under a claimed append; nothing was written")


def live_journal(engine: Engine) -> Any:
    """The journal live in this process for the engine's lake, or None."""
    return _LIVE.get(_lake_key(engine)) if _LIVE else None


def direct_appends_held() -> threading.Lock:
    """The lock every append to the table takes: held while a journal goes live or
    offline, so none runs meanwhile (and each looks for a live journal under it)."""
    return _LOCK


def go_live(journal: Any) -> None:
    """Route the lake's appends to ``journal`` (its ``key``) from now on; call with
    :func:`direct_appends_held` held."""
    if journal.key in _LIVE:
        raise EngineError("an audit journal is already live for this lake")
    _HEADS.pop(journal.key, None)  # the journal moves the head from now on
    _LIVE[journal.key] = journal


def go_offline(journal: Any) -> None:
    """Appends go to the table again (the journal moved everything into it); call with
    :func:`direct_appends_held` held."""
    if _LIVE.get(journal.key) is journal:
        del _LIVE[journal.key]
    _HEADS.pop(journal.key, None)


# The event's columns, in the order the prepared INSERT binds them.
_COLUMNS = tuple(AuditEvent.__dataclass_fields__)
# Rows per INSERT statement: one statement text per batch size up to this, kept.
_INSERT_ROWS = 64
_INSERTS: dict[int, PreparedWrite] = {}


def _insert_statement(rows: int) -> PreparedWrite:
    statement = _INSERTS.get(rows)
    if statement is None:
        row = sge.Tuple(expressions=[sge.Placeholder() for _ in _COLUMNS])
        values = sge.values([row.copy() for _ in range(rows)])
        statement = PreparedWrite(sge.insert(values, EVENT_TABLE, columns=list(_COLUMNS)))
        _INSERTS[rows] = statement
    return statement


def _head_where(*columns: str) -> sge.Expression:
    condition: sge.Expression = sge.column("chain").eq(sge.Placeholder())
    for column in columns:
        condition = condition.and_(sge.column(column).eq(sge.Placeholder()))
    return condition


# Take the head row for this transaction without changing it (a caller's transaction).
_CLAIM_HEAD = PreparedWrite(
    sge.update(HEAD_TABLE, {"chain": sge.column("chain")}, where=_head_where())
)
# Compare-and-set: move the head only from the event the new ones link to.
_MOVE_HEAD = PreparedWrite(
    sge.update(
        HEAD_TABLE,
        {
            "event_id": sge.Placeholder(),
            "event_hash": sge.Placeholder(),
            "updated_at": sge.Placeholder(),
        },
        where=_head_where("event_id", "event_hash"),
    )
)


# Engines whose lake is known to have the head row (it is made once, then only updated).
_HEAD_READY: weakref.WeakSet[Engine] = weakref.WeakSet()


def _has_head_table(engine: Engine) -> bool:
    if engine in _HEAD_READY:
        return True
    if not engine.has_table(HEAD_TABLE):
        return False  # a lake from before audit_head: single writer, as on Spark
    heads = engine.table(HEAD_TABLE)
    if engine.count(heads.filter(heads.chain == _HEAD_KEY)) == 0:
        # First append, or a lake that had events before the table: start from the trail.
        event_id, event_hash_ = _table_head(engine)
        engine.load_arrow(
            HEAD_TABLE,
            pa.table(
                {
                    "chain": [_HEAD_KEY],
                    "event_id": [event_id],
                    "event_hash": [event_hash_],
                    "updated_at": [utc_now()],
                }
            ),
        )
    _HEAD_READY.add(engine)
    return True


# Read on every append: prepared once (the key is bound), not transpiled each time.
_HEAD_ROW = PreparedQuery(
    sge.select("event_id", "event_hash")
    .from_(HEAD_TABLE)
    .where(sge.column("chain").eq(sge.Placeholder()))
)


def _read_head_row(engine: Engine) -> tuple[int, str]:
    rows = engine.run_prepared(_HEAD_ROW, [_HEAD_KEY])
    if rows.num_rows != 1:
        raise EngineError(f"{HEAD_TABLE} must hold one row for the chain, not {rows.num_rows}")
    row = rows.to_pylist()[0]
    return int(row["event_id"]), str(row["event_hash"])


__all__ = [
    "EVENT_TABLE",
    "HEAD_TABLE",
    "OUTCOMES",
    "ZERO_HASH",
    "AuditEvent",
    "append_event",
    "canonical_json",
    "chain_head",
    "default_actor",
    "default_origin",
    "event_hash",
]

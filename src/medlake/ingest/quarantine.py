"""Quarantine: records that could not be parsed or mapped, kept with the reason and payload.

Readers report the records they cannot parse; the writer adds staged rows that still
miss a required CDM field after ids and concepts are derived. Each entry's id is the
SHA-256 of (batch, location, field, reason), so re-running a batch — after a crash, or a
``quarantine retry`` — finds the entries already there instead of adding duplicates.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.ingest.lake_tables import lake_table
from medlake.ingest.staging import QuarantineEntry

QUARANTINE_TABLE = "quarantine"
_LOCATION_CHARS = 255
_REASON_CHARS = 1000
_FIELD_CHARS = 255


def quarantine_id(batch_id: str, location: str, field: str | None, reason: str) -> str:
    """Deterministic id of a quarantine entry."""
    key = "\x1f".join((batch_id, location, field or "", reason))
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def payload_text(row: dict[str, object]) -> str:
    """A staged row as JSON, for the ``raw_payload`` of an entry the writer made."""
    return json.dumps(row, ensure_ascii=False, default=str, sort_keys=True)


def store_quarantine(
    engine: Engine,
    *,
    batch_id: str,
    source_system: str,
    entries: Iterable[QuarantineEntry],
    now: dt.datetime,
) -> list[str]:
    """Add the entries not already stored; return the ids of all of them.

    The ids include entries found already stored (a re-run reports the same number).
    """
    stored = store_quarantine_batches(
        engine, source_system=source_system, entries={batch_id: entries}, now=now
    )
    return stored.get(batch_id, [])


def store_quarantine_batches(
    engine: Engine,
    *,
    source_system: str,
    entries: Mapping[str, Iterable[QuarantineEntry]],
    now: dt.datetime,
) -> dict[str, list[str]]:
    """:func:`store_quarantine` for several batches' entries (by batch id) in one lookup
    and one insert; returns each batch's ids (batches without entries left out)."""
    rows: dict[str, tuple[str, QuarantineEntry]] = {}
    ids_by_batch: dict[str, list[str]] = {}
    for batch_id, batch_entries in entries.items():
        keys: dict[str, None] = {}
        for entry in batch_entries:
            location = entry.location[:_LOCATION_CHARS]
            reason = entry.reason[:_REASON_CHARS]
            field = entry.field[:_FIELD_CHARS] if entry.field else None
            key = quarantine_id(batch_id, location, field, reason)
            if key not in rows:
                rows[key] = (batch_id, QuarantineEntry(location, reason, entry.raw_payload, field))
            keys[key] = None
        if keys:
            ids_by_batch[batch_id] = list(keys)
    if not rows:
        return {}
    ids = pa.array(list(rows), pa.string())
    table = lake_table(engine, QUARANTINE_TABLE)
    wanted = ibis.memtable(pa.table({"id": ids}))
    present = set(
        engine.execute(table.filter(table.quarantine_id.isin(wanted.id)).select("quarantine_id"))
        .column("quarantine_id")
        .to_pylist()
    )
    new = [key for key in rows if key not in present]
    if new:
        count = len(new)
        engine.load_arrow(
            QUARANTINE_TABLE,
            pa.table(
                {
                    "quarantine_id": pa.array(new, pa.string()),
                    "batch_id": pa.array([rows[k][0] for k in new], pa.string()),
                    "source_system": pa.array([source_system] * count, pa.string()),
                    "location": pa.array([rows[k][1].location for k in new], pa.string()),
                    "reason": pa.array([rows[k][1].reason for k in new], pa.string()),
                    "field": pa.array([rows[k][1].field for k in new], pa.string()),
                    "raw_payload": pa.array([rows[k][1].raw_payload for k in new], pa.string()),
                    "quarantined_at": pa.array([now] * count, pa.timestamp("us")),
                }
            ),
        )
    return ids_by_batch


def resolve_quarantine(
    engine: Engine, *, batch_id: str, still_failing: set[str], now: dt.datetime
) -> int:
    """Mark the batch's open entries that a re-read no longer produced as resolved.

    Used by ``quarantine retry``: after the landed file is read again (say with a fixed
    mapping), entries whose record now loads get ``resolved_at``; they stay in the
    table as a record of what happened. Returns how many were resolved.
    """
    table = lake_table(engine, QUARANTINE_TABLE)
    open_entries = table.filter((table.batch_id == batch_id) & table.resolved_at.isnull())
    rows = engine.execute(open_entries)
    resolved = rows.filter(
        pc.invert(
            pc.is_in(
                rows.column("quarantine_id"), value_set=pa.array(sorted(still_failing), pa.string())
            )
        )
    )
    if resolved.num_rows == 0:
        return 0
    wanted = ibis.memtable(pa.table({"id": resolved.column("quarantine_id")}))
    engine.delete_where(QUARANTINE_TABLE, table.quarantine_id.isin(wanted.id))
    resolved = resolved.set_column(
        resolved.column_names.index("resolved_at"),
        "resolved_at",
        pa.array([now] * resolved.num_rows, pa.timestamp("us")),
    )
    engine.load_arrow(QUARANTINE_TABLE, resolved)
    return resolved.num_rows

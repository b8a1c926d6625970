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
from collections.abc import Iterable

import ibis
import pyarrow as pa

from medlake.engine import Engine
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
) -> int:
    """Add the entries not already stored; return how many entries the batch has here.

    The count includes entries found already stored (a re-run reports the same number).
    """
    rows: dict[str, QuarantineEntry] = {}
    for entry in entries:
        location = entry.location[:_LOCATION_CHARS]
        reason = entry.reason[:_REASON_CHARS]
        field = entry.field[:_FIELD_CHARS] if entry.field else None
        key = quarantine_id(batch_id, location, field, reason)
        rows.setdefault(key, QuarantineEntry(location, reason, entry.raw_payload, field))
    if not rows:
        return 0
    ids = pa.array(list(rows), pa.string())
    table = engine.table(QUARANTINE_TABLE)
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
                    "batch_id": pa.array([batch_id] * count, pa.string()),
                    "source_system": pa.array([source_system] * count, pa.string()),
                    "location": pa.array([rows[k].location for k in new], pa.string()),
                    "reason": pa.array([rows[k].reason for k in new], pa.string()),
                    "field": pa.array([rows[k].field for k in new], pa.string()),
                    "raw_payload": pa.array([rows[k].raw_payload for k in new], pa.string()),
                    "quarantined_at": pa.array([now] * count, pa.timestamp("us")),
                }
            ),
        )
    return len(rows)

"""Ingest batches: one per landed file and source system, found again after a crash.

A batch's id is derived from (source system, landed SHA-256), so ingesting the same
content for the same source again — after success, failure or a kill -9 — finds the
same ``ingest_batch`` row instead of making a new one. Its ``received_at`` is kept from
the first registration, because readers use it as the version of records that carry
none: a re-run must give those records the same version.

Status: ``received`` (registered, committed on its own) → ``running`` (committed before
the work starts, so an operator sees a batch that died mid-way) → ``loaded`` (written in
the same transaction as the batch's rows) or ``failed`` (after the rollback, with the
message). ``medlake ingest`` reads a new file at once, so it registers the batch as
``running`` directly; ``received`` is for batches registered to be read later.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

import ibis
import pyarrow as pa

from medlake.clock import utc_now
from medlake.engine import Engine
from medlake.ingest.lake_tables import atomically, lake_table

BATCH_TABLE = "ingest_batch"

RECEIVED = "received"
RUNNING = "running"
LOADED = "loaded"
FAILED = "failed"

_MESSAGE_CHARS = 4000


def batch_id_for(source_system: str, sha256: str, *companions: str) -> str:
    """Deterministic batch id: 32 hex digits of SHA-256 over (source system, content hash).

    ``companions`` (e.g. ``"fam=<sha256>"``) join the key when a batch is a file with
    companion files, so the same data file with a new manifest is a new batch.
    """
    key = "\x1f".join(("batch", source_system, sha256, *companions))
    return hashlib.sha256(key.encode()).hexdigest()[:32]


@dataclass(frozen=True)
class IngestBatch:
    """One row of ``ingest_batch``."""

    batch_id: str
    source_system: str
    format: str
    landed_sha256: str
    landed_path: str
    original_name: str | None
    size_bytes: int
    received_at: dt.datetime
    status: str
    rows_loaded: int | None = None
    rows_quarantined: int | None = None
    message: str | None = None
    started_at: dt.datetime | None = None
    finished_at: dt.datetime | None = None

    def as_row(self) -> pa.Table:
        """The batch as a one-row ``ingest_batch`` table."""
        return pa.table({name: [value] for name, value in dataclasses.asdict(self).items()})


def find_batch(engine: Engine, batch_id: str) -> IngestBatch | None:
    """The batch with this id, or None."""
    table = lake_table(engine, BATCH_TABLE)
    rows = engine.execute(table.filter(table.batch_id == batch_id)).to_pylist()
    if not rows:
        return None
    return _batch_of(rows[0])


def _batch_of(row: dict[str, object]) -> IngestBatch:
    return IngestBatch(
        batch_id=row["batch_id"],
        source_system=row["source_system"],
        format=row["format"],
        landed_sha256=row["landed_sha256"],
        landed_path=row["landed_path"],
        original_name=row["original_name"],
        size_bytes=int(row["size_bytes"]),
        received_at=row["received_at"],
        status=row["status"],
        rows_loaded=row["rows_loaded"],
        rows_quarantined=row["rows_quarantined"],
        message=row["message"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
    )


def batches_of(engine: Engine, source_systems: list[str]) -> dict[str, IngestBatch]:
    """Every batch of these sources by id (one query for a whole run).

    Lets a re-ingest skip content it has loaded before, and a first ingest register new
    batches, with no per-file lookup.
    """
    table = lake_table(engine, BATCH_TABLE)
    rows = engine.execute(table.filter(table.source_system.isin(source_systems)))
    return {row["batch_id"]: _batch_of(row) for row in rows.to_pylist()}


class LandedBatches(NamedTuple):
    """What a run may know of the batches before landing its files (one query)."""

    sizes: set[int]  # of every batch's content: a file of another size never was a batch
    loaded: set[str]  # ids of the loaded batches: their files need no reading plan


def landed_batches(engine: Engine) -> LandedBatches:
    """Every batch's size and the loaded batches' ids (see ``land_file``'s ``likely_new``)."""
    table = lake_table(engine, BATCH_TABLE)
    rows = engine.execute(table.select("batch_id", "size_bytes", "status"))
    sizes = set(rows.column("size_bytes").drop_null().to_pylist())
    ids, statuses = rows.column("batch_id").to_pylist(), rows.column("status").to_pylist()
    loaded = {b for b, status in zip(ids, statuses, strict=True) if status == LOADED}
    return LandedBatches(sizes, loaded)


def register_batch(
    engine: Engine,
    *,
    source_system: str,
    format: str,
    landed_sha256: str,
    landed_path: str,
    original_name: str | None,
    size_bytes: int,
    batch_id: str | None = None,
    known_new: bool = False,
    start: bool = False,
    received_at: dt.datetime | None = None,
    write: bool = True,
) -> IngestBatch:
    """The batch for this landed content and source, registered if new.

    ``batch_id`` defaults to :func:`batch_id_for` of the source and content;
    ``known_new`` skips the lookup (the caller listed the source's batches). A new batch
    is ``received``, or with ``start`` (it is read right away) ``running`` at once,
    which saves rewriting its row a moment later. ``received_at`` (millisecond
    precision) is the receive time a new batch gets, when the caller chose it before
    registering (it started reading the file with that default version); else now.
    ``write=False`` returns a new batch unwritten, for :func:`register_batches`.
    """
    batch_id = batch_id or batch_id_for(source_system, landed_sha256)
    existing = None if known_new else find_batch(engine, batch_id)
    if existing is not None:
        return existing
    now = utc_now()
    batch = IngestBatch(
        batch_id=batch_id,
        source_system=source_system,
        format=format,
        landed_sha256=landed_sha256,
        landed_path=landed_path,
        original_name=original_name,
        size_bytes=size_bytes,
        received_at=received_at or receive_time(now),
        status=RUNNING if start else RECEIVED,
        started_at=now if start else None,
    )
    if write:
        engine.load_arrow(BATCH_TABLE, batch.as_row())
    return batch


def register_batches(engine: Engine, batches: Sequence[IngestBatch]) -> None:
    """Write new batches (``register_batch(..., write=False)``) in one insert: one commit
    for a group of small files instead of one each (a commit's fsync was most of a small
    file's cost)."""
    if batches:
        engine.load_arrow(BATCH_TABLE, _rows(batches))


def _rows(batches: Sequence[IngestBatch]) -> pa.Table:
    """Batches as ``ingest_batch`` rows (their fields are plain values: no deep copy as
    ``dataclasses.asdict`` makes, ~0.2 ms a batch for a group of a thousand)."""
    names = [f.name for f in dataclasses.fields(IngestBatch)]
    return pa.table({name: [getattr(batch, name) for batch in batches] for name in names})


def receive_time(now: dt.datetime | None = None) -> dt.datetime:
    """A new batch's ``received_at``: now, to the millisecond (readers turn it into an
    epoch-ms version)."""
    now = now or utc_now()
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def set_batch_status(
    engine: Engine,
    batch: IngestBatch,
    status: str,
    *,
    rows_loaded: int | None = None,
    rows_quarantined: int | None = None,
    message: str | None = None,
) -> IngestBatch:
    """Move ``batch`` to ``status``, stamping started_at (running) or finished_at (others).

    The row is rewritten (delete, insert) rather than updated, which every engine can do
    (Spark's Parquet tables have no UPDATE), atomically where the engine allows; the
    batch as it is now is returned.
    """
    now = utc_now()
    changes: dict[str, object] = {"status": status}
    if status == RUNNING:
        changes.update(started_at=now, finished_at=None, message=None)
    else:
        changes["finished_at"] = now
    if rows_loaded is not None:
        changes["rows_loaded"] = rows_loaded
    if rows_quarantined is not None:
        changes["rows_quarantined"] = rows_quarantined
    if message is not None:
        changes["message"] = message[:_MESSAGE_CHARS]
    updated = dataclasses.replace(batch, **changes)  # type: ignore[arg-type]
    table = lake_table(engine, BATCH_TABLE)
    with atomically(engine):
        engine.delete_where(BATCH_TABLE, table.batch_id == batch.batch_id)
        engine.load_arrow(BATCH_TABLE, updated.as_row())
    return updated


def set_batches_loaded(
    engine: Engine, loaded: list[tuple[IngestBatch, int, int, str]]
) -> list[IngestBatch]:
    """:func:`set_batch_status` ``loaded`` for many batches in two statements.

    ``loaded``: (batch, rows loaded, rows quarantined, message) each. For a group of
    batches written in one transaction (the caller's).
    """
    now = utc_now()
    updated = [
        dataclasses.replace(
            batch,
            status=LOADED,
            finished_at=now,
            rows_loaded=rows,
            rows_quarantined=quarantined,
            message=message[:_MESSAGE_CHARS],
        )
        for batch, rows, quarantined, message in loaded
    ]
    if not updated:
        return []
    table = lake_table(engine, BATCH_TABLE)
    # The ids as a table, not an IN list of literals: a group's thousand literals cost
    # DuckDB ~0.4 s to plan.
    ids = ibis.memtable(pa.table({"id": pa.array(sorted(b.batch_id for b in updated))}))
    engine.delete_where(BATCH_TABLE, table.batch_id.isin(ids.id))
    engine.load_arrow(BATCH_TABLE, _rows(updated))
    return updated

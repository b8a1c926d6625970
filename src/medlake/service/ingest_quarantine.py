"""``medlake quarantine``: list, show and retry quarantined records.

Split from :mod:`medlake.service.ingest`, which re-exports these names.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import MedlakeError, UsageError
from medlake.ingest.batches import IngestBatch, find_batch
from medlake.ingest.formats import reader_for
from medlake.ingest.quarantine import QUARANTINE_TABLE
from medlake.ingest.staging import SourceContext
from medlake.ingest.writer import write_batch
from medlake.service.ingest_report import FileResult, IngestProgress, IngestReport
from medlake.service.policy import authorized, may, record_read
from medlake.service.workspace import open_lake

QUARANTINE_LIST_COLUMNS = (
    "quarantine_id",
    "batch_id",
    "source_system",
    "location",
    "field",
    "reason",
)


@authorized(Permission.INGEST)
def quarantine_entries(
    workspace_dir: Path | Workspace | None,
    *,
    batch_id: str | None = None,
    include_resolved: bool = False,
) -> list[dict[str, object]]:
    """Quarantine entries (open ones unless ``include_resolved``), oldest first; the raw
    payloads (identified data) only for those who may read it, else None."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        table = engine.table(QUARANTINE_TABLE)
        if batch_id is not None:
            table = table.filter(table.batch_id == batch_id)
        if not include_resolved:
            table = table.filter(table.resolved_at.isnull())
        ordered = table.order_by(["quarantined_at", "batch_id", "location", "quarantine_id"])
        entries = engine.execute(ordered).to_pylist()
    if not may(Permission.READ_IDENTIFIED):
        entries = [entry | {"raw_payload": None} for entry in entries]
    return entries


@authorized(Permission.READ_IDENTIFIED)  # the raw payload is identified data
def quarantine_entry(
    workspace_dir: Path | Workspace | None, quarantine_id: str
) -> dict[str, object]:
    """One entry by id, or by a prefix of its id that only it has."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        table = engine.table(QUARANTINE_TABLE)
        rows = engine.execute(table.filter(table.quarantine_id.startswith(quarantine_id)).limit(2))
        if rows.num_rows == 0:
            raise UsageError(f"no quarantine entry {quarantine_id!r}")
        if rows.num_rows > 1:
            raise UsageError(f"quarantine id prefix {quarantine_id!r} is ambiguous: give more")
        entry = rows.to_pylist()[0]
        record_read(engine, "quarantine", str(entry["quarantine_id"]))
    return entry


@authorized(Permission.INGEST)
def retry_quarantine(
    workspace_dir: Path | Workspace | None,
    *,
    batch_id: str | None = None,
    options: Mapping[str, object] | None = None,
    progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    """Read again the landed files of batches with open quarantine entries.

    Meant for after a fix (a corrected mapping in ``options``, a vocabulary loaded):
    records that now load are written like any newer reading, entries no longer produced
    are marked resolved, and the rest stay. Batches of files that had companion files
    (PLINK filesets) cannot be retried this way; ingest them again instead.
    """
    workspace = as_workspace(workspace_dir)
    report = IngestReport()
    with open_lake(workspace) as engine:
        table = engine.table(QUARANTINE_TABLE)
        wanted = table.filter(table.resolved_at.isnull())
        if batch_id is not None:
            wanted = wanted.filter(wanted.batch_id == batch_id)
        batch_ids = sorted(
            engine.execute(wanted.select("batch_id").distinct()).column("batch_id").to_pylist()
        )
        batches = [b for b in (find_batch(engine, i) for i in batch_ids) if b is not None]
        for index, batch in enumerate(batches):
            report.files.append(
                _retry_batch(
                    engine, workspace, batch, dict(options or {}), index, len(batches), progress
                )
            )
    return report


def _retry_batch(
    engine: Engine,
    workspace: Workspace,
    batch: IngestBatch,
    options: dict[str, object],
    index: int,
    total: int,
    progress: Callable[[IngestProgress], None] | None,
) -> FileResult:
    started = time.perf_counter()
    name = batch.original_name or batch.landed_path
    if progress is not None:
        progress(IngestProgress(name, index, total, 0, batch.size_bytes))
    context = SourceContext(
        source_system=batch.source_system,
        batch_id=batch.batch_id,
        path=workspace.landing_dir / batch.landed_path,
        original_name=name,
        received_at=batch.received_at,
        omics_dir=workspace.omics_dir,
        options=options,
    )
    try:
        chunks = reader_for(batch.format).read(context)
        summary = write_batch(engine, batch, chunks, resolve_quarantine_entries=True)
    except MedlakeError as error:
        return FileResult(
            name, batch.format, batch.source_system, batch.batch_id, "failed",
            time.perf_counter() - started, None, error.message, error,
        )  # fmt: skip
    if progress is not None:
        progress(IngestProgress(name, index, total, summary.records_read, batch.size_bytes, True))
    return FileResult(
        name, batch.format, batch.source_system, batch.batch_id, "loaded",
        time.perf_counter() - started, summary, f"{summary.resolved} resolved; {summary.message()}",
    )  # fmt: skip

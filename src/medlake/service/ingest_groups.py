"""Writing consecutive small inputs in groups, one transaction per group.

Split from :mod:`medlake.service.ingest`: :class:`BatchGroup` lands, registers and
reads each small file (each is still its own batch) and hands the group to
:func:`medlake.ingest.group_writer.write_batch_group`; :func:`batch_for` and
:func:`batch_id_of` find or register an input's batch for both runners.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from medlake.config import Workspace
from medlake.engine import Engine
from medlake.errors import MedlakeError
from medlake.ingest.batches import (
    FAILED,
    LOADED,
    RUNNING,
    IngestBatch,
    batch_id_for,
    register_batch,
    register_batches,
    set_batch_status,
)
from medlake.ingest.concepts import ConceptMapper
from medlake.ingest.formats import reader_for
from medlake.ingest.group_writer import groupable, write_batch_group
from medlake.ingest.inputs import IngestInput
from medlake.ingest.landing import LandedFile, LandingStore, land_file
from medlake.ingest.pause_points import pause_point
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.ingest.writer import WriteSummary, write_batch
from medlake.log import get_logger
from medlake.service.ingest_report import FileResult, IngestProgress

logger = get_logger(__name__)

BatchHook = Callable[[Engine, IngestBatch, WriteSummary], None]

# Small files are written in groups, one transaction each (medlake.ingest.group_writer).
_GROUP_FILE_BYTES = 4 << 20  # a file this size or larger is written on its own
_GROUP_BYTES = 50 << 20
_GROUP_FILES = 200


def small_input(item: IngestInput) -> bool:
    return not item.companions and item.path.stat().st_size < _GROUP_FILE_BYTES


@dataclass
class _Pending:
    index: int
    item: IngestInput
    batch: IngestBatch
    chunks: list[ParsedChunk]
    seconds: float


class BatchGroup:
    """Consecutive small inputs of one source and format, written in one transaction.

    Each file is still its own batch (see :mod:`medlake.ingest.group_writer`); a file
    with merges or omics samples, or a group that fails, is written file by file.
    """

    def __init__(
        self,
        engine: Engine,
        concepts: ConceptMapper,
        known: dict[str, IngestBatch] | None,
        after_batch: Sequence[BatchHook],
        progress: Callable[[IngestProgress], None] | None,
        total: int,
        store: Callable[[], LandingStore],
    ) -> None:
        self.engine, self.concepts, self.known = engine, concepts, known
        self.store = store
        self.after_batch, self.progress, self.total = after_batch, progress, total
        self.pending: list[_Pending] = []
        # New batches of this group not written yet: registered together (one commit).
        self.unregistered: list[IngestBatch] = []
        self.results: list[FileResult | None] = [None] * total
        self.size = 0

    def _report(self, item: IngestInput, index: int, records: int, done: bool = False) -> None:
        if self.progress is not None:
            size = item.path.stat().st_size
            self.progress(
                IngestProgress(item.original_name, index, self.total, records, size, done)
            )

    def add(
        self, workspace: Workspace, item: IngestInput, options: dict[str, object], index: int
    ) -> None:
        started = time.perf_counter()
        first = self.pending[0].item if self.pending else None
        if first is not None and (first.source_system, first.format) != (
            item.source_system,
            item.format,
        ):
            self.flush()
        self._report(item, index, 0)
        batch_id = None
        try:
            landed = land_file(item.path, self.store())
            pause_point("landed")
            batch_id = batch_id_of(item, landed, {})
            if any(p.batch.batch_id == batch_id for p in self.pending):
                self.flush()  # the same content twice: the second finds it loaded
            if self.known is not None and batch_id not in self.known:
                batch = register_batch(
                    self.engine, source_system=item.source_system, format=item.format,
                    landed_sha256=landed.sha256, landed_path=landed.relative_path,
                    original_name=item.original_name, size_bytes=landed.size,
                    batch_id=batch_id, known_new=True, start=True, write=False,
                )  # fmt: skip
                self.known[batch_id] = batch
                self.unregistered.append(batch)
            else:
                batch = batch_for(self.engine, item, landed, batch_id, self.known)
            pause_point("registered")
            if batch.status == LOADED:
                self._report(item, index, 0, done=True)
                self.results[index] = FileResult(
                    str(item.path), item.format, item.source_system, batch_id, "unchanged",
                    time.perf_counter() - started, WriteSummary(unchanged=batch.rows_loaded or 0),
                    "already loaded",
                )  # fmt: skip
                return
            if batch.status != RUNNING:
                batch = set_batch_status(self.engine, batch, RUNNING)
            pause_point("running")
            context = SourceContext(
                source_system=item.source_system,
                batch_id=batch.batch_id,
                path=landed.path,
                original_name=item.original_name,
                received_at=batch.received_at,
                omics_dir=workspace.omics_dir,
                options={**options, "companion_names": {}},
            )
            try:
                chunks = list(reader_for(item.format).read(context))
            except Exception as exc:
                if batch in self.unregistered:
                    self.unregistered.remove(batch)  # set_batch_status writes its row
                set_batch_status(self.engine, batch, FAILED, message=str(exc))
                raise
        except MedlakeError as error:
            logger.warning("%s: %s", item.path, error.message)
            self.results[index] = FileResult(
                str(item.path), item.format, item.source_system, batch_id, "failed",
                time.perf_counter() - started, None, error.message, error,
            )  # fmt: skip
            return
        pending = _Pending(index, item, batch, chunks, time.perf_counter() - started)
        if not groupable(chunks):
            self.flush()
            self._register()
            self._write_one(pending)
            return
        self.pending.append(pending)
        self.size += item.path.stat().st_size
        if len(self.pending) >= _GROUP_FILES or self.size >= _GROUP_BYTES:
            self.flush()

    def _register(self) -> None:
        unregistered, self.unregistered = self.unregistered, []
        register_batches(self.engine, unregistered)

    def flush(self) -> None:
        self._register()
        pending, self.pending, self.size = self.pending, [], 0
        if not pending:
            return
        started = time.perf_counter()
        try:
            summaries = write_batch_group(
                self.engine, [(p.batch, p.chunks) for p in pending], concepts=self.concepts
            )
        except MedlakeError as error:
            logger.warning("a group of %d files failed (%s); writing them one by one",
                           len(pending), error.message)  # fmt: skip
            for p in pending:
                self._write_one(p)
            return
        # The group's time, shared out by records read (the per-source total is exact).
        elapsed = time.perf_counter() - started
        weights = [summaries[p.batch.batch_id].records_read + 1 for p in pending]
        for p, weight in zip(pending, weights, strict=True):
            summary = summaries[p.batch.batch_id]
            self._loaded(p, summary, p.seconds + elapsed * weight / sum(weights))

    def _write_one(self, p: _Pending) -> None:
        started = time.perf_counter()
        try:
            summary = write_batch(self.engine, p.batch, iter(p.chunks), concepts=self.concepts)
        except MedlakeError as error:
            logger.warning("%s: %s", p.item.path, error.message)
            self.results[p.index] = FileResult(
                str(p.item.path), p.item.format, p.item.source_system, p.batch.batch_id,
                "failed", p.seconds + time.perf_counter() - started, None, error.message, error,
            )  # fmt: skip
            return
        self._loaded(p, summary, p.seconds + time.perf_counter() - started)

    def _loaded(self, p: _Pending, summary: WriteSummary, seconds: float) -> None:
        if self.known is not None:
            self.known[p.batch.batch_id] = dataclasses.replace(
                p.batch,
                status=LOADED,
                rows_loaded=summary.loaded + summary.updated + summary.omics_samples,
            )
        self._report(p.item, p.index, summary.records_read, done=True)
        self.results[p.index] = FileResult(
            str(p.item.path), p.item.format, p.item.source_system, p.batch.batch_id, "loaded",
            seconds, summary, summary.message(),
        )  # fmt: skip


def batch_for(
    engine: Engine,
    item: IngestInput,
    landed: LandedFile,
    batch_id: str,
    known: dict[str, IngestBatch] | None,
    received_at: dt.datetime | None = None,
) -> IngestBatch:
    """The batch of a landed input: the one this run already knows, else registered now
    (received at ``received_at``, if the caller chose that time when it started reading)."""
    batch = (known or {}).get(batch_id) or register_batch(
        engine,
        source_system=item.source_system,
        format=item.format,
        landed_sha256=landed.sha256,
        landed_path=landed.relative_path,
        original_name=item.original_name,
        size_bytes=landed.size,
        batch_id=batch_id,
        known_new=known is not None,
        start=True,
        received_at=received_at,
    )
    if known is not None:
        known[batch_id] = batch  # the same content twice in one run is one batch
    return batch


def batch_id_of(item: IngestInput, landed: LandedFile, companions: dict[str, LandedFile]) -> str:
    """The file's batch id; companions count, so a new manifest makes a new batch."""
    parts = [f"{role}={companions[role].sha256}" for role in sorted(companions)]
    return batch_id_for(item.source_system, landed.sha256, *parts)

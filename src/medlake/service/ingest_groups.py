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
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from medlake.config import Workspace
from medlake.engine import Engine
from medlake.errors import MedlakeError
from medlake.ingest.batches import (
    FAILED,
    LOADED,
    RUNNING,
    IngestBatch,
    batch_id_for,
    receive_time,
    register_batch,
    register_batches,
    set_batch_status,
)
from medlake.ingest.concepts import ConceptMapper
from medlake.ingest.file_reading import FileReaders, GroupReading, reads_contents
from medlake.ingest.group_writer import groupable, write_batch_group
from medlake.ingest.inputs import IngestInput
from medlake.ingest.landing import LandedFile, LandingStore, land_files, landed_path
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
_GROUP_FILES = 1000  # 5,000-patient LIS day files: write CPU 14.3 s at 200, 10.4 at 1,000


def small_input(item: IngestInput) -> bool:
    return not item.companions and item.path.stat().st_size < _GROUP_FILE_BYTES


@dataclass
class _Queued:
    index: int
    item: IngestInput
    options: dict[str, object]
    workspace: Workspace


@dataclass
class _Entry:
    index: int
    item: IngestInput
    batch: IngestBatch
    context: SourceContext
    reading: GroupReading | None = None  # its chunks: reading.result(position)
    position: int = 0


@dataclass
class _Prepared:
    """Files landed, their batches registered, being read: to be written next."""

    entries: list[_Entry]
    reading: GroupReading
    seconds: float  # landing and registering them, shared out when they are written


@dataclass
class _Landed:
    """A queue's files landed and being read, in a thread while the group before is
    written; their batches are registered after that write (:meth:`BatchGroup._advance`)."""

    queue: list[_Queued]
    landed: list[LandedFile | MedlakeError]
    batch_ids: list[str | None]
    cut: int  # files from here on are the same content again: for a later group
    received_at: dt.datetime  # new batches' receive time, chosen before reading them
    contexts: dict[int, tuple[int, SourceContext]]  # queue position: reading position
    reading: GroupReading
    seconds: float


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

    A full group is landed together (:func:`~medlake.ingest.landing.land_files`: one
    round of fsyncs, durable before any of its batches is registered), its files handed
    to reading processes (:mod:`medlake.ingest.file_reading`; as they are landed, for a
    reader that takes their bytes) and its new batches registered in one insert; the
    group before it is written while they are parsed. The same content twice waits for
    the first to be written.
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
        self.queue: list[_Queued] = []  # not landed yet
        self.ahead: _Prepared | None = None  # landed, registered, being read
        self.readers = FileReaders()
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
        first = self.queue[0].item if self.queue else None
        if first is not None and (first.source_system, first.format) != (
            item.source_system,
            item.format,
        ):
            self._advance()
        self._report(item, index, 0)
        self.queue.append(_Queued(index, item, options, workspace))
        self.size += item.path.stat().st_size
        if len(self.queue) >= _GROUP_FILES or self.size >= _GROUP_BYTES:
            self._advance()

    def flush(self) -> None:
        """Write every file added so far (before a file written alone, and at the end)."""
        try:
            self._advance()
            self._write_ahead()
        finally:
            self.readers.close()  # started again by the next group

    def _advance(self) -> None:
        """Land, register and start reading the queued files; write the group before.

        Once the reading processes run (and the run knows its batches), the files are
        landed and handed to them in a thread while the group before is written: the
        landing's fsyncs wait beside the writer instead of before it. Their batches are
        registered after that write, each file still landed durably before its batch
        row, and read with the receive time its batch then gets.
        """
        try:
            while self.queue:
                queue, self.queue, self.size = self.queue, [], 0
                if self.ahead is not None and self.known is not None and self.readers.started:
                    store, known = self.store(), self.known
                    with ThreadPoolExecutor(1, thread_name_prefix="medlake-land") as pool:
                        landing = pool.submit(self._land, queue, store, known)
                        try:
                            self._write_ahead()
                        finally:
                            landed = landing.result()
                    prepared, rest = self._register_landed(landed)
                elif self.known is not None:  # nothing else to do meanwhile: land here
                    landed = self._land(queue, self.store(), self.known, ahead=False)
                    self._write_ahead()  # before registering, as beside a thread
                    prepared, rest = self._register_landed(landed)
                else:
                    prepared, rest = self._prepare(queue)
                    self._write_ahead()
                self.ahead = prepared
                if rest:  # the same content again: written after the first is loaded
                    self._write_ahead()
                    self.queue = rest
        except BaseException:
            self.readers.close()
            raise

    def _land(
        self,
        queue: list[_Queued],
        store: LandingStore,
        known: dict[str, IngestBatch],
        *,
        ahead: bool = True,
    ) -> _Landed:
        """Land the files and have those whose batch is not loaded read (no engine call:
        the batches this run knows say which). A reader that takes the files' bytes
        (:func:`~medlake.ingest.file_reading.reads_contents`) gets each file as soon as
        it is read for landing, so reading runs beside the landing's fsyncs; others get
        their files once landed. In a thread (``ahead``) while the group before is
        written, or before anything else for a run's first group."""
        started = time.perf_counter()
        received_at = receive_time()
        format = queue[0].item.format
        reading = self.readers.stream(format, len(queue))
        batch_ids: list[str | None] = [None] * len(queue)
        contexts: dict[int, tuple[int, SourceContext]] = {}
        seen: set[str] = set()
        cut = len(queue)

        def take(position: int, sha256: str, path: Path, content: bytes | None) -> None:
            """File ``position`` handed to the readers, in order, unless loaded already."""
            nonlocal cut
            if position >= cut:
                return
            batch_id = batch_id_for(queue[position].item.source_system, sha256)
            if batch_id in seen:  # the same content again: for a later group
                cut = position
                return
            seen.add(batch_id)
            batch_ids[position] = batch_id
            batch = known.get(batch_id)
            if batch is not None and batch.status == LOADED:
                return
            context = self._context(
                queue[position], batch_id, path,
                batch.received_at if batch is not None else received_at,
            )  # fmt: skip
            contexts[position] = (len(contexts), context)
            reading.add([context], [content] if content is not None else None)

        early = reads_contents(format) and store.mirror is None
        primary = store.primary
        try:
            landed = land_files(
                [q.item.path for q in queue], store,
                (lambda i, sha256, content: take(i, sha256, landed_path(primary, sha256),
                                                 content)) if early else None,
            )  # fmt: skip
            for position, result in enumerate(landed[:cut]):
                if position in contexts or batch_ids[position] is not None:
                    continue  # taken while it was read
                if not isinstance(result, MedlakeError):
                    take(position, result.sha256, result.path, None)
            reading.complete()
        except BaseException:
            reading.cancel()
            raise
        if ahead:
            pause_point("landed_ahead")
        return _Landed(queue, landed, batch_ids, cut, received_at, contexts, reading,
                       time.perf_counter() - started)  # fmt: skip

    def _register_landed(self, landed: _Landed) -> tuple[_Prepared, list[_Queued]]:
        """Register the batches of files :meth:`_land` landed (one insert), as
        :meth:`_prepare` does; a file its thread did not start reading is read here."""
        started = time.perf_counter()
        entries: list[_Entry] = []
        unregistered: list[IngestBatch] = []
        queue = landed.queue
        for position in range(landed.cut):
            queued, result = queue[position], landed.landed[position]
            item, index, batch_id = queued.item, queued.index, landed.batch_ids[position]
            try:
                if isinstance(result, MedlakeError):
                    raise result
                assert batch_id is not None
                batch = self._registered(
                    item, index, result, batch_id, landed.received_at, unregistered
                )
                if batch is None:
                    continue
            except MedlakeError as error:
                self._failed(item, index, batch_id, error)
                continue
            read = landed.contexts.get(position)
            if read is not None and (read[1].received_at, read[1].path) == (
                batch.received_at,
                result.path,
            ):
                entries.append(_Entry(index, item, batch, read[1], landed.reading, read[0]))
            else:  # its batch changed since (not expected): read it in this process
                context = self._context(queued, batch_id, result.path, batch.received_at)
                entries.append(_Entry(index, item, batch, context,
                                      GroupReading(item.format, [context], None)))  # fmt: skip
        register_batches(self.engine, unregistered)  # landed durably above: one commit
        seconds = landed.seconds + time.perf_counter() - started
        return self._prepared(queue, entries, landed.reading, queue[landed.cut :], seconds)

    def _prepare(self, queue: list[_Queued]) -> tuple[_Prepared, list[_Queued]]:
        started = time.perf_counter()
        entries: list[_Entry] = []
        unregistered: list[IngestBatch] = []
        in_flight = {e.batch.batch_id for e in self.ahead.entries} if self.ahead else set()
        rest: list[_Queued] = []
        landed_files = land_files([q.item.path for q in queue], self.store())
        for position, (queued, landed) in enumerate(zip(queue, landed_files, strict=True)):
            item, index = queued.item, queued.index
            batch_id = None
            try:
                if isinstance(landed, MedlakeError):
                    raise landed
                batch_id = batch_id_of(item, landed, {})
                if batch_id in in_flight:
                    rest = queue[position:]
                    break
                in_flight.add(batch_id)
                batch = self._registered(item, index, landed, batch_id, None, unregistered)
                if batch is None:
                    continue
            except MedlakeError as error:
                self._failed(item, index, batch_id, error)
                continue
            context = self._context(queued, batch.batch_id, landed.path, batch.received_at)
            entries.append(_Entry(index, item, batch, context, None, len(entries)))
        # Landed durably above; the new batches' rows in one insert (one commit).
        register_batches(self.engine, unregistered)
        reading = self.readers.read(queue[0].item.format, [e.context for e in entries])
        for entry in entries:
            entry.reading = reading
        return self._prepared(queue, entries, reading, rest, time.perf_counter() - started)

    def _registered(
        self,
        item: IngestInput,
        index: int,
        landed: LandedFile,
        batch_id: str,
        received_at: dt.datetime | None,
        unregistered: list[IngestBatch],
    ) -> IngestBatch | None:
        """The file's batch, running; a new one added to ``unregistered`` (written in one
        insert by the caller). None when it is loaded already (reported unchanged). Passes
        the crash tests' pause points ``landed``, ``registered`` and ``running``."""
        pause_point("landed")
        if self.known is not None and batch_id not in self.known:
            batch = register_batch(
                self.engine, source_system=item.source_system, format=item.format,
                landed_sha256=landed.sha256, landed_path=landed.relative_path,
                original_name=item.original_name, size_bytes=landed.size,
                batch_id=batch_id, known_new=True, start=True, write=False,
                received_at=received_at,
            )  # fmt: skip
            self.known[batch_id] = batch
            unregistered.append(batch)
        else:
            batch = batch_for(self.engine, item, landed, batch_id, self.known)
        if batch.status == LOADED:
            self._report(item, index, 0, done=True)
            self.results[index] = FileResult(
                str(item.path), item.format, item.source_system, batch_id, "unchanged",
                0.0, WriteSummary(unchanged=batch.rows_loaded or 0), "already loaded",
            )  # fmt: skip
            pause_point("registered")
            return None
        if batch.status != RUNNING:
            batch = set_batch_status(self.engine, batch, RUNNING)
        pause_point("registered")
        pause_point("running")
        return batch

    def _failed(
        self, item: IngestInput, index: int, batch_id: str | None, error: MedlakeError
    ) -> None:
        logger.warning("%s: %s", item.path, error.message)
        self.results[index] = FileResult(
            str(item.path), item.format, item.source_system, batch_id, "failed",
            0.0, None, error.message, error,
        )  # fmt: skip

    def _context(
        self, queued: _Queued, batch_id: str, path: Path, received_at: dt.datetime
    ) -> SourceContext:
        item = queued.item
        return SourceContext(
            source_system=item.source_system,
            batch_id=batch_id,
            path=path,
            original_name=item.original_name,
            received_at=received_at,
            omics_dir=queued.workspace.omics_dir,
            options={**queued.options, "companion_names": {}},
        )

    def _prepared(
        self,
        queue: list[_Queued],
        entries: list[_Entry],
        reading: GroupReading,
        rest: list[_Queued],
        seconds: float,
    ) -> tuple[_Prepared, list[_Queued]]:
        """The prepared group, its landing time shared out over its files."""
        done = len(queue) - len(rest) - len(entries)
        for queued in queue[: len(queue) - len(rest)]:  # unchanged and failed files' share
            result = self.results[queued.index]
            if result is not None:
                self.results[queued.index] = dataclasses.replace(
                    result, seconds=seconds / (len(queue) - len(rest))
                )
        share = seconds * len(entries) / max(1, len(entries) + done)
        return _Prepared(entries, reading, share), rest

    def _write_ahead(self) -> None:
        """Write the prepared group: its files' chunks as they come from the readers."""
        prepared, self.ahead = self.ahead, None
        if prepared is None:
            return
        share = prepared.seconds / max(1, len(prepared.entries))
        group: list[_Pending] = []
        try:
            for entry in prepared.entries:
                started = time.perf_counter()
                try:
                    assert entry.reading is not None
                    chunks = entry.reading.result(entry.position)
                except Exception as exc:
                    set_batch_status(self.engine, entry.batch, FAILED, message=str(exc))
                    if not isinstance(exc, MedlakeError):
                        raise
                    logger.warning("%s: %s", entry.item.path, exc.message)
                    self.results[entry.index] = FileResult(
                        str(entry.item.path), entry.item.format, entry.item.source_system,
                        entry.batch.batch_id, "failed", share + time.perf_counter() - started,
                        None, exc.message, exc,
                    )  # fmt: skip
                    continue
                pending = _Pending(entry.index, entry.item, entry.batch, chunks,
                                   share + time.perf_counter() - started)  # fmt: skip
                if not groupable(chunks):
                    self._write_group(group)
                    group = []
                    self._write_one(pending)
                    continue
                group.append(pending)
            self._write_group(group)
        finally:
            prepared.reading.cancel()

    def _write_group(self, pending: list[_Pending]) -> None:
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

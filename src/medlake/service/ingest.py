"""``medlake ingest``: land files, record a batch for each, read and write them into the lake.

:func:`ingest_paths` is the one use case the CLI, the MLLP listener and the demo call.
For each input (see :mod:`medlake.ingest.inputs` for discovery and order) it lands the
file and its companions unchanged, finds or registers the file's batch and — unless the
batch is already loaded, which costs one hash and one lookup — has the format's reader
parse it and the lake writer apply it in one transaction. A file that fails (not of its
format, a broken mapping) is reported and the others go on; the report says which.

After each loaded batch the ``after_batch`` hooks run with the engine, the batch and
what it did: that is where data-quality checks and incremental EMPI linkage plug in.

The report types live in :mod:`medlake.service.ingest_report`, the grouped writing of
small files in :mod:`medlake.service.ingest_groups` and the quarantine commands in
:mod:`medlake.service.ingest_quarantine`; their public names are re-exported here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine, SupportsTransactions
from medlake.engine.capabilities import SupportsCheckpoint
from medlake.errors import MedlakeError
from medlake.ingest.batches import (
    BATCH_TABLE,
    LOADED,
    RUNNING,
    IngestBatch,
    LandedBatches,
    batches_of,
    find_batch,
    landed_batches,
    receive_time,
)
from medlake.ingest.concepts import ConceptMapper
from medlake.ingest.formats import reader_for
from medlake.ingest.inputs import IngestInput, plan_inputs
from medlake.ingest.landing import LandedFile, land_bytes, land_file
from medlake.ingest.pause_points import pause_point
from medlake.ingest.prefetch import ReadingProcesses, prefetch, prefetch_in_process
from medlake.ingest.run_record import RecordedInput, RunRecord
from medlake.ingest.staging import SourceContext
from medlake.ingest.writer import WriteSummary, write_batch
from medlake.log import get_logger
from medlake.service.ingest_groups import BatchGroup, BatchHook, batch_for, batch_id_of, small_input
from medlake.service.ingest_quarantine import (
    QUARANTINE_LIST_COLUMNS,
    quarantine_entries,
    quarantine_entry,
    retry_quarantine,
)
from medlake.service.ingest_report import FileResult, IngestProgress, IngestReport, SourceSummary
from medlake.service.mirror import audit_mirror_events, landing_store, refuse_if_frozen
from medlake.service.policy import authorized
from medlake.service.workspace import open_lake

__all__ = [
    "QUARANTINE_LIST_COLUMNS",
    "BatchHook",
    "FileResult",
    "IngestProgress",
    "IngestReport",
    "SourceSummary",
    "ingest_paths",
    "quarantine_entries",
    "quarantine_entry",
    "retry_quarantine",
]

logger = get_logger(__name__)

_LIST_BATCHES_FROM = 8  # inputs in a run from which batches are listed, not looked up
# Large files of Python-parsed formats are read in a child process while this one writes
# (medlake.ingest.prefetch: a thread shares the GIL with the writer's Python).
_READ_IN_PROCESS = frozenset({"fhir", "hl7v2", "csv", "xlsx"})
_READ_IN_PROCESS_FROM = 16 << 20
# A large file whose reader can plan its chunks (FHIR NDJSON) is parsed by this many child
# processes at once (on two cores the Python reader is the longer side of the pipeline).
_READERS = 2
# Each chunk is parsed as this many pieces, two per reading process: a chunk's parsing is
# shared (the first chunk comes sooner) and a file of one chunk is parsed by all of them,
# even one of fewer than 25,000 resources (1M FHIR: Patient, DocumentReference), which is
# then also read ahead of its turn.
_PIECES = 2 * _READERS
_DEPTH = 4  # pieces each reading process parses ahead (two chunks' worth, as before)
_WAL_BYTES = 256 << 20  # write-ahead log a commit may leave before it checkpoints
_LAND_AHEAD = 4  # inputs written alone landed ahead of the one being written
# Files of these formats from a 16th of that size are planned too, so they can be read
# ahead by reading processes like large ones: read when their turn came (in a thread of
# this process), a small file between two large ones left a core idle through the large
# one's last chunk and commit (1M FHIR: Procedure.ndjson, 4 MB, between Observation and
# Specimen: about 0.8 s).
_READ_AHEAD_SMALL = frozenset({"fhir"})


@authorized(Permission.INGEST)
def ingest_paths(
    workspace_dir: Path | Workspace | None,
    paths: Sequence[Path],
    *,
    format: str | None = None,
    source_system: str | None = None,
    options: Mapping[str, object] | None = None,
    progress: Callable[[IngestProgress], None] | None = None,
    after_batch: Sequence[BatchHook] = (),
    person_order: bool = True,
    link_later: Callable[[], object] | None = None,
) -> IngestReport:
    """Land and ingest ``paths`` (files or folders) into the workspace's lake.

    ``options`` go to the readers (``{"mapping": Path}`` for CSV). Per-file errors are
    in the report (``report.failed``); nothing loaded by the other files is undone.
    ``person_order=False`` leaves the person-order rewrite (``[layout] after_ingest``)
    to the server's maintenance: for ingests a user waits on in a request.
    ``link_later``, when given, is called instead of the EMPI link after ingest
    (``[empi] link_after_ingest``) when one is due: live feeds queue one background link
    job for many ingests (:mod:`medlake.service.live_link`).
    """
    started = time.perf_counter()
    workspace = as_workspace(workspace_dir)
    refuse_if_frozen(workspace)
    options = dict(options or {})
    plan = plan_inputs(paths, format=format, source_system=source_system, options=options)
    report = IngestReport(ignored=plan.ignored)
    with open_lake(workspace) as engine:
        concepts = ConceptMapper(engine)
        # Many inputs: list the sources' batches once. Few (the listener's bundles): look
        # each up, rather than read a long batch history every time.
        systems = sorted({item.source_system for item in plan.inputs})
        known = batches_of(engine, systems) if len(plan.inputs) > _LIST_BATCHES_FROM else None
        # Groups need a transaction, and hooks (EMPI linkage) must run between batches.
        grouping = isinstance(engine, SupportsTransactions) and not after_batch
        group = BatchGroup(engine, concepts, known, after_batch, progress, len(plan.inputs),
                           lambda: landing_store(workspace))  # fmt: skip
        alone = [not (grouping and small_input(item)) for item in plan.inputs]
        before = landed_batches(engine)
        # A person-order rewrite after the run checkpoints itself: no checkpoint before it.
        layout_after = person_order and workspace.settings.layout.after_ingest
        with (
            _bulk_commits(engine, checkpoint=not layout_after),
            _Ahead(engine, workspace, plan.inputs, alone, options, known, before) as ahead,
        ):
            for index, item in enumerate(plan.inputs):
                if not alone[index]:
                    group.add(workspace, item, options, index)
                    continue
                group.flush()
                group.results[index] = _ingest_one(
                    engine,
                    workspace,
                    item,
                    options,
                    (index, len(plan.inputs)),
                    progress,
                    after_batch,
                    concepts,
                    known,
                    ahead,
                )
            group.flush()
        report.files.extend(r for r in group.results if r is not None)
        audit_mirror_events(engine, workspace)  # a landing root that failed during the run
        _land_run_record(engine, workspace, plan.inputs, group.results, options,
                         format, source_system)  # fmt: skip
        if workspace.settings.empi.link_after_ingest and any(
            r.summary is not None and (r.summary.loaded or r.summary.updated)
            for r in report.files
        ):
            # Once per run, not per batch: an incremental link reads every record.
            from medlake.service.empi import link_engine

            try:
                if link_later is not None:
                    link_later()  # a background job links (and many ingests at once)
                else:
                    report.empi = link_engine(engine, workspace)
            except MedlakeError as error:  # the batches are loaded whatever linking finds
                logger.warning("EMPI link after ingest failed: %s", error)
        _check_quality(engine, workspace, report)
        rewritten = False
        if person_order and any(
            r.summary is not None and (r.summary.loaded or r.summary.updated)
            for r in report.files
        ):
            # Appended rows spread persons over row groups: keep patient 360's lookups cheap.
            from medlake.service.lake_layout import after_ingest

            layout = after_ingest(engine, workspace)
            rewritten = layout is not None and bool(layout.reordered)
        if layout_after and not rewritten:
            _checkpoint(engine)  # the run's one checkpoint, when no rewrite made it
    report.seconds = time.perf_counter() - started  # the lake closed too
    return report


@contextlib.contextmanager
def _bulk_commits(engine: Engine, *, checkpoint: bool = True) -> Iterator[None]:
    """While the batches are written: a commit checkpoints only past ``_WAL_BYTES`` of
    log (DuckDB's default 16 MiB had every large batch's commit write the tables' last,
    partly filled row groups again; 1M FHIR resources: about 0.5 CPU-s less, peak RSS
    about 100 MB more). One checkpoint after the last batch, so the person-order check
    reads zone maps after DuckDB has vacuumed what it vacuums of the run's deleted and
    replaced rows, as when large commits checkpointed (the rows it counts as stored
    still depend on when checkpoints ran: 1M FHIR, observation_period 49,301 stored
    rows here against 24,271 with per-commit checkpoints, none out of order in either).

    Without ``checkpoint`` (a person-order pass follows), that checkpoint is left to the
    pass: a rewrite's commit checkpoints, after it the old rows are deleted and need not
    be written from the log first (1M FHIR, one run: checkpoint and source_record
    rewrite 1.7 -> 1.4 s); the pass then counts deleted rows still stored, and the
    caller checkpoints when it rewrote nothing."""
    if not isinstance(engine, SupportsCheckpoint):
        yield
        return
    with engine.checkpoints_deferred(_WAL_BYTES):
        yield
    if checkpoint:
        _checkpoint(engine)


def _checkpoint(engine: Engine) -> None:
    if isinstance(engine, SupportsCheckpoint) and not engine.in_transaction:
        with contextlib.suppress(MedlakeError):  # refused while another transaction is open
            engine.checkpoint()


def _check_quality(engine: Engine, workspace: Workspace, report: IngestReport) -> None:
    # Once per run, after linking ([quality] run_after_ingest): the checks are whole-table
    # aggregates, so one run after the last batch sees all the batches loaded.
    from medlake.service.quality import run_after_ingest

    loaded = [r for r in report.files if r.status == "loaded" and r.summary is not None]
    tables = {table for r in loaded if r.summary for table in r.summary.rows_by_table}
    try:
        run_after_ingest(engine, workspace, [r.batch_id for r in loaded if r.batch_id], tables)
    except MedlakeError as error:  # the batches are loaded whatever the checks find
        logger.warning("quality checks after ingest failed: %s", error)


def _land_run_record(
    engine: Engine,
    workspace: Workspace,
    inputs: Sequence[IngestInput],
    results: Sequence[FileResult | None],
    options: dict[str, object],
    format: str | None,
    source_system: str | None,
) -> None:
    """Land what this run read and how (:mod:`medlake.ingest.run_record`), for rebuilds."""
    store = landing_store(workspace)
    loaded = [(i, r) for i, r in zip(inputs, results, strict=True)
              if r is not None and r.status != "failed" and r.batch_id]  # fmt: skip
    if not loaded:
        return
    try:
        batches = batches_of(engine, sorted({i.source_system for i, _ in loaded}))
        recorded = []
        for item, result in loaded:
            batch = batches.get(result.batch_id)  # type: ignore[arg-type]
            if batch is None:
                continue
            companions = {
                role: {"name": path.name, "sha256": land_file(path, store).sha256}
                for role, path in item.companions.items()
            }
            recorded.append(
                RecordedInput(
                    original_name=item.original_name,
                    sha256=batch.landed_sha256,
                    source_system=batch.source_system,
                    format=batch.format,
                    batch_id=batch.batch_id,
                    received_at=batch.received_at.isoformat(),
                    size_bytes=batch.size_bytes,
                    companions=companions,
                )
            )
        run_options: dict[str, object] = {}
        for key, value in options.items():
            if key == "mapping" and value is not None:
                run_options[key] = {"landed_sha256": land_file(Path(str(value)), store).sha256}
            elif isinstance(value, str | int | float | bool) or value is None:
                run_options[key] = value
        started = min((r.received_at for r in recorded), default="")
        record = RunRecord(started, format, source_system, run_options, recorded,
                           batches_after=engine.count(BATCH_TABLE))  # fmt: skip
        land_bytes(record.to_bytes(), store)
    except (MedlakeError, OSError) as error:
        # The batches are loaded; only a later rebuild from landing would miss this run.
        logger.warning("could not land the run record: %s", error)


def _ingest_one(
    engine: Engine,
    workspace: Workspace,
    item: IngestInput,
    options: dict[str, object],
    position: tuple[int, int],
    progress: Callable[[IngestProgress], None] | None,
    after_batch: Sequence[BatchHook],
    concepts: ConceptMapper,
    known: dict[str, IngestBatch] | None,
    ahead: _Ahead,
) -> FileResult:
    started = time.perf_counter()
    index, total = position
    size = item.path.stat().st_size

    def report(records: int, done: bool = False) -> None:
        if progress is not None:
            progress(IngestProgress(item.original_name, index, total, records, size, done))

    report(0)
    batch_id = None
    try:
        landed, companions, plan = ahead.landed(index)
        pause_point("landed")
        batch_id = batch_id_of(item, landed, companions)
        read = ahead.reading(index, batch_id)
        batch = batch_for(engine, item, landed, batch_id, known,
                          read.context.received_at if read else None)  # fmt: skip
        pause_point("registered")
        if read is not None and (batch.status == LOADED
                                 or read.context.received_at != batch.received_at):  # fmt: skip
            read.close()
            read = None
        if batch.status == LOADED:
            summary = WriteSummary(unchanged=batch.rows_loaded or 0)
            report(0, done=True)
            return FileResult(
                str(item.path), item.format, item.source_system, batch_id, "unchanged",
                time.perf_counter() - started, summary, "already loaded",
            )  # fmt: skip
        context = _context(workspace, item, options, batch, landed, companions)
        reader = reader_for(item.format)  # an unknown or unavailable format fails here, named
        if read is not None:  # reading processes started ahead (a small file's too)
            chunks = iter(read)
        elif item.format in _READ_IN_PROCESS and size >= _READ_IN_PROCESS_FROM:
            if plan is not None and len(plan) > 1:
                chunks = iter(ahead.read(index, context, plan))
            else:
                chunks = prefetch_in_process(item.format, context)
                ahead.read_next(index + 1)
        else:
            chunks = prefetch(reader.read(context))
            # Nothing calls back before this file's last chunk: the next file's reading
            # processes start now, or its first chunk would come only after this commit.
            ahead.read_next(index + 1)
        summary = write_batch(
            engine, batch, chunks, on_chunk=lambda s: report(s.records_read), concepts=concepts
        )
        if known is not None:
            known[batch_id] = dataclasses.replace(
                batch,
                status=LOADED,
                rows_loaded=summary.loaded + summary.updated + summary.omics_samples,
            )
    except MedlakeError as error:
        ahead.stop_reading(index)
        logger.warning("%s: %s", item.path, error.message)
        return FileResult(
            str(item.path), item.format, item.source_system, batch_id, "failed",
            time.perf_counter() - started, None, error.message, error,
        )  # fmt: skip
    message = summary.message()
    for hook in after_batch:
        # The batch is loaded and committed whatever a check after it finds.
        try:
            hook(engine, batch, summary)
        except MedlakeError as error:
            logger.warning("%s: after-batch hook failed: %s", item.path, error.message)
            message += f"; after-batch check failed: {error.message}"
    report(summary.records_read, done=True)
    return FileResult(
        str(item.path), item.format, item.source_system, batch_id, "loaded",
        time.perf_counter() - started, summary, message,
    )  # fmt: skip


# ---------------------------------------------------------------------- landing ahead
#
# Landing a large file is mostly waiting for the disk (fsync of the copy) and hashing
# (hashlib releases the GIL); planning its chunks is NumPy over a memory map. Both are
# done for the next files written alone in a thread while this one is read and written,
# instead of with both cores idle between two files. Files are still landed in input
# order, each before its batch is registered; only one landing runs at a time, and never
# beside the grouped small files' landing (those are not landed ahead).


class _Landed(NamedTuple):
    landed: LandedFile
    companions: dict[str, LandedFile]
    plan: list[tuple[int, int, int]] | None  # chunks for several reading processes


def _land_input(workspace: Workspace, item: IngestInput, before: LandedBatches) -> _Landed:
    store = landing_store(workspace)
    try:
        likely_new = item.path.stat().st_size not in before.sizes
    except OSError:  # land_file names the file in its error
        likely_new = False
    landed = land_file(item.path, store, likely_new=likely_new)
    companions = {role: land_file(p, store) for role, p in item.companions.items()}
    plan = None
    if batch_id_of(item, landed, companions) in before.loaded:
        return _Landed(landed, companions, None)  # nothing to read (an unchanged re-ingest)
    if _READERS > 1 and item.format in _READ_IN_PROCESS and landed.size >= _planned_from(item):
        try:
            reader = reader_for(item.format)
        except MedlakeError:  # reported when the file is read, after its batch is registered
            return _Landed(landed, companions, None)
        if hasattr(reader, "chunk_plan"):
            plan = reader.chunk_plan(landed.path, _PIECES)
    return _Landed(landed, companions, plan)


def _planned_from(item: IngestInput) -> int:
    """Size from which a file of ``item``'s format gets a chunk plan (can be read ahead)."""
    small = item.format in _READ_AHEAD_SMALL
    return _READ_IN_PROCESS_FROM >> 4 if small else _READ_IN_PROCESS_FROM


def _context(workspace: Workspace, item: IngestInput, options: dict[str, object],
             batch: IngestBatch, landed: LandedFile,
             companions: dict[str, LandedFile]) -> SourceContext:  # fmt: skip
    return SourceContext(
        source_system=item.source_system,
        batch_id=batch.batch_id,
        path=landed.path,
        original_name=item.original_name,
        received_at=batch.received_at,
        companions={role: c.path for role, c in companions.items()},
        omics_dir=workspace.omics_dir,
        options={
            **options,
            "companion_names": {role: p.name for role, p in item.companions.items()},
        },
    )


class _Ahead:
    """Lands the inputs after ``i`` (up to ``_LAND_AHEAD``, while written alone) in a
    thread once input ``i`` is taken, and starts input ``i + 1``'s reading processes when
    the last chunk of input ``i`` has been parsed.

    Reading ahead: a large NDJSON file read by several processes (:class:`ReadingProcesses`)
    has the next such file's children started while its own last chunk, observation
    periods and commit are written, so the cores do not wait for the next file's first
    chunk. The next file's batch is looked up then (inside this file's transaction, a
    read of its own row); a new batch is given its receive time then and registered
    with it when its turn comes. If the batch turns out loaded, or received at another
    time, the children are ended and the file is read as usual.
    """

    def __init__(self, engine: Engine, workspace: Workspace, inputs: Sequence[IngestInput],
                 alone: Sequence[bool], options: dict[str, object],
                 known: dict[str, IngestBatch] | None,
                 before: LandedBatches) -> None:  # fmt: skip
        self.engine, self.workspace, self.inputs, self.alone = engine, workspace, inputs, alone
        self.options, self.known, self.before = options, known, before
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="medlake-land-ahead")
        self.futures: dict[int, Future[_Landed]] = {}
        self.readers: dict[int, tuple[str, ReadingProcesses]] = {}  # index: (batch id, ...)

    def __enter__(self) -> _Ahead:
        return self

    def __exit__(self, *exc: object) -> None:
        for future in self.futures.values():
            future.cancel()
        for _, readers in self.readers.values():
            readers.close()
        self.pool.shutdown(wait=True)

    def _submit(self, index: int) -> Future[_Landed]:
        future = self.futures.get(index)
        if future is None:
            future = self.pool.submit(_land_input, self.workspace, self.inputs[index], self.before)
            self.futures[index] = future
        return future

    def landed(self, index: int) -> _Landed:
        """Input ``index``'s landing (done now if not yet); the next ones' are started."""
        future = self._submit(index)
        # Up to _LAND_AHEAD inputs written alone that follow (in order, one landing at a
        # time): a large file takes seconds to copy and fsync, and landed one input ahead
        # it was often not ready when the file before it was parsed, so its reading
        # processes were not started ahead (1M FHIR: Observation.ndjson's landing ran
        # past the end of MedicationRequest's batch, with the readers idle).
        for following in range(index + 1, min(index + 1 + _LAND_AHEAD, len(self.inputs))):
            if not self.alone[following]:
                break  # grouped small files are landed by their group, never beside
            self._submit(following)
        try:
            return future.result()
        finally:
            self.futures.pop(index, None)

    def read(self, index: int, context: SourceContext,
             plan: list[tuple[int, int, int]]) -> ReadingProcesses:  # fmt: skip
        """Reading processes for input ``index``; the next input's start before its end."""
        return ReadingProcesses(self.inputs[index].format, context, plan, _READERS, _DEPTH,
                                before_last=lambda: self._read_next(index + 1),
                                group=_PIECES)  # fmt: skip

    def reading(self, index: int, batch_id: str) -> ReadingProcesses | None:
        """The processes started ahead for input ``index`` (if for this batch)."""
        started = self.readers.pop(index, None)
        if started is None:
            return None
        if started[0] != batch_id:
            started[1].close()
            return None
        return started[1]

    def stop_reading(self, index: int) -> None:
        started = self.readers.pop(index, None)
        if started is not None:
            started[1].close()

    def read_next(self, index: int) -> None:
        """Start input ``index``'s reading processes now, if it is landed and read so."""
        self._read_next(index)

    def _read_next(self, index: int) -> None:
        if index >= len(self.inputs) or index in self.readers or not self.alone[index]:
            return
        future = self.futures.get(index)
        if future is None or not future.done() or future.exception() is not None:
            return  # not landed yet: it is read when its turn comes
        landed, companions, plan = future.result()
        item = self.inputs[index]
        if plan is None or landed.size < _planned_from(item):
            return
        batch_id = batch_id_of(item, landed, companions)
        if self.known is not None:
            batch = self.known.get(batch_id)
        else:
            batch = find_batch(self.engine, batch_id)
        if batch is not None and batch.status == LOADED:
            return
        if batch is None:
            batch = IngestBatch(batch_id, item.source_system, item.format, landed.sha256,
                                landed.relative_path, item.original_name, landed.size,
                                receive_time(), RUNNING)  # fmt: skip
        context = _context(self.workspace, item, self.options, batch, landed, companions)
        self.readers[index] = (batch_id, self.read(index, context, plan))
        if len(plan) <= _PIECES:
            # A file of one chunk is parsed in a moment: the next file is started too
            # (after this one, so their receive times keep the input order), or the cores
            # would wait for its chunks through this file's write and the commit before.
            self._read_next(index + 1)

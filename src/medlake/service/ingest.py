"""``medlake ingest``: land files, record a batch for each, read and write them into the lake.

:func:`ingest_paths` is the one use case the CLI, the MLLP listener and the demo call.
For each input (see :mod:`medlake.ingest.inputs` for discovery and order) it lands the
file and its companions unchanged, finds or registers the file's batch and — unless the
batch is already loaded, which costs one hash and one lookup — has the format's reader
parse it and the lake writer apply it in one transaction. A file that fails (not of its
format, a broken mapping) is reported and the others go on; the report says which.

After each loaded batch the ``after_batch`` hooks run with the engine, the batch and
what it did: that is where data-quality checks and incremental EMPI linkage plug in.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from medlake.config import Workspace, as_workspace
from medlake.engine import Engine, SupportsTransactions
from medlake.errors import MedlakeError, UsageError
from medlake.ingest.batches import (
    BATCH_TABLE,
    FAILED,
    LOADED,
    RUNNING,
    IngestBatch,
    batch_id_for,
    batches_of,
    find_batch,
    register_batch,
    set_batch_status,
)
from medlake.ingest.concepts import ConceptMapper
from medlake.ingest.formats import reader_for
from medlake.ingest.group_writer import groupable, write_batch_group
from medlake.ingest.inputs import IngestInput, plan_inputs
from medlake.ingest.landing import LandedFile, land_bytes, land_file
from medlake.ingest.pause_points import pause_point
from medlake.ingest.prefetch import prefetch
from medlake.ingest.quarantine import QUARANTINE_TABLE
from medlake.ingest.run_record import RecordedInput, RunRecord
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.ingest.writer import WriteSummary, write_batch
from medlake.log import get_logger
from medlake.service.mirror import audit_mirror_events, landing_store, refuse_if_frozen
from medlake.service.workspace import open_lake

logger = get_logger(__name__)

BatchHook = Callable[[Engine, IngestBatch, WriteSummary], None]

_LIST_BATCHES_FROM = 8  # inputs in a run from which batches are listed, not looked up
# Small files are written in groups, one transaction each (medlake.ingest.group_writer).
_GROUP_FILE_BYTES = 4 << 20  # a file this size or larger is written on its own
_GROUP_BYTES = 50 << 20
_GROUP_FILES = 200


@dataclass(frozen=True)
class IngestProgress:
    """Where a running ingest is: input ``index`` of ``total``, records read so far."""

    name: str
    index: int
    total: int
    records_read: int
    size_bytes: int
    done: bool = False


@dataclass
class FileResult:
    """What happened to one input."""

    path: str
    format: str
    source_system: str
    batch_id: str | None
    status: str  # loaded, unchanged (already loaded), failed
    seconds: float
    summary: WriteSummary | None = None
    message: str | None = None
    error: MedlakeError | None = None


@dataclass
class SourceSummary:
    """One row of the ingest table: a source system's inputs added up."""

    source_system: str
    files: int = 0
    read: int = 0
    loaded: int = 0
    updated: int = 0
    unchanged: int = 0
    quarantined: int = 0
    unmapped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def records_per_second(self) -> float:
        return self.read / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, object]:
        return {
            "source_system": self.source_system,
            "files": self.files,
            "read": self.read,
            "loaded": self.loaded,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "quarantined": self.quarantined,
            "unmapped": self.unmapped,
            "failed": self.failed,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.records_per_second, 1),
        }


@dataclass
class IngestReport:
    """Per-source totals, per-file results, ignored files, unmapped codes, merges."""

    files: list[FileResult] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    empi: object | None = None  # the EMPI link run after ingest ([empi] link_after_ingest)

    COLUMNS = (
        "source", "files", "read", "loaded", "updated", "unchanged", "quarantined",
        "unmapped", "seconds", "records/s",
    )  # fmt: skip

    @property
    def sources(self) -> list[SourceSummary]:
        totals: dict[str, SourceSummary] = {}
        for result in self.files:
            total = totals.setdefault(result.source_system, SourceSummary(result.source_system))
            total.files += 1
            total.seconds += result.seconds
            summary = result.summary
            if result.status == "failed":
                total.failed += 1
            if summary is None:
                continue
            total.read += summary.records_read
            total.loaded += summary.loaded + summary.omics_samples
            total.updated += summary.updated
            total.unchanged += summary.unchanged + summary.stale
            total.quarantined += summary.quarantined
            total.unmapped += sum(summary.unmapped.values())
        return list(totals.values())

    @property
    def failed(self) -> list[FileResult]:
        return [result for result in self.files if result.status == "failed"]

    @property
    def unmapped(self) -> Counter[tuple[str, str]]:
        counts: Counter[tuple[str, str]] = Counter()
        for result in self.files:
            if result.summary is not None:
                counts.update(result.summary.unmapped)
        return counts

    def as_rows(self) -> list[list[object]]:
        return [
            [
                s.source_system,
                s.files,
                s.read,
                s.loaded,
                s.updated,
                s.unchanged,
                s.quarantined,
                s.unmapped,
                round(s.seconds, 2),
                round(s.records_per_second),
            ]
            for s in self.sources
        ]

    def as_dict(self) -> dict[str, object]:
        return {
            "sources": [source.as_dict() for source in self.sources],
            "files": [
                {
                    "path": r.path,
                    "format": r.format,
                    "source_system": r.source_system,
                    "batch_id": r.batch_id,
                    "status": r.status,
                    "seconds": round(r.seconds, 3),
                    "message": r.message,
                }
                for r in self.files
            ],
            "ignored": self.ignored,
            "unmapped": [
                {"table": table, "vocabulary": vocabulary, "rows": rows}
                for (table, vocabulary), rows in sorted(self.unmapped.items())
            ],
            "merges": [
                {
                    "source_system": m.source_system,
                    "surviving_id": m.surviving_id,
                    "merged_id": m.merged_id,
                }
                for r in self.files
                if r.summary is not None
                for m in r.summary.merges
            ],
        }


def ingest_paths(
    workspace_dir: Path | Workspace | None,
    paths: Sequence[Path],
    *,
    format: str | None = None,
    source_system: str | None = None,
    options: Mapping[str, object] | None = None,
    progress: Callable[[IngestProgress], None] | None = None,
    after_batch: Sequence[BatchHook] = (),
) -> IngestReport:
    """Land and ingest ``paths`` (files or folders) into the workspace's lake.

    ``options`` go to the readers (``{"mapping": Path}`` for CSV). Per-file errors are
    in the report (``report.failed``); nothing loaded by the other files is undone.
    """
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
        group = _Group(engine, concepts, known, after_batch, progress, len(plan.inputs))
        for index, item in enumerate(plan.inputs):
            if grouping and _small(item):
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
                report.empi = link_engine(engine, workspace)
            except MedlakeError as error:  # the batches are loaded whatever linking finds
                logger.warning("EMPI link after ingest failed: %s", error)
        _check_quality(engine, workspace, report)
    return report


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


def _small(item: IngestInput) -> bool:
    return not item.companions and item.path.stat().st_size < _GROUP_FILE_BYTES


@dataclass
class _Pending:
    index: int
    item: IngestInput
    batch: IngestBatch
    chunks: list[ParsedChunk]
    seconds: float


class _Group:
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
    ) -> None:
        self.engine, self.concepts, self.known = engine, concepts, known
        self.after_batch, self.progress, self.total = after_batch, progress, total
        self.pending: list[_Pending] = []
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
            landed = land_file(item.path, landing_store(workspace))
            pause_point("landed")
            batch_id = _batch_id(item, landed, {})
            if any(p.batch.batch_id == batch_id for p in self.pending):
                self.flush()  # the same content twice: the second finds it loaded
            batch = _batch_for(self.engine, item, landed, batch_id, self.known)
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
            self._write_one(pending)
            return
        self.pending.append(pending)
        self.size += item.path.stat().st_size
        if len(self.pending) >= _GROUP_FILES or self.size >= _GROUP_BYTES:
            self.flush()

    def flush(self) -> None:
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
        store = landing_store(workspace)
        landed = land_file(item.path, store)
        companions = {role: land_file(p, store) for role, p in item.companions.items()}
        pause_point("landed")
        batch_id = _batch_id(item, landed, companions)
        batch = _batch_for(engine, item, landed, batch_id, known)
        pause_point("registered")
        if batch.status == LOADED:
            summary = WriteSummary(unchanged=batch.rows_loaded or 0)
            report(0, done=True)
            return FileResult(
                str(item.path), item.format, item.source_system, batch_id, "unchanged",
                time.perf_counter() - started, summary, "already loaded",
            )  # fmt: skip
        context = SourceContext(
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
        chunks = prefetch(reader_for(item.format).read(context))
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


def _batch_for(
    engine: Engine,
    item: IngestInput,
    landed: LandedFile,
    batch_id: str,
    known: dict[str, IngestBatch] | None,
) -> IngestBatch:
    """The batch of a landed input: the one this run already knows, else registered now."""
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
    )
    if known is not None:
        known[batch_id] = batch  # the same content twice in one run is one batch
    return batch


def _batch_id(item: IngestInput, landed: LandedFile, companions: dict[str, LandedFile]) -> str:
    """The file's batch id; companions count, so a new manifest makes a new batch."""
    parts = [f"{role}={companions[role].sha256}" for role in sorted(companions)]
    return batch_id_for(item.source_system, landed.sha256, *parts)


# ---------------------------------------------------------------------- quarantine

QUARANTINE_LIST_COLUMNS = (
    "quarantine_id",
    "batch_id",
    "source_system",
    "location",
    "field",
    "reason",
)


def quarantine_entries(
    workspace_dir: Path | Workspace | None,
    *,
    batch_id: str | None = None,
    include_resolved: bool = False,
) -> list[dict[str, object]]:
    """Quarantine entries (open ones unless ``include_resolved``), oldest first."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        table = engine.table(QUARANTINE_TABLE)
        if batch_id is not None:
            table = table.filter(table.batch_id == batch_id)
        if not include_resolved:
            table = table.filter(table.resolved_at.isnull())
        ordered = table.order_by(["quarantined_at", "batch_id", "location", "quarantine_id"])
        return engine.execute(ordered).to_pylist()


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
        raise UsageError(f"quarantine id prefix {quarantine_id!r} is ambiguous; give more of it")
    return rows.to_pylist()[0]


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


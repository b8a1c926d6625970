"""The lake writer: applies a batch's parsed chunks to the lake, atomically and idempotently.

For each chunk, in order: patient identities (``source_patient``, ``pii_person`` with
every version, ``person`` and ``death`` from the newest), then the staged CDM tables,
then the merges the source declared, the omics samples and the quarantine. Each staged
table goes through the same steps (:mod:`medlake.ingest.versions` decides what changes,
:mod:`medlake.ingest.cdm_rows` derives ids and concepts and sets incomplete rows aside),
so every reader gets the same guarantees.

All of a batch's writes, and its status ``loaded``, are one ``engine.transaction()`` on
engines that have transactions (DuckDB): a process killed at any point leaves the lake
as it was before the batch, and running the batch again ends in the state an
uninterrupted run reaches. Engines without transactions (Spark) get the same writes
without the atomicity; re-running a batch still converges because every write is keyed.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.clock import utc_now
from medlake.engine import Engine
from medlake.ingest.batches import FAILED, LOADED, RUNNING, IngestBatch, set_batch_status
from medlake.ingest.cdm_rows import (
    cdm_columns,
    derive_columns,
    kept,
    primary_key,
    set_column,
    split_incomplete,
    with_row_ids,
)
from medlake.ingest.concepts import ConceptMapper
from medlake.ingest.identities import (
    MERGE_RECORD_TABLE,
    MergeEvent,
    PersonResolver,
    repoint_persons,
    resolve_moves,
)
from medlake.ingest.ids import stable_ids
from medlake.ingest.lake_tables import atomically, lake_table
from medlake.ingest.observation_period import event_spans, update_observation_periods
from medlake.ingest.omics_registry import upsert_omics_samples
from medlake.ingest.patient_rows import (
    conform_patients,
    death_rows,
    person_rows,
    write_identifiers,
)
from medlake.ingest.pause_points import pause_point
from medlake.ingest.quarantine import payload_text, resolve_quarantine, store_quarantine
from medlake.ingest.staging import (
    RECORD_HASH,
    RETRACTED,
    SOURCE_PATIENT_ID,
    SOURCE_RECORD_ID,
    SOURCE_VERSION,
    ParsedChunk,
    PatientMerge,
    QuarantineEntry,
    record_hash,
)
from medlake.ingest.versions import (
    ACTION,
    INSERT,
    ROW_ID,
    SOURCE_RECORD_TABLE,
    CurrentLookups,
    current_records,
    plan_versions,
    record_versions,
    string_chunks,
)
from medlake.log import get_logger

logger = get_logger(__name__)

# A batch's rows of a table with persons are held (up to this many bytes of Arrow data
# for all tables) and loaded in person order when the batch ends, or before anything
# reads or replaces them: a table that one large batch fills (1M FHIR: measurement from
# Observation.ndjson) is then stored in person order, and the person-order rewrite after
# the run (reading, sorting and compressing the rows a second time) has nothing to do.
# Past the limit the rows held are loaded as they are, in person order each time.
_HOLD_BYTES = 384 << 20


@dataclass
class WriteSummary:
    """What writing one batch did, for the ingest report and ``ingest_batch``."""

    records_read: int = 0
    loaded: int = 0  # CDM rows inserted
    updated: int = 0  # CDM rows replaced by a newer version
    unchanged: int = 0  # same version and content as in the lake
    stale: int = 0  # older than the version in the lake: ignored
    duplicates: int = 0  # superseded by a newer version in the same chunk
    quarantined: int = 0
    omics_samples: int = 0
    unmapped: Counter[tuple[str, str]] = field(default_factory=Counter)  # (table, vocabulary)
    skipped: Counter[str] = field(default_factory=Counter)  # resource types not mapped
    rows_by_table: Counter[str] = field(default_factory=Counter)  # inserted + updated
    merges: list[MergeEvent] = field(default_factory=list)
    resolved: int = 0  # quarantine entries a retry resolved
    retracted: int = 0  # records the source withdrew (entered in error): CDM rows removed
    # Persons whose rows were written, replaced or moved (their observation periods are
    # recomputed after the run); for a grouped write, the whole group's persons.
    persons: set[int] = field(default_factory=set)

    def message(self) -> str:
        retracted = f", {self.retracted} retracted" if self.retracted else ""
        return (
            f"{self.records_read} read, {self.loaded + self.omics_samples} loaded, "
            f"{self.updated} updated, "
            f"{self.unchanged + self.stale} unchanged, {self.quarantined} quarantined{retracted}"
        )


def write_batch(
    engine: Engine,
    batch: IngestBatch,
    chunks: Iterable[ParsedChunk],
    *,
    on_chunk: Callable[[WriteSummary], None] | None = None,
    resolve_quarantine_entries: bool = False,
    concepts: ConceptMapper | None = None,
) -> WriteSummary:
    """Apply ``chunks`` (read lazily, inside the transaction) as ``batch``; mark it loaded.

    On any error the batch's writes are rolled back, the batch is marked ``failed`` with
    the message, and the error is raised again. With ``resolve_quarantine_entries`` (a
    retry), the batch's open quarantine entries this reading did not produce again are
    marked resolved, in the same transaction.
    """
    if batch.status != RUNNING:
        batch = set_batch_status(engine, batch, RUNNING)
    pause_point("running")
    try:
        with atomically(engine):
            writer = LakeWriter(
                engine, batch, concepts=concepts, rederive=resolve_quarantine_entries, hold=True
            )
            for chunk in chunks:
                writer.write_chunk(chunk)
                pause_point("chunk")
                if on_chunk is not None:
                    on_chunk(writer.summary)
            writer.release_held()
            summary = writer.summary
            summary.persons = writer.touched_persons
            # In the same transaction, so a crash never leaves periods behind their records.
            update_observation_periods(engine, writer.period_spans, writer.period_recompute)
            if resolve_quarantine_entries:
                summary.resolved = resolve_quarantine(
                    engine,
                    batch_id=batch.batch_id,
                    still_failing=writer.quarantine_ids,
                    now=writer.now,
                )
            set_batch_status(
                engine,
                batch,
                LOADED,
                rows_loaded=summary.loaded + summary.updated + summary.omics_samples,
                rows_quarantined=summary.quarantined,
                message=summary.message(),
            )
            pause_point("before_commit")
    except Exception as exc:
        logger.warning("batch %s failed: %s", batch.batch_id, exc)
        set_batch_status(engine, batch, FAILED, message=str(exc))
        raise
    pause_point("committed")
    return summary


class LakeWriter:
    """Writes one batch's chunks; use :func:`write_batch` for the transaction and status."""

    def __init__(
        self,
        engine: Engine,
        batch: IngestBatch,
        *,
        now: dt.datetime | None = None,
        concepts: ConceptMapper | None = None,
        rederive: bool = False,
        hold: bool = False,
    ):
        self.engine = engine
        self.batch = batch
        self.source_system = batch.source_system
        self.now = now or utc_now()
        self.persons = PersonResolver(engine, batch.source_system, batch.batch_id, self.now)
        # A mapper shared by the batches of one run keeps its (read-only) lookups.
        self.concepts = concepts or ConceptMapper(engine)
        self.concepts.unmapped = Counter()
        self.summary = WriteSummary()
        # Reading a batch again after a fix: its own records are derived afresh.
        self.rederive_batch = batch.batch_id if rederive else None
        self._quarantine: list[QuarantineEntry] = []
        self.quarantine_ids: set[str] = set()  # every entry this batch produced
        self.touched_persons: set[int] = set()
        # For observation periods: spans of inserted rows widen them; persons whose rows
        # were replaced, retracted or merged get theirs recomputed.
        self.period_spans: list[pa.Table] = []
        self.period_recompute: set[int] = set()
        self._current: dict[str, pa.Table] = {}  # prefetched provenance, by table
        self._lookups = CurrentLookups(engine, batch.source_system)
        self._provenance: list[pa.Table] = []  # source_record rows of the chunk, loaded at its end
        self._default_version = int(batch.received_at.replace(tzinfo=dt.UTC).timestamp() * 1000)
        # With ``hold`` (write_batch), rows of tables with persons are held until the
        # batch ends (see _HOLD_BYTES); release_held() loads them.
        self._hold = hold
        self._held: dict[str, list[pa.Table]] = {}
        self._held_bytes = 0

    @property
    def original_name(self) -> str:
        return self.batch.original_name or self.batch.landed_path

    def write_chunk(self, chunk: ParsedChunk) -> None:
        self.summary.records_read += chunk.records_read
        self.summary.skipped.update(chunk.skipped)
        self._quarantine.extend(chunk.quarantine)
        staged = self._staged(chunk.tables)
        self._current = self._current_of(chunk.patients, staged)
        if chunk.patients:
            self._write_patients(chunk.patients)
        for table in sorted(staged, key=_visits_first):
            self.write_table(table, staged[table])
        if chunk.merges:
            self.release_held()  # merges read and re-point every person table
            self._apply_merges(chunk.merges)
            pause_point("merges")
        if chunk.omics_samples:
            self.summary.omics_samples += upsert_omics_samples(
                self.engine, chunk.omics_samples, batch_id=self.batch.batch_id, now=self.now
            )
        if self._provenance:
            self.engine.load_arrow(SOURCE_RECORD_TABLE, pa.concat_tables(self._provenance))
            self._provenance = []
        self.summary.unmapped = Counter(self.concepts.unmapped)
        if self._quarantine:
            ids = store_quarantine(
                self.engine,
                batch_id=self.batch.batch_id,
                source_system=self.source_system,
                entries=self._quarantine,
                now=self.now,
            )
            self.quarantine_ids.update(ids)
            self.summary.quarantined = len(self.quarantine_ids)
            self._quarantine = []

    # ------------------------------------------------------------------ CDM tables

    def _staged(self, tables: dict[str, list[pa.Table]]) -> dict[str, pa.Table]:
        """Each table's staged rows as one table; in a table new to the source, with the
        row id each record gets.

        Those row ids are derived here, once, rather than by :func:`derive_columns`: the
        provenance lookups key what the writer staged by them. A table the source had
        rows in is looked up by query anyway, and only the rows that change get ids (a
        full export sent again hashes nothing).
        """
        staged = {}
        for table, parts in tables.items():
            parts = [t for t in parts if t.num_rows]
            if parts:
                rows = pa.concat_tables(parts, promote_options="permissive")
                if not self._lookups.had_provenance(table):
                    rows = with_row_ids(table, rows, self.source_system)
                staged[table] = rows
        return staged

    def _current_of(
        self, patients: list[pa.Table], staged: dict[str, pa.Table]
    ) -> dict[str, pa.Table]:
        """The current provenance of every record staged (a chunk's), in one query."""
        ids: dict[str, pa.Array | pa.ChunkedArray] = {}
        keys: dict[str, pa.Array | pa.ChunkedArray] = {}
        patient_ids = [
            t.column(SOURCE_PATIENT_ID) for t in patients if SOURCE_PATIENT_ID in t.column_names
        ]
        if patient_ids:
            ids["person"] = ids["death"] = string_chunks(patient_ids)
        for table, rows in staged.items():
            if SOURCE_RECORD_ID in rows.column_names:
                ids[table] = string_chunks([rows.column(SOURCE_RECORD_ID)])
                if ROW_ID in rows.column_names:
                    keys[table] = rows.column(ROW_ID)
        return self._lookups.current(ids, keys)

    def write_table(self, table: str, rows: pa.Table) -> None:
        """Apply staged rows of one CDM table (one source system: the batch's)."""
        rows = self._with_provenance(table, rows)
        if rows.num_rows == 0:
            return
        plan = plan_versions(
            self.engine,
            table,
            self.source_system,
            rows,
            rederive_batch=self.rederive_batch,
            current=self._current.pop(table, None),
        )
        self.summary.unchanged += plan.unchanged
        self.summary.stale += plan.stale
        self.summary.duplicates += plan.duplicates
        if plan.rows.num_rows == 0:
            return
        derived = derive_columns(
            table,
            plan.rows,
            source_system=self.source_system,
            persons=self.persons,
            concepts=self.concepts,
        )
        prepared = split_incomplete(table, derived, original_name=self.original_name)
        self._quarantine.extend(prepared.quarantine)
        good = prepared.rows
        if good.num_rows == 0:
            return
        self._store_rows(table, good, plan.current)
        self.summary.rows_by_table[table] += good.num_rows
        retracted = retracted_mask(good)
        if retracted is not None:
            self.summary.retracted += pc.sum(pc.cast(retracted, pa.int64())).as_py() or 0
            good = kept(good, pc.invert(retracted))
        inserted = pc.sum(pc.cast(pc.equal(good.column(ACTION), INSERT), pa.int64())).as_py() or 0
        self.summary.loaded += inserted
        self.summary.updated += good.num_rows - inserted

    def _store_rows(self, table: str, good: pa.Table, current: pa.Table) -> None:
        """Replace the rows being updated, load the new ones, and note their provenance.

        Shared by single-batch and grouped writes: ``good`` carries each row's
        ``ACTION`` (insert or replace) and derived row id; ``current`` is what the lake
        held for those records before.
        """
        loadable = self._owned_persons(good) if table == "person" else good
        replacing = pc.filter(
            loadable.column(ROW_ID), pc.not_equal(loadable.column(ACTION), INSERT)
        )
        retracted = retracted_mask(loadable)
        if retracted is not None:  # their old rows go (they are replacing), nothing comes
            loadable = kept(loadable, pc.invert(retracted))
        if len(replacing):
            self.release_held(table)  # rows of this batch may be among those replaced
            cdm = lake_table(self.engine, table)
            gone = ibis.memtable(pa.table({"id": replacing}))
            replaced = cdm.filter(cdm[primary_key(table)].isin(gone.id))
            if "person_id" in cdm.columns:  # a newer version may name another person
                old = self.engine.execute(replaced.select("person_id").distinct())
                self._touch(old)
                self.period_recompute.update(old.column("person_id").drop_null().to_pylist())
            self.engine.delete_where(table, cdm[primary_key(table)].isin(gone.id))
        if loadable.num_rows:
            self._load(table, cdm_columns(table, loadable))
            self._touch(loadable)
            inserted = pc.equal(loadable.column(ACTION), INSERT)
            spans = event_spans(table, kept(loadable, inserted))
            if spans is not None:
                self.period_spans.append(spans)
            if "person_id" in loadable.column_names and table != "person":
                replaced_persons = pc.filter(loadable.column("person_id"), pc.invert(inserted))
                self.period_recompute.update(replaced_persons.drop_null().to_pylist())
        self._provenance.append(
            record_versions(
                self.engine,
                table=table,
                source_system=self.source_system,
                batch_id=self.batch.batch_id,
                written=good,
                current=current,
                now=self.now,
            )
        )

    def _load(self, table: str, rows: pa.Table) -> None:
        """Load ``rows`` into ``table``, or hold them until the batch ends."""
        if not self._hold or "person_id" not in rows.column_names:
            self.engine.load_arrow(table, rows)
            return
        self._held.setdefault(table, []).append(rows)
        self._held_bytes += rows.nbytes
        if self._held_bytes > _HOLD_BYTES:
            self.release_held()

    def release_held(self, table: str | None = None) -> None:
        """Load the rows held for ``table`` (None: every table), in person order (then
        the row's key: the order the person-order rewrite gives)."""
        for name in [table] if table is not None else sorted(self._held):
            parts = self._held.pop(name, None)
            if not parts:
                continue
            rows = pa.concat_tables(parts)
            self._held_bytes -= sum(part.nbytes for part in parts)
            keys = dict.fromkeys(("person_id", primary_key(name)))
            order = pc.sort_indices(rows, [(key, "ascending") for key in keys])
            self.engine.load_arrow(name, rows.take(order))

    def _touch(self, rows: pa.Table) -> None:
        if "person_id" in rows.column_names:
            column = rows.column("person_id")
            self.touched_persons.update(pc.unique(column.drop_null()).to_pylist())

    def _with_provenance(self, table: str, rows: pa.Table) -> pa.Table:
        """Rows with a source record id; a missing version is the receive time, a hash made."""
        if SOURCE_RECORD_ID not in rows.column_names:
            missing = rows
            rows = rows.slice(0, 0)
        else:
            has_id = pc.is_valid(rows.column(SOURCE_RECORD_ID))
            missing = rows.filter(pc.invert(has_id))
            rows = kept(rows, has_id)
        for row in missing.to_pylist():
            self._quarantine.append(
                QuarantineEntry(
                    location=f"{self.original_name}:{table}",
                    reason=f"{table} record without a source record id",
                    raw_payload=payload_text({k: v for k, v in row.items() if v is not None}),
                    field=SOURCE_RECORD_ID,
                )
            )
        version = (
            pc.fill_null(rows.column(SOURCE_VERSION), self._default_version)
            if SOURCE_VERSION in rows.column_names
            else pa.repeat(pa.scalar(self._default_version, pa.int64()), rows.num_rows)
        )
        rows = set_column(rows, SOURCE_VERSION, version)
        if RECORD_HASH not in rows.column_names or rows.column(RECORD_HASH).null_count:
            hashes = (
                rows.column(RECORD_HASH).to_pylist()
                if RECORD_HASH in rows.column_names
                else [None] * rows.num_rows
            )
            plain = rows.drop_columns([ROW_ID]) if ROW_ID in rows.column_names else rows
            filled = [
                value or record_hash(payload_text(row))
                for value, row in zip(hashes, plain.to_pylist(), strict=True)
            ]
            rows = set_column(rows, RECORD_HASH, pa.array(filled, pa.string()))
        return rows

    def _owned_persons(self, rows: pa.Table) -> pa.Table:
        """Person rows whose source patient owns its person id (not merged into another).

        A patient merged or linked into another person keeps its identifiers in
        ``pii_person``, but the surviving patient's demographics make the person row.
        """
        own = stable_ids(("person", self.source_system), rows.column(SOURCE_PATIENT_ID))
        return rows.filter(pc.equal(rows.column("person_id"), own))

    # ------------------------------------------------------------------ identities

    def _write_patients(self, tables: list[pa.Table]) -> None:
        patients = pa.concat_tables(
            [conform_patients(t) for t in tables if t.num_rows], promote_options="permissive"
        )
        if patients.num_rows == 0:
            return
        has_id = pc.is_valid(patients.column(SOURCE_PATIENT_ID))
        for row in patients.filter(pc.invert(has_id)).to_pylist():
            self._quarantine.append(
                QuarantineEntry(
                    location=f"{self.original_name}:patient",
                    reason="patient record without a source patient id",
                    raw_payload=payload_text({k: v for k, v in row.items() if v is not None}),
                    field=SOURCE_PATIENT_ID,
                )
            )
        patients = self._with_provenance(
            "person",
            set_column(
                patients.filter(has_id),
                SOURCE_RECORD_ID,
                patients.filter(has_id).column(SOURCE_PATIENT_ID),
            ),
        )
        if patients.num_rows == 0:
            return
        person_ids = self.persons.person_ids(
            patients.column(SOURCE_PATIENT_ID), identity_records=True
        )
        current = self._current.get("person")
        if current is None:
            current = current_records(
                self.engine, "person", self.source_system, patients.column(SOURCE_PATIENT_ID)
            )
        write_identifiers(
            self.engine,
            patients,
            person_ids,
            current,
            source_system=self.source_system,
            batch_id=self.batch.batch_id,
            now=self.now,
        )
        self.write_table("person", person_rows(patients))
        dead = patients.filter(pc.is_valid(patients.column("death_date")))
        if dead.num_rows:
            self.write_table("death", death_rows(dead))

    def _apply_merges(self, merges: list[PatientMerge]) -> None:
        """Merge source patients into surviving ones (see :mod:`medlake.ingest.identities`)."""
        staged = pa.table(
            {
                SOURCE_RECORD_ID: pa.array([m.merged_id for m in merges], pa.string()),
                SOURCE_VERSION: pa.array([m.source_version for m in merges], pa.int64()),
                RECORD_HASH: pa.array([record_hash(m.surviving_id) for m in merges], pa.string()),
                "__order": pa.array(range(len(merges)), pa.int64()),
            }
        )
        plan = plan_versions(self.engine, MERGE_RECORD_TABLE, self.source_system, staged)
        if plan.rows.num_rows == 0:
            self.summary.unchanged += plan.unchanged + plan.stale
            return
        chosen = [merges[i] for i in sorted(plan.rows.column("__order").to_pylist())]
        pairs, events = [], []
        for merge in chosen:
            surviving = self.persons.person_id(merge.surviving_id)
            merged = self.persons.person_id(merge.merged_id)
            pairs.append((merged, surviving))
            self.touched_persons.update((merged, surviving))
            self.period_recompute.update((merged, surviving))
            events.append(
                MergeEvent(
                    self.source_system, merge.surviving_id, merge.merged_id, surviving, merged,
                    merge.source_version, self.batch.batch_id,
                )
            )  # fmt: skip
        if self._provenance:  # the chunk's provenance names persons the merge re-points
            self.engine.load_arrow(SOURCE_RECORD_TABLE, pa.concat_tables(self._provenance))
            self._provenance = []
        repoint_persons(self.engine, resolve_moves(pairs))
        self.persons.forget()
        survivors = {m.merged_id: self.persons.person_id(m.surviving_id) for m in chosen}
        survivor_ids = pa.array(
            [survivors[i] for i in plan.rows.column(SOURCE_RECORD_ID).to_pylist()], pa.int64()
        )
        written = plan.rows.append_column(ROW_ID, survivor_ids).append_column(
            "person_id", survivor_ids
        )
        self._provenance.append(
            record_versions(
                self.engine,
                table=MERGE_RECORD_TABLE,
                source_system=self.source_system,
                batch_id=self.batch.batch_id,
                written=written,
                current=plan.current,
                now=self.now,
            )
        )
        self.summary.merges.extend(events)
        logger.info("%s: applied %d patient merges", self.source_system, len(events))


def retracted_mask(rows: pa.Table) -> pa.ChunkedArray | None:
    """Which staged rows the source withdrew (:data:`RETRACTED`), or None if none can be."""
    if RETRACTED not in rows.column_names:
        return None
    return pc.fill_null(rows.column(RETRACTED), False)


def _visits_first(table: str) -> tuple[int, str]:
    # Visits before the rows that refer to them; otherwise a stable order.
    return (0 if table == "visit_occurrence" else 1, table)

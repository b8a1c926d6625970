"""Patient identities: source patients to person ids, identifiers to ``pii_person``, merges.

Each patient as a source system knows it has one ``source_patient`` row. A source
patient seen for the first time (in a patient record or as the subject of any row) gets
a deterministic person id, :func:`~medlake.ingest.ids.initial_person_id`, until the EMPI
links it to another; every CDM row then takes its person id from ``source_patient``, so
after a merge or an EMPI link new rows follow the link without re-reading old files.

Merges the source itself declares (HL7 ADT^A40, FHIR ``Patient.link`` replaced-by) move
the merged patient — and every source patient already pointing at its person — to the
surviving patient's person id, re-point the CDM, ``pii_person`` and ``omics_sample`` rows,
and drop the merged person's ``person`` row. Each merge is recorded in ``source_record``
as ``cdm_table = 'source_patient'``, ``source_record_id`` = the merged patient id,
``cdm_row_id`` = the surviving person id, with the merge's version, so re-applying it is
a no-op and the EMPI can list the merges a source declared.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.ingest.ids import initial_person_id, stable_ids
from medlake.ingest.lake_tables import lake_table
from medlake.schema import ALL_TABLES

SOURCE_PATIENT_TABLE = "source_patient"
PII_TABLE = "pii_person"
MERGE_RECORD_TABLE = "source_patient"  # cdm_table of merge provenance rows

# Tables whose person_id a merge re-points (person itself loses the merged row instead).
PERSON_REFERENCING_TABLES: tuple[str, ...] = tuple(
    spec.name
    for spec in ALL_TABLES
    if spec.name not in ("person", SOURCE_PATIENT_TABLE)
    and any(column.name == "person_id" for column in spec.columns)
)


@dataclass(frozen=True)
class MergeEvent:
    """A merge a source declared and the writer applied."""

    source_system: str
    surviving_id: str
    merged_id: str
    surviving_person_id: int
    merged_person_id: int
    source_version: int
    batch_id: str


class PersonResolver:
    """Person ids of one source system's patients, creating ``source_patient`` rows as needed."""

    def __init__(self, engine: Engine, source_system: str, batch_id: str, now: dt.datetime) -> None:
        self._engine = engine
        self.source_system = source_system
        self._batch_id = batch_id
        self._now = now
        self._cache: dict[str, int] = {}

    def forget(self) -> None:
        """Drop cached ids (after a merge changed them)."""
        self._cache.clear()

    def person_ids(
        self, source_patient_ids: pa.Array | pa.ChunkedArray, *, identity_records: bool = False
    ) -> pa.Array:
        """The person id of every source patient id (null stays null).

        ``identity_records``: these are the patients' own records (not references), so
        their ``source_patient`` rows get this batch and ``last_seen``.
        """
        ids = (
            source_patient_ids.combine_chunks()
            if isinstance(source_patient_ids, pa.ChunkedArray)
            else source_patient_ids
        )
        distinct = pc.unique(ids).drop_null()
        keys = distinct.to_pylist()
        if identity_records:
            self._ensure(keys, touch=True)
        else:
            self._ensure([key for key in keys if key not in self._cache], touch=False)
        values = pa.array([self._cache[key] for key in keys], pa.int64())
        return pc.take(values, pc.index_in(ids, value_set=distinct))

    def prepare(self, identities: dict[str, str], references: dict[str, str]) -> None:
        """Resolve a group of batches' patients up front, each written with its own batch.

        ``identities``: patients whose own records the group has, with the batch that has
        them (touched, as :meth:`person_ids` with ``identity_records`` does);
        ``references``: other patients referred to, with the first batch referring to
        them (the one that would have created the row, had the batches run one by one).
        """
        self._ensure(sorted(identities), touch=True, batch_of=identities)
        self._ensure(
            sorted(k for k in references if k not in self._cache), touch=False, batch_of=references
        )

    def person_id(self, source_patient_id: str) -> int:
        return int(self.person_ids(pa.array([source_patient_id], pa.string()))[0].as_py())

    def _own(self, table: ibis.Table, source_patient_ids: Sequence[str]) -> ibis.BooleanValue:
        wanted = ibis.memtable(pa.table({"id": pa.array(list(source_patient_ids), pa.string())}))
        return (table.source_system == self.source_system) & table.source_patient_id.isin(wanted.id)

    def _ensure(
        self, keys: list[str], *, touch: bool, batch_of: dict[str, str] | None = None
    ) -> None:
        """Cache the person ids of ``keys``, creating (and, with ``touch``, updating) rows."""
        if not keys:
            return
        table = lake_table(self._engine, SOURCE_PATIENT_TABLE)
        found = self._engine.execute(table.filter(self._own(table, keys)))
        for key, person in zip(
            found.column("source_patient_id").to_pylist(),
            found.column("person_id").to_pylist(),
            strict=True,
        ):
            self._cache[key] = (
                person if person is not None else initial_person_id(self.source_system, key)
            )
        known = set(found.column("source_patient_id").to_pylist())
        new = sorted(key for key in keys if key not in known)
        writes = []

        def batches(patients: list[str]) -> pa.Array:
            return pa.array(
                [(batch_of or {}).get(key, self._batch_id) for key in patients], pa.string()
            )

        if touch and found.num_rows:
            target = batches(found.column("source_patient_id").to_pylist())
            stale = found.filter(pc.not_equal(found.column("batch_id"), target))
            if stale.num_rows:
                wanted = stale.column("source_patient_id").to_pylist()
                self._engine.delete_where(SOURCE_PATIENT_TABLE, self._own(table, wanted))
                count = stale.num_rows
                writes.append(
                    stale.set_column(
                        stale.column_names.index("batch_id"), "batch_id", batches(wanted)
                    ).set_column(
                        stale.column_names.index("last_seen"),
                        "last_seen",
                        pa.array([self._now] * count, pa.timestamp("us")),
                    )
                )
        if new:
            new_keys = pa.array(new, pa.string())
            person_ids = stable_ids(("person", self.source_system), new_keys)
            count = len(new)
            writes.append(
                pa.table(
                    {
                        "source_system": pa.array([self.source_system] * count, pa.string()),
                        "source_patient_id": new_keys,
                        "person_id": person_ids,
                        "batch_id": batches(new),
                        "first_seen": pa.array([self._now] * count, pa.timestamp("us")),
                        "last_seen": pa.array([self._now] * count, pa.timestamp("us")),
                    }
                )
            )
            self._cache.update(zip(new, person_ids.to_pylist(), strict=True))
        if writes:
            self._engine.load_arrow(
                SOURCE_PATIENT_TABLE, pa.concat_tables(writes, promote_options="permissive")
            )


def repoint_persons(engine: Engine, moves: dict[int, int]) -> None:
    """Re-point every reference to a merged person id to its surviving one.

    For each table that refers to persons, the rows of the merged persons are read,
    deleted and written back with the surviving ids (every engine can do that; Spark's
    Parquet tables have no UPDATE); the merged persons' ``person`` rows are deleted.
    Merges are rare, so this is a handful of small statements per chunk that has any.
    """
    if not moves:
        return
    merged = pa.array(sorted(moves), pa.int64())
    surviving = pa.array([moves[old] for old in merged.to_pylist()], pa.int64())
    gone = ibis.memtable(pa.table({"id": merged}))
    for table_name in (SOURCE_PATIENT_TABLE, *PERSON_REFERENCING_TABLES):
        if not engine.has_table(table_name):
            continue
        table = lake_table(engine, table_name)
        predicate = table.person_id.isin(gone.id)
        rows = engine.execute(table.filter(predicate))
        if rows.num_rows == 0:
            continue
        engine.delete_where(table_name, predicate)
        old = rows.column("person_id")
        new = pc.take(surviving, pc.index_in(old, value_set=merged))
        engine.load_arrow(
            table_name, rows.set_column(rows.column_names.index("person_id"), "person_id", new)
        )
    person = lake_table(engine, "person")
    engine.delete_where("person", person.person_id.isin(gone.id))


def resolve_moves(pairs: Sequence[tuple[int, int]]) -> dict[int, int]:
    """Final person id for every merged one, following chains (A into B, then B into C)."""
    moves: dict[int, int] = {}
    for merged, surviving in pairs:
        surviving = moves.get(surviving, surviving)
        if merged == surviving:
            continue
        for old, new in list(moves.items()):
            if new == merged:
                moves[old] = surviving
        moves[merged] = surviving
    return {old: new for old, new in moves.items() if old != new}

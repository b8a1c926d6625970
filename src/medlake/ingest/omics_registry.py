"""The omics sample registry: upsert staged samples by (sample_id, assay).

Readers register each sample with the source patient id it came with; the person id is
filled from ``source_patient`` when that patient is known (the EMPI links the rest
later). Source system names are lower-cased (a manifest's ``HIS`` is the lake's
``his``). Registering a sample again replaces its row but keeps when it was first
registered.
"""

from __future__ import annotations

import datetime as dt

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.ingest.lake_tables import lake_table
from medlake.ingest.staging import OMICS_SAMPLE_COLUMNS

OMICS_TABLE = "omics_sample"


def upsert_omics_samples(
    engine: Engine, samples: list[pa.Table], *, batch_id: str, now: dt.datetime
) -> int:
    """Write the staged samples; return how many distinct samples were registered."""
    if not samples:
        return 0
    staged = (
        pa.concat_tables([_conformed(table) for table in samples if table.num_rows])
        if any(table.num_rows for table in samples)
        else None
    )
    if staged is None:
        return 0
    staged = _last_per_key(staged)
    persons = _known_persons(engine, staged)
    registry = lake_table(engine, OMICS_TABLE)
    first_registered: dict[tuple[str, str], dt.datetime] = {}
    for assay in pc.unique(staged.column("assay")).to_pylist():
        ids = pc.filter(staged.column("sample_id"), pc.equal(staged.column("assay"), assay))
        wanted = ibis.memtable(pa.table({"id": ids}))
        predicate = (registry.assay == assay) & registry.sample_id.isin(wanted.id)
        existing = engine.execute(registry.filter(predicate).select("sample_id", "registered_at"))
        for sample_id, registered in zip(
            existing.column("sample_id").to_pylist(),
            existing.column("registered_at").to_pylist(),
            strict=True,
        ):
            first_registered[(sample_id, assay)] = registered
        if existing.num_rows:
            engine.delete_where(OMICS_TABLE, predicate)
    keys = zip(
        staged.column("sample_id").to_pylist(), staged.column("assay").to_pylist(), strict=True
    )
    registered_at = [first_registered.get(key, now) for key in keys]
    rows = (
        staged.append_column("person_id", persons)
        .append_column("registered_at", pa.array(registered_at, pa.timestamp("us")))
        .append_column("batch_id", pa.array([batch_id] * staged.num_rows, pa.string()))
    )
    engine.load_arrow(OMICS_TABLE, rows)
    return rows.num_rows


def _conformed(table: pa.Table) -> pa.Table:
    """The registry's columns; source systems in lower case, as the lake names them."""
    columns = {
        name: (
            table.column(name).cast(dtype)
            if name in table.column_names
            else pa.nulls(table.num_rows, dtype)
        )
        for name, dtype in OMICS_SAMPLE_COLUMNS.items()
    }
    columns["source_system"] = pc.utf8_lower(columns["source_system"])
    return pa.table(columns)


def _last_per_key(staged: pa.Table) -> pa.Table:
    """The last row for each (sample_id, assay): a later registration wins."""
    keys = pc.binary_join_element_wise(staged.column("sample_id"), staged.column("assay"), "\x1f")
    last: dict[str, int] = {key: index for index, key in enumerate(keys.to_pylist())}
    return staged.take(pa.array(sorted(last.values()), pa.int64()))


def _known_persons(engine: Engine, staged: pa.Table) -> pa.Array:
    """person_id of each sample's source patient where ``source_patient`` knows it."""
    systems = staged.column("source_system").to_pylist()
    patients = staged.column("source_patient_id").to_pylist()
    found: dict[tuple[str, str], int | None] = {}
    table = lake_table(engine, "source_patient")
    for system in sorted({s for s in systems if s is not None}):
        ids = sorted({p for s, p in zip(systems, patients, strict=True) if s == system and p})
        if not ids:
            continue
        wanted = ibis.memtable(pa.table({"id": pa.array(ids, pa.string())}))
        rows = engine.execute(
            table.filter(
                (table.source_system == system) & table.source_patient_id.isin(wanted.id)
            ).select("source_patient_id", "person_id")
        )
        for patient, person in zip(
            rows.column("source_patient_id").to_pylist(),
            rows.column("person_id").to_pylist(),
            strict=True,
        ):
            found[(system, patient)] = person
    return pa.array([found.get((s, p)) for s, p in zip(systems, patients, strict=True)], pa.int64())

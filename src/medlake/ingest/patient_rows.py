"""Staged patient identities to the rows the writer stores: person, death, pii_person.

Readers stage one row per version of a source patient (``PATIENT_COLUMNS``). The
``person`` row takes only pseudonymous demographics (gender, year/month/day of birth;
race and ethnicity unknown, 0), ``death`` the death date, and the direct identifiers go
only to ``pii_person`` (:data:`PII_COLUMNS`).
"""

from __future__ import annotations

import datetime as dt

import ibis
import pyarrow as pa
import pyarrow.compute as pc

from medlake.engine import Engine
from medlake.ingest.identities import PII_TABLE
from medlake.ingest.lake_tables import lake_table
from medlake.ingest.staging import (
    PATIENT_COLUMNS,
    RECORD_HASH,
    SOURCE_PATIENT_ID,
    SOURCE_RECORD_ID,
    SOURCE_VERSION,
)

# How sources write sex, to OMOP gender concepts (8551: unknown).
_GENDER_CONCEPTS = {"男": 8507, "m": 8507, "male": 8507, "女": 8532, "f": 8532, "female": 8532}
_UNKNOWN_GENDER = 8551
PII_COLUMNS = (
    "name_hanzi", "name_pinyin", "family_name", "given_name", "name_latin", "resident_id",
    "birth_date", "sex", "phone", "address", "postcode", "email", "mrn",
)  # fmt: skip


def conform_patients(table: pa.Table) -> pa.Table:
    return pa.table(
        {
            name: (
                table.column(name).cast(dtype)
                if name in table.column_names
                else pa.nulls(table.num_rows, dtype)
            )
            for name, dtype in PATIENT_COLUMNS.items()
        }
    )


def person_rows(patients: pa.Table) -> pa.Table:
    """Staged ``person`` rows: pseudonymous demographics only, no identifiers."""
    sex = patients.column("sex").to_pylist()
    derived = pa.array(
        [_GENDER_CONCEPTS.get((s or "").strip().lower(), _UNKNOWN_GENDER) for s in sex], pa.int64()
    )
    birth = patients.column("birth_date")
    return pa.table(
        {
            SOURCE_RECORD_ID: patients.column(SOURCE_PATIENT_ID),
            SOURCE_PATIENT_ID: patients.column(SOURCE_PATIENT_ID),
            SOURCE_VERSION: patients.column(SOURCE_VERSION),
            RECORD_HASH: patients.column(RECORD_HASH),
            "gender_concept_id": pc.coalesce(patients.column("gender_concept_id"), derived),
            "year_of_birth": pc.year(birth),
            "month_of_birth": pc.month(birth),
            "day_of_birth": pc.day(birth),
            "gender_source_value": patients.column("sex"),
        }
    )


def death_rows(patients: pa.Table) -> pa.Table:
    return pa.table(
        {
            SOURCE_RECORD_ID: patients.column(SOURCE_PATIENT_ID),
            SOURCE_PATIENT_ID: patients.column(SOURCE_PATIENT_ID),
            SOURCE_VERSION: patients.column(SOURCE_VERSION),
            RECORD_HASH: patients.column(RECORD_HASH),
            "death_date": patients.column("death_date"),
            "death_type_concept_id": pa.array([32817] * patients.num_rows, pa.int64()),
        }
    )


def write_identifiers(
    engine: Engine,
    patients: pa.Table,
    person_ids: pa.Array,
    current: pa.Table,
    *,
    source_system: str,
    batch_id: str,
    now: dt.datetime,
    batch_ids: pa.Array | pa.ChunkedArray | None = None,
) -> None:
    """Every version of each patient's identifiers not yet in ``pii_person``.

    A version another batch recorded first is kept; one this batch recorded (a
    re-read after a fix) is written again. A version whose record is the same as
    the current one (same hash: the same export sent again) adds nothing.

    ``batch_ids``: each row's batch, for a group of batches whose patients are distinct
    (each patient's rows in one batch); ``batch_id`` is then not used.
    """
    row_batches = batch_ids.to_pylist() if batch_ids is not None else [batch_id] * patients.num_rows
    batch_of = dict(zip(patients.column(SOURCE_PATIENT_ID).to_pylist(), row_batches, strict=True))
    known = {
        (patient, digest)
        for patient, digest, batch in zip(
            current.column("source_record_id").to_pylist(),
            current.column("record_sha256").to_pylist(),
            current.column("batch_id").to_pylist(),
            strict=True,
        )
        if batch != batch_of.get(patient, batch_id)
    }
    if known:
        pairs = zip(
            patients.column(SOURCE_PATIENT_ID).to_pylist(),
            patients.column(RECORD_HASH).to_pylist(),
            strict=True,
        )
        fresh = pa.array([pair not in known for pair in pairs], pa.bool_())
        patients, person_ids = patients.filter(fresh), pc.filter(person_ids, fresh)
        row_batches = [b for b, keep in zip(row_batches, fresh.to_pylist(), strict=True) if keep]
    keys = list(
        zip(
            patients.column(SOURCE_PATIENT_ID).to_pylist(),
            patients.column(SOURCE_VERSION).to_pylist(),
            strict=True,
        )
    )
    incoming = set(keys)
    pii = lake_table(engine, PII_TABLE)
    wanted = ibis.memtable(pa.table({"id": pc.unique(patients.column(SOURCE_PATIENT_ID))}))
    ours = (pii.source_system == source_system) & pii.source_patient_id.isin(wanted.id)
    present = engine.execute(
        pii.filter(ours).select("source_patient_id", "source_version", "batch_id")
    )
    # A version this batch recorded is written again only when it comes again (a
    # re-read after a fix); versions an earlier chunk of this batch recorded stay.
    seen: set[tuple[str, int]] = set()
    rewrite: list[str] = []
    for patient, version, batch in zip(*(c.to_pylist() for c in present.columns), strict=True):
        if batch == batch_of.get(patient, batch_id) and (patient, version) in incoming:
            rewrite.append(f"{patient}\x1f{version}")
        else:
            seen.add((patient, version))
    if rewrite:
        again = ibis.memtable(pa.table({"key": pa.array(rewrite, pa.string())}))
        version_key = pii.source_patient_id.concat("\x1f", pii.source_version.cast("string"))
        engine.delete_where(PII_TABLE, ours & version_key.isin(again.key))
    keep: dict[tuple[str, int], int] = {}
    for index, key in enumerate(keys):
        if key not in seen:
            keep[key] = index  # a repeated (patient, version) in the batch: the later row
    if not keep:
        return
    take = pa.array(sorted(keep.values()), pa.int64())
    new = patients.take(take)
    count = new.num_rows
    columns = {name: new.column(name) for name in PII_COLUMNS}
    engine.load_arrow(
        PII_TABLE,
        pa.table(
            {
                "source_system": pa.array([source_system] * count, pa.string()),
                "source_patient_id": new.column(SOURCE_PATIENT_ID),
                "person_id": pc.take(person_ids, take),
                **columns,
                "batch_id": pc.take(pa.array(row_batches, pa.string()), take),
                "source_version": new.column(SOURCE_VERSION),
                "recorded_at": pa.array([now] * count, pa.timestamp("us")),
            }
        ),
    )

"""Staged patient identities to the rows the writer stores: person, death, pii_person.

Readers stage one row per version of a source patient (``PATIENT_COLUMNS``). The
``person`` row takes only pseudonymous demographics (gender, year/month/day of birth;
race and ethnicity unknown, 0), ``death`` the death date, and the direct identifiers go
only to ``pii_person`` (:data:`PII_COLUMNS`).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

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
    "birth_date", "sex", "phone", "address", "postcode", "email",
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

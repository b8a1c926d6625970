"""The writer on every engine: the same chunks give the same lake on DuckDB and Spark."""

from __future__ import annotations

import datetime as dt

from medlake.engine import Engine
from medlake.ingest.batches import register_batch
from medlake.ingest.ids import initial_person_id, row_id
from medlake.ingest.staging import ParsedChunk, PatientMerge, TableBuffer, record_hash
from medlake.ingest.writer import write_batch
from medlake.service.workspace import upgrade_schema_on
from medlake.vocab import load_demo_vocabulary


def chunk(version: int, value: str) -> ParsedChunk:
    patients = TableBuffer(
        "patient", ["_source_patient_id", "_source_version", "_record_hash", "birth_date", "sex"]
    )
    for patient in ("P1", "P2"):
        patients.append(
            _source_patient_id=patient,
            _source_version=1,
            _record_hash=record_hash(patient),
            birth_date=dt.date(1960, 2, 3),
            sex="M",
        )
    conditions = TableBuffer(
        "condition_occurrence",
        [
            "_source_record_id", "_source_version", "_record_hash", "_source_patient_id",
            "condition_start_date", "condition_source_value", "_condition_vocabulary",
        ],
    )  # fmt: skip
    conditions.append(
        _source_record_id="C1",
        _source_version=version,
        _record_hash=record_hash(value),
        _source_patient_id="P2",
        condition_start_date=dt.date(2020, 1, 1),
        condition_source_value=value,
        _condition_vocabulary="ICD10CM",
    )
    parsed = ParsedChunk(patients=[patients.to_arrow()])
    parsed.add_rows("condition_occurrence", conditions.to_arrow())
    return parsed


def test_versions_and_merges_on_every_engine(backend: Engine) -> None:
    upgrade_schema_on(backend)
    load_demo_vocabulary(backend)

    def write(name: str, parsed: ParsedChunk) -> None:
        batch = register_batch(
            backend,
            source_system="emr",
            format="test",
            landed_sha256=record_hash(name) * 2,
            landed_path=name,
            original_name=name,
            size_bytes=1,
        )
        write_batch(backend, batch, [parsed])

    write("a", chunk(1, "E11.9"))
    write("b", chunk(2, "I10"))
    write("c", ParsedChunk(merges=[PatientMerge("P1", "P2", 5)]))
    (condition,) = backend.execute(backend.table("condition_occurrence")).to_pylist()
    assert condition["condition_occurrence_id"] == row_id("condition_occurrence", "emr", "C1")
    assert condition["condition_source_value"] == "I10"
    assert condition["person_id"] == initial_person_id("emr", "P1")
    assert backend.count("person") == 1
    statuses = backend.execute(backend.table("ingest_batch").select("status")).column(0)
    assert set(statuses.to_pylist()) == {"loaded"}
    current = backend.execute(backend.table("source_record").select("is_current")).column(0)
    assert current.to_pylist().count(True) == 4

"""The lake writer: ids, persons, concepts, quarantine and idempotence, from hand-made chunks."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.config import open_workspace
from medlake.engine import Engine
from medlake.ingest.batches import IngestBatch, find_batch, register_batch
from medlake.ingest.ids import initial_person_id, row_id
from medlake.ingest.staging import ParsedChunk, QuarantineEntry, TableBuffer, record_hash
from medlake.ingest.writer import write_batch
from medlake.service.workspace import init_workspace, open_lake

PATIENT_COLUMNS = [
    "_source_patient_id", "_source_version", "_record_hash", "name_hanzi", "resident_id",
    "birth_date", "sex", "phone", "death_date",
]  # fmt: skip
CONDITION_COLUMNS = [
    "_source_record_id", "_source_version", "_record_hash", "_source_patient_id",
    "_source_visit_id", "condition_start_date", "condition_source_value",
    "_condition_vocabulary",
]  # fmt: skip
CDM_AND_MEDLAKE = [
    "person", "death", "visit_occurrence", "condition_occurrence", "measurement",
    "source_record", "source_patient", "pii_person", "quarantine", "omics_sample",
]  # fmt: skip
# Columns that record when something happened, which differ between any two runs.
TIMESTAMPS = {
    "loaded_at", "superseded_at", "first_seen", "last_seen", "recorded_at",
    "quarantined_at", "registered_at",
}  # fmt: skip


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_workspace(tmp_path_factory.mktemp("template") / "ws").root


@pytest.fixture
def lake(template: Path, tmp_path: Path) -> Iterator[Engine]:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    with open_lake(open_workspace(root)) as engine:
        yield engine


def patients(*rows: dict[str, object]) -> pa.Table:
    buffer = TableBuffer("patient", PATIENT_COLUMNS)
    for row in rows:
        values = {"_source_version": 1, "birth_date": dt.date(1970, 5, 17), "sex": "女", **row}
        values.setdefault("_record_hash", record_hash(repr(sorted(values.items()))))
        buffer.append(**values)
    return buffer.to_arrow()


def conditions(*rows: dict[str, object]) -> pa.Table:
    buffer = TableBuffer("condition_occurrence", CONDITION_COLUMNS)
    for row in rows:
        values = {
            "_source_version": 1,
            "condition_start_date": dt.date(2020, 1, 2),
            "condition_source_value": "E11.9",
            "_condition_vocabulary": "ICD10CM",
            **row,
        }
        values.setdefault("_record_hash", record_hash(repr(sorted(values.items()))))
        buffer.append(**values)
    return buffer.to_arrow()


def chunk(
    patient_rows: pa.Table | None = None, condition_rows: pa.Table | None = None, **extra: object
) -> ParsedChunk:
    parsed = ParsedChunk(**extra)  # type: ignore[arg-type]
    if patient_rows is not None:
        parsed.patients.append(patient_rows)
        parsed.records_read += patient_rows.num_rows
    if condition_rows is not None:
        parsed.add_rows("condition_occurrence", condition_rows)
        parsed.records_read += condition_rows.num_rows
    return parsed


def batch(engine: Engine, name: str, system: str = "emr") -> IngestBatch:
    sha = record_hash(name) * 2
    return register_batch(
        engine,
        source_system=system,
        format="test",
        landed_sha256=sha,
        landed_path=f"{sha[:2]}/{sha}",
        original_name=name,
        size_bytes=1,
    )


def snapshot(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    """Every table's rows, sorted, without the columns that record wall-clock time."""
    state = {}
    for table in CDM_AND_MEDLAKE:
        rows = engine.execute(engine.table(table)).to_pylist()
        state[table] = sorted(
            (tuple((k, v) for k, v in row.items() if k not in TIMESTAMPS) for row in rows),
            key=repr,
        )
    return state


def first_load(engine: Engine) -> None:
    write_batch(
        engine,
        batch(engine, "one.ndjson"),
        [
            chunk(
                patients({"_source_patient_id": "P1", "name_hanzi": "王芳"}),
                conditions(
                    {
                        "_source_record_id": "C1",
                        "_source_patient_id": "P1",
                        "_source_visit_id": "V1",
                    },
                    {
                        "_source_record_id": "C2",
                        "_source_patient_id": "P1",
                        "condition_source_value": "Z99.999",
                    },
                ),
            )
        ],
    )


def test_row_ids_are_deterministic_and_derived_from_provenance(lake: Engine) -> None:
    first_load(lake)
    rows = lake.execute(lake.table("condition_occurrence")).to_pylist()
    by_id = {row["condition_occurrence_id"]: row for row in rows}
    c1 = by_id[row_id("condition_occurrence", "emr", "C1")]
    assert c1["person_id"] == initial_person_id("emr", "P1")
    assert c1["visit_occurrence_id"] == row_id("visit_occurrence", "emr", "V1")
    assert row_id("condition_occurrence", "emr", "C1") == 771317967808562166  # stable forever


def test_person_has_demographics_and_pii_the_identifiers(lake: Engine) -> None:
    first_load(lake)
    (person,) = lake.execute(lake.table("person")).to_pylist()
    assert person["person_id"] == initial_person_id("emr", "P1")
    assert (person["year_of_birth"], person["month_of_birth"], person["day_of_birth"]) == (
        1970,
        5,
        17,
    )
    assert person["gender_concept_id"] == 8532
    assert person["race_concept_id"] == 0
    assert person["person_source_value"] is None
    (pii,) = lake.execute(lake.table("pii_person")).to_pylist()
    assert pii["name_hanzi"] == "王芳"
    assert pii["person_id"] == person["person_id"]


def test_codes_map_to_concepts_and_unknown_codes_count_as_unmapped(lake: Engine) -> None:
    summary = write_batch(
        lake,
        batch(lake, "c.ndjson"),
        [
            chunk(
                None,
                conditions(
                    {"_source_record_id": "C1", "_source_patient_id": "P1"},
                    {
                        "_source_record_id": "C2",
                        "_source_patient_id": "P1",
                        "condition_source_value": "Z99.999",
                    },
                ),
            )
        ],
    )
    rows = {
        r["condition_source_value"]: r
        for r in lake.execute(lake.table("condition_occurrence")).to_pylist()
    }
    concept = lake.table("concept")
    e119 = lake.scalar(
        concept.filter(
            (concept.vocabulary_id == "ICD10CM") & (concept.concept_code == "E11.9")
        ).concept_id.max()
    )
    assert rows["E11.9"]["condition_source_concept_id"] == e119
    assert rows["E11.9"]["condition_concept_id"] not in (None, 0)
    assert rows["Z99.999"]["condition_concept_id"] == 0
    assert rows["Z99.999"]["condition_type_concept_id"] == 32817
    assert summary.unmapped == {("condition_occurrence", "ICD10CM"): 1}


def test_reingesting_same_batch_changes_nothing(lake: Engine) -> None:
    first_load(lake)
    before = snapshot(lake)
    first_load(lake)
    assert snapshot(lake) == before


def test_same_records_in_another_batch_are_unchanged(lake: Engine) -> None:
    first_load(lake)
    before = snapshot(lake)
    summary = write_batch(
        lake,
        batch(lake, "two.ndjson"),
        [
            chunk(
                None,
                conditions(
                    {
                        "_source_record_id": "C1",
                        "_source_patient_id": "P1",
                        "_source_visit_id": "V1",
                    }
                ),
            )
        ],
    )
    assert (summary.loaded, summary.updated, summary.unchanged) == (0, 0, 1)
    after = snapshot(lake)
    after["source_patient"] = before["source_patient"]  # last_seen aside
    assert {k: v for k, v in after.items() if k != "source_patient"} == {
        k: v for k, v in before.items() if k != "source_patient"
    }


def test_missing_required_field_is_quarantined_and_good_rows_load(lake: Engine) -> None:
    summary = write_batch(
        lake,
        batch(lake, "q.ndjson"),
        [
            chunk(
                None,
                conditions(
                    {"_source_record_id": "C1", "_source_patient_id": "P1"},
                    {
                        "_source_record_id": "C2",
                        "_source_patient_id": "P1",
                        "condition_start_date": None,
                    },
                ),
                quarantine=[QuarantineEntry("q.ndjson:7", "malformed JSON", "{oops", None)],
            )
        ],
    )
    assert lake.count("condition_occurrence") == 1
    assert summary.quarantined == 2
    entries = {r["reason"]: r for r in lake.execute(lake.table("quarantine")).to_pylist()}
    missing = entries["missing required field condition_occurrence.condition_start_date"]
    assert missing["field"] == "condition_start_date"
    assert "C2" in missing["raw_payload"]
    assert missing["location"] == "q.ndjson:condition_occurrence/C2"
    assert entries["malformed JSON"]["location"] == "q.ndjson:7"


def test_batch_is_marked_loaded_with_counts(lake: Engine) -> None:
    record = batch(lake, "one.ndjson")
    write_batch(lake, record, [chunk(patients({"_source_patient_id": "P1"}))])
    loaded = find_batch(lake, record.batch_id)
    assert loaded is not None
    assert loaded.status == "loaded"
    assert loaded.rows_loaded == 1


def test_failing_reader_rolls_back_and_marks_batch_failed(lake: Engine) -> None:
    def chunks() -> Iterator[ParsedChunk]:
        yield chunk(patients({"_source_patient_id": "P1"}))
        raise ValueError("reader broke")

    record = batch(lake, "bad.ndjson")
    with pytest.raises(ValueError, match="reader broke"):
        write_batch(lake, record, chunks())
    assert lake.count("person") == 0
    assert lake.count("source_patient") == 0
    failed = find_batch(lake, record.batch_id)
    assert failed is not None
    assert failed.status == "failed"
    assert "reader broke" in (failed.message or "")


def test_death_date_makes_a_death_row(lake: Engine) -> None:
    write_batch(
        lake,
        batch(lake, "d.ndjson"),
        [chunk(patients({"_source_patient_id": "P1", "death_date": dt.date(2024, 3, 1)}))],
    )
    (death,) = lake.execute(lake.table("death")).to_pylist()
    assert death["person_id"] == initial_person_id("emr", "P1")
    assert death["death_date"] == dt.date(2024, 3, 1)

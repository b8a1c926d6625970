"""Versions, duplicates, merges and omics samples in the lake writer."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.config import open_workspace
from medlake.engine import Engine
from medlake.ingest.batches import IngestBatch, register_batch
from medlake.ingest.ids import initial_person_id, row_id
from medlake.ingest.staging import ParsedChunk, PatientMerge, TableBuffer, record_hash
from medlake.ingest.writer import WriteSummary, write_batch
from medlake.service.workspace import init_workspace, open_lake

MEASUREMENT_COLUMNS = [
    "_source_record_id", "_source_version", "_record_hash", "_source_patient_id",
    "measurement_date", "measurement_source_value", "_measurement_vocabulary", "value_as_number",
]  # fmt: skip
PATIENT_COLUMNS = [
    "_source_patient_id",
    "_source_version",
    "_record_hash",
    "birth_date",
    "sex",
    "phone",
]


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return init_workspace(tmp_path_factory.mktemp("template") / "ws").root


@pytest.fixture
def lake(template: Path, tmp_path: Path) -> Iterator[Engine]:
    shutil.copytree(template, tmp_path / "ws")
    with open_lake(open_workspace(tmp_path / "ws")) as engine:
        yield engine


def measurements(*rows: tuple[str, int, float]) -> pa.Table:
    """(record id, version, value) rows of patient P1, LOINC 2345-7."""
    buffer = TableBuffer("measurement", MEASUREMENT_COLUMNS)
    for record, version, value in rows:
        buffer.append(
            _source_record_id=record,
            _source_version=version,
            _record_hash=record_hash(f"{record}/{version}/{value}"),
            _source_patient_id="P1",
            measurement_date=dt.date(2021, 6, 1),
            measurement_source_value="2345-7",
            _measurement_vocabulary="LOINC",
            value_as_number=value,
        )
    return buffer.to_arrow()


def patients(*rows: tuple[str, int, str]) -> pa.Table:
    """(patient id, version, phone) rows."""
    buffer = TableBuffer("patient", PATIENT_COLUMNS)
    for patient, version, phone in rows:
        buffer.append(
            _source_patient_id=patient,
            _source_version=version,
            _record_hash=record_hash(f"{patient}/{version}/{phone}"),
            birth_date=dt.date(1980 + version, 1, 1),
            sex="M",
            phone=phone,
        )
    return buffer.to_arrow()


def write(engine: Engine, name: str, *chunks: ParsedChunk, system: str = "lis") -> WriteSummary:
    sha = record_hash(name) * 2
    record: IngestBatch = register_batch(
        engine,
        source_system=system,
        format="test",
        landed_sha256=sha,
        landed_path=sha,
        original_name=name,
        size_bytes=1,
    )
    return write_batch(engine, record, chunks)


def measurement_chunk(rows: pa.Table) -> ParsedChunk:
    parsed = ParsedChunk()
    parsed.add_rows("measurement", rows)
    return parsed


def values(engine: Engine) -> dict[int, float]:
    table = engine.execute(engine.table("measurement"))
    return dict(
        zip(
            table.column("measurement_id").to_pylist(),
            table.column("value_as_number").to_pylist(),
            strict=True,
        )
    )


def test_newer_version_replaces_the_row_and_keeps_its_id(lake: Engine) -> None:
    write(lake, "a", measurement_chunk(measurements(("M1", 1, 5.0))))
    summary = write(lake, "b", measurement_chunk(measurements(("M1", 2, 6.5))))
    assert (summary.loaded, summary.updated) == (0, 1)
    assert values(lake) == {row_id("measurement", "lis", "M1"): 6.5}
    records = lake.execute(lake.table("source_record")).to_pylist()
    history = {r["source_version"]: r for r in records if r["cdm_table"] == "measurement"}
    assert history[1]["is_current"] is False
    assert history[1]["superseded_at"] is not None
    assert history[2]["is_current"] is True


def test_older_version_is_ignored(lake: Engine) -> None:
    write(lake, "a", measurement_chunk(measurements(("M1", 2, 6.5))))
    summary = write(lake, "b", measurement_chunk(measurements(("M1", 1, 5.0))))
    assert (summary.loaded, summary.updated, summary.stale) == (0, 0, 1)
    assert list(values(lake).values()) == [6.5]
    assert lake.count("source_record") == 1


def test_same_version_with_other_content_is_restated(lake: Engine) -> None:
    write(lake, "a", measurement_chunk(measurements(("M1", 1, 5.0))))
    summary = write(lake, "b", measurement_chunk(measurements(("M1", 1, 5.5))))
    assert summary.updated == 1
    assert list(values(lake).values()) == [5.5]
    assert lake.count("source_record") == 1


def test_duplicates_in_one_batch_highest_version_wins(lake: Engine) -> None:
    summary = write(
        lake,
        "a",
        measurement_chunk(
            measurements(("M1", 3, 7.0), ("M1", 1, 5.0), ("M2", 1, 1.0), ("M2", 1, 2.0))
        ),
    )
    assert summary.duplicates == 2
    assert sorted(values(lake).values()) == [2.0, 7.0]  # equal versions: the later row


def test_duplicates_across_chunks_of_one_batch(lake: Engine) -> None:
    write(
        lake,
        "a",
        measurement_chunk(measurements(("M1", 2, 7.0))),
        measurement_chunk(measurements(("M1", 1, 5.0))),
    )
    assert list(values(lake).values()) == [7.0]


def test_patient_versions_all_kept_in_pii_person_follows_newest(lake: Engine) -> None:
    first, second = ParsedChunk(), ParsedChunk()
    first.patients.append(patients(("P1", 2, "138-2")))
    second.patients.append(patients(("P1", 1, "138-1"), ("P1", 3, "138-3")))
    write(lake, "a", first)
    write(lake, "b", second)
    pii = lake.execute(lake.table("pii_person")).to_pylist()
    assert sorted(r["phone"] for r in pii) == ["138-1", "138-2", "138-3"]
    (person,) = lake.execute(lake.table("person")).to_pylist()
    assert person["year_of_birth"] == 1983
    assert lake.count("source_patient") == 1


def merge_chunk(surviving: str, merged: str, version: int = 10) -> ParsedChunk:
    return ParsedChunk(merges=[PatientMerge(surviving, merged, version)])


def test_merge_repoints_rows_and_later_rows_follow(lake: Engine) -> None:
    setup = ParsedChunk()
    setup.patients.append(patients(("P1", 1, "1"), ("P2", 1, "2")))
    rows = measurements(("M1", 1, 1.0))
    rows = rows.set_column(3, "_source_patient_id", pa.array(["P2"]))
    setup.add_rows("measurement", rows)
    write(lake, "setup", setup)
    p1, p2 = initial_person_id("lis", "P1"), initial_person_id("lis", "P2")

    summary = write(lake, "merge", merge_chunk("P1", "P2"))
    assert [(m.surviving_person_id, m.merged_person_id) for m in summary.merges] == [(p1, p2)]
    assert set(lake.execute(lake.table("measurement")).column("person_id").to_pylist()) == {p1}
    assert lake.execute(lake.table("person")).column("person_id").to_pylist() == [p1]
    links = lake.execute(lake.table("source_patient"))
    assert set(links.column("person_id").to_pylist()) == {p1}
    assert set(lake.execute(lake.table("pii_person")).column("person_id").to_pylist()) == {p1}

    later = measurements(("M9", 1, 9.0)).set_column(3, "_source_patient_id", pa.array(["P2"]))
    write(lake, "later", measurement_chunk(later))
    assert set(lake.execute(lake.table("measurement")).column("person_id").to_pylist()) == {p1}


def test_reapplying_a_merge_changes_nothing(lake: Engine) -> None:
    write(lake, "m1", merge_chunk("P1", "P2"))
    records = lake.count("source_record")
    summary = write(lake, "m2", merge_chunk("P1", "P2"))
    assert summary.merges == []
    assert lake.count("source_record") == records


def test_merge_chains_end_at_the_last_survivor(lake: Engine) -> None:
    write(lake, "m", ParsedChunk(merges=[PatientMerge("B", "A", 1), PatientMerge("C", "B", 2)]))
    links = lake.execute(lake.table("source_patient")).to_pylist()
    assert {r["person_id"] for r in links} == {initial_person_id("lis", "C")}


def test_omics_samples_upsert_and_link_known_patients(lake: Engine) -> None:
    setup = ParsedChunk()
    setup.patients.append(patients(("P1", 1, "1")))
    write(lake, "p", setup, system="biobank")
    sample = {
        "sample_id": ["S1", "S2"],
        "assay": ["genotype", "genotype"],
        "file_uri": ["g.bed", "g.bed"],
        "file_format": ["bed", "bed"],
        "sha256": ["0" * 64, "0" * 64],
        "source_system": ["biobank", "biobank"],
        "source_patient_id": ["P1", "P404"],
    }
    write(lake, "s1", ParsedChunk(omics_samples=[pa.table(sample)]), system="biobank")
    write(lake, "s2", ParsedChunk(omics_samples=[pa.table(sample)]), system="biobank")
    rows = {r["sample_id"]: r for r in lake.execute(lake.table("omics_sample")).to_pylist()}
    assert len(rows) == 2
    assert rows["S1"]["person_id"] == initial_person_id("biobank", "P1")
    assert rows["S2"]["person_id"] is None


def test_higher_version_with_same_content_changes_nothing(lake: Engine) -> None:
    """A full export sent again, versioned by receive time: no churn."""
    rows = measurements(("M1", 1, 5.0))
    write(lake, "a", measurement_chunk(rows))
    again = rows.set_column(1, "_source_version", pa.array([2], pa.int64()))
    summary = write(lake, "b", measurement_chunk(again))
    assert (summary.loaded, summary.updated, summary.unchanged) == (0, 0, 1)
    assert lake.count("source_record") == 1


def test_patient_sent_again_unchanged_adds_no_identifier_version(lake: Engine) -> None:
    first = patients(("P1", 1, "138"))
    again = first.set_column(1, "_source_version", pa.array([9], pa.int64()))
    write(lake, "a", ParsedChunk(patients=[first]))
    write(lake, "b", ParsedChunk(patients=[again]))
    assert lake.count("pii_person") == 1
    assert lake.count("source_record") == 1


def test_secondary_codes_without_vocabulary_are_not_unmapped_codes(lake: Engine) -> None:
    buffer = TableBuffer(
        "measurement",
        [*MEASUREMENT_COLUMNS, "value_source_value", "unit_source_value", "_unit_vocabulary"],
    )
    buffer.append(
        _source_record_id="M1",
        _source_version=1,
        _record_hash="h",
        _source_patient_id="P1",
        measurement_date=dt.date(2021, 6, 1),
        measurement_source_value="LOCAL-1",
        value_as_number=120.0,
        value_source_value="120",
        unit_source_value="mg/dL",
        _unit_vocabulary="UCUM",
    )
    summary = write(lake, "a", measurement_chunk(buffer.to_arrow()))
    (row,) = lake.execute(lake.table("measurement")).to_pylist()
    assert row["measurement_concept_id"] == 0  # the table's own code: 0 and counted
    assert row["value_as_concept_id"] is None  # a number, not a code
    assert row["unit_concept_id"] not in (None, 0)  # UCUM mg/dL is in the vocabulary
    assert summary.unmapped == {("measurement", "(none)"): 1}


def test_patient_versions_in_several_chunks_of_one_batch_are_all_kept(lake: Engine) -> None:
    first, second = ParsedChunk(), ParsedChunk()
    first.patients.append(patients(("P1", 1, "138-1")))
    second.patients.append(patients(("P1", 2, "138-2")))
    write(lake, "a", first, second)
    pii = lake.execute(lake.table("pii_person")).to_pylist()
    assert sorted(r["phone"] for r in pii) == ["138-1", "138-2"]
    write(lake, "a", first, second)  # the same batch read again changes nothing
    assert lake.count("pii_person") == 2


def test_skipped_provenance_lookups_answer_what_the_query_does(
    lake: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # CurrentLookups skips the query for a table the source had no provenance of, unless
    # an id was staged before by the same writer; its answers must equal the query's.
    from medlake.ingest import versions

    query = versions.current_records_by_table
    write(lake, "before", measurement_chunk(measurements(("M1", 1, 5.0))))
    asked: list[set[str]] = []

    def counted(engine: Engine, system: str, ids: dict) -> dict:
        asked.append(set(ids))
        return query(engine, system, ids)

    monkeypatch.setattr(versions, "current_records_by_table", counted)
    lookups = versions.CurrentLookups(lake, "lis")
    steps = [
        {
            "measurement": pa.chunked_array([["M1", "M2"]]),
            "observation": pa.chunked_array([["O1"]]),
        },
        {"observation": pa.chunked_array([["O2"]])},
        {"observation": pa.chunked_array([["O3", "O1"]])},  # O1 staged before: asked
    ]
    for step in steps:
        got = lookups.current(step)
        want = query(lake, "lis", step)
        assert sorted(got) == sorted(want)
        for table in want:
            assert got[table].schema == want[table].schema
            assert got[table].to_pylist() == want[table].to_pylist()
    assert asked == [{"measurement"}, {"observation"}]
    assert lookups.had == {"measurement"}


def test_seen_keys_answer_as_a_set_does() -> None:
    # The staged-ids structure of CurrentLookups (sorted runs merged as they grow) must
    # say "seen" exactly when a Python set of every key added so far would.
    import numpy as np

    from medlake.ingest.versions import SeenKeys

    rng = np.random.default_rng(7)
    seen, reference = SeenKeys(), set()
    for size in [1, 5, 50, 3, 200, 200, 1000, 7, 4000, 10]:
        fresh = rng.integers(-(2**62), 2**62, size, dtype=np.int64)
        some_old = rng.choice(np.array(sorted(reference) or [0], np.int64), 2)
        for probe in (fresh, some_old, np.concatenate([fresh, some_old])):
            assert seen.any_of(probe) == any(int(v) in reference for v in probe)
        seen.add(fresh)
        reference.update(int(v) for v in fresh)
    assert len(seen.runs) < 10  # merged, not one run per chunk


def test_lookups_keyed_by_row_ids_ask_on_a_shared_key(
    lake: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Two records whose keys collide only cost a query (never a wrong skip), and an id
    # staged under its row id is found again when asked without keys.
    from medlake.ingest import versions

    asked: list[set[str]] = []
    query = versions.current_records_by_table

    def counted(engine: Engine, system: str, ids: dict) -> dict:
        asked.append(set(ids))
        return query(engine, system, ids)

    monkeypatch.setattr(versions, "current_records_by_table", counted)
    lookups = versions.CurrentLookups(lake, "lis")
    ids = pa.chunked_array([["O1"]])
    lookups.current(
        {"observation": ids}, {"observation": pa.array([row_id("observation", "lis", "O1")])}
    )
    lookups.current({"observation": pa.chunked_array([["O2"]])}, {"observation": pa.array([5])})
    assert asked == []
    lookups.current({"observation": pa.chunked_array([["O3"]])}, {"observation": pa.array([5])})
    assert asked == [{"observation"}]  # same key as O2: asked
    lookups.current({"observation": ids})  # keys derived here: O1's row id, staged before
    assert asked == [{"observation"}, {"observation"}]

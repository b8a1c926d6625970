"""A large FHIR NDJSON file parsed by several processes gives the one reader's chunks.

``FhirReader.chunk_plan`` finds the chunks' byte ranges by counting lines;
``prefetch_ranges_in_processes`` has children parse them and hands them back in order.
The reference is the plain sequential ``FhirReader.read`` of the same file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from medlake.ingest import prefetch
from medlake.ingest.fhir import FhirReader
from medlake.ingest.prefetch import ReadingProcesses, prefetch_ranges_in_processes
from medlake.ingest.staging import ParsedChunk, SourceContext

RECEIVED = dt.datetime(2026, 1, 1)


def _same_chunks(fast: list[ParsedChunk], slow: list[ParsedChunk]) -> None:
    assert len(fast) == len(slow)
    for a, b in zip(fast, slow, strict=True):
        assert a.records_read == b.records_read
        assert a.skipped == b.skipped
        assert [(q.location, q.reason, q.raw_payload, q.field) for q in a.quarantine] == [
            (q.location, q.reason, q.raw_payload, q.field) for q in b.quarantine
        ]
        assert a.merges == b.merges
        assert sorted(a.tables) == sorted(b.tables)
        for table in a.tables:
            left = pa.concat_tables(a.tables[table], promote_options="permissive")
            right = pa.concat_tables(b.tables[table], promote_options="permissive")
            # The reader adds the retraction flag only where a row is retracted; the
            # writer reads a missing flag as False.
            left, right = _flags_filled(left), _flags_filled(right)
            assert left.schema == right.schema, table
            assert left.to_pylist() == right.to_pylist(), table


def _flags_filled(rows: pa.Table) -> pa.Table:
    if "_retracted" not in rows.column_names:
        return rows
    flags = pc.fill_null(rows.column("_retracted"), False)
    if not pc.any(flags).as_py():
        return rows.drop_columns(["_retracted"])
    return rows.set_column(rows.column_names.index("_retracted"), "_retracted", flags)


def _observation(i: int, **extra: object) -> dict:
    return {
        "resourceType": "Observation", "id": f"o{i}", "status": "final",
        "category": [{"coding": [{"code": "laboratory"}]}],
        "subject": {"reference": f"Patient/p{i % 3}"},
        "encounter": {"reference": f"Encounter/e{i % 2}"},
        "effectiveDateTime": "2024-06-30T08:45:00+08:00",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2345-7"}]},
        "valueQuantity": {"value": 5.5 + i, "unit": "mmol/L",
                          "system": "http://unitsofmeasure.org", "code": "mmol/L"},
        "referenceRange": [{"text": "3.9-6.1"}], **extra,
    }  # fmt: skip


def _context(path: Path) -> SourceContext:
    return SourceContext("emr", "b1", path, path.name, RECEIVED)


def _parallel(path: Path, size: int, workers: int) -> list:
    plan = FhirReader(size).chunk_plan(path)
    assert plan is not None
    return list(prefetch_ranges_in_processes("fhir", _context(path), plan, workers))


def test_synthetic_observations_in_two_processes(hospital_lake) -> None:
    path = hospital_lake.hospital / "emr" / "Observation.ndjson"
    sequential = list(FhirReader(1000).read(_context(path)))
    assert len(sequential) > 3
    _same_chunks(_parallel(path, 1000, 2), sequential)


def _in_pieces(path: Path, size: int, pieces: int, workers: int) -> list:
    plan = FhirReader(size).chunk_plan(path, pieces)
    assert plan is not None
    return list(ReadingProcesses("fhir", _context(path), plan, workers, group=pieces))


def test_chunks_parsed_in_pieces_are_the_readers_chunks(hospital_lake) -> None:
    # Each chunk parsed as two pieces by two processes and joined: a file of one chunk
    # is parsed by both, and the writer still sees the sequential reader's chunks.
    path = hospital_lake.hospital / "emr" / "Observation.ndjson"
    for size in (1000, 10**9):
        sequential = list(FhirReader(size).read(_context(path)))
        plan = FhirReader(size).chunk_plan(path, 2)
        assert plan is not None
        assert len(plan) == 2 * len(sequential) - (sequential[-1].records_read <= size // 2)
        _same_chunks(_in_pieces(path, size, 2, 2), sequential)


def test_chunks_through_the_queue_equal_shared_memory(hospital_lake, monkeypatch) -> None:
    # Shared memory (memfd) where the system has it; the pickled queue elsewhere.
    path = hospital_lake.hospital / "emr" / "Observation.ndjson"
    shared = _parallel(path, 1000, 2)
    monkeypatch.setattr(prefetch, "_SHARED_MEMORY", False)
    _same_chunks(shared, _parallel(path, 1000, 2))


def test_reading_processes_closed_unread_end_their_children(tmp_path: Path) -> None:
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"".join(orjson.dumps(_observation(i)) + b"\n" for i in range(40)))
    plan = FhirReader(2).chunk_plan(path)
    assert plan is not None
    readers = ReadingProcesses("fhir", _context(path), plan, 2, depth=1)
    readers.close()  # e.g. started ahead for a batch that turned out loaded
    assert all(not child.is_alive() for child in readers.children)


@pytest.mark.parametrize("size", [1, 3, 5, 100])
def test_blank_and_bad_lines_keep_their_chunks(tmp_path: Path, size: int) -> None:
    lines = []
    for i in range(17):
        lines.append(orjson.dumps(_observation(i)) + b"\n")
        if i % 4 == 0:
            lines.append(b"  \r\n" if i % 8 else b"\n")
        if i % 5 == 0:
            lines.append(b'{"resourceType": "Observation", "id": \n')
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"".join(lines) + orjson.dumps(_observation(99)))  # no final newline
    for workers in (1, 2, 3):
        _same_chunks(_parallel(path, size, workers), list(FhirReader(size).read(_context(path))))
    if size % 2 == 0:
        sequential = list(FhirReader(size).read(_context(path)))
        _same_chunks(_in_pieces(path, size, 2, 2), sequential)


def test_no_plan_for_bundles_nor_documents(tmp_path: Path) -> None:
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": _observation(1)}]}  # fmt: skip
    ndjson = tmp_path / "mixed.ndjson"
    ndjson.write_bytes(orjson.dumps(_observation(0)) + b"\n" + orjson.dumps(bundle) + b"\n")
    assert FhirReader(1).chunk_plan(ndjson) is None
    document = tmp_path / "bundle.json"
    document.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    assert FhirReader(1).chunk_plan(document) is None


def test_a_failing_child_is_raised_in_the_consumer(tmp_path: Path) -> None:
    path = tmp_path / "Observation.ndjson"
    path.write_bytes(b"".join(orjson.dumps(_observation(i)) + b"\n" for i in range(10)))
    plan = FhirReader(2).chunk_plan(path)
    assert plan is not None
    path.unlink()  # the children cannot open it
    with pytest.raises(FileNotFoundError, match=r"Observation\.ndjson"):
        list(prefetch_ranges_in_processes("fhir", _context(path), plan, 2))

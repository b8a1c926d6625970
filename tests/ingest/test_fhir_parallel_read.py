"""A large FHIR NDJSON file parsed by several processes gives the one reader's chunks.

``FhirReader.chunk_plan`` finds the chunks' byte ranges by counting lines;
``prefetch_ranges_in_processes`` has children parse them and hands them back in order.
The reference is the plain sequential ``FhirReader.read`` of the same file.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pytest
from tests.ingest.test_fhir_sql import _observation, _same_chunks

from medlake.ingest.fhir import FhirReader
from medlake.ingest.prefetch import prefetch_ranges_in_processes
from medlake.ingest.staging import SourceContext

RECEIVED = dt.datetime(2026, 1, 1)


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

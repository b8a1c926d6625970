"""The FHIR SQL fast path (medlake.ingest.fhir_sql) against the Python path as reference.

Both paths read the same NDJSON; the chunks they give (rows of every table in order,
quarantine entries, counts, merges) must be equal, and so must the lakes two ingests
make under a fixed clock — every ingest table, row for row.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pytest

import medlake.service.ingest as service
from medlake.config import open_workspace, write_settings
from medlake.engine.arrow_sql import arrow_sql_for
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.ingest.fhir import ARROW_SQL, FhirReader
from medlake.ingest.staging import ParsedChunk, SourceContext
from medlake.service.workspace import init_workspace, open_lake

RECEIVED = dt.datetime(2026, 1, 1)


def _read(path: Path, run: object | None, chunk_size: int = 50_000) -> list[ParsedChunk]:
    options = {ARROW_SQL: run} if run is not None else {}
    context = SourceContext("emr", "b1", path, path.name, RECEIVED, options=options)
    return list(FhirReader(chunk_size).read(context))


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
            # The Python path adds the retraction flag only where a row is retracted; the
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


@pytest.fixture
def run():  # a local SQL runner on an in-memory DuckDB engine
    engine = DuckDBEngine()
    runner = arrow_sql_for(engine)
    assert runner is not None
    yield runner
    runner.close()
    engine.close()


def test_synthetic_emr_chunks_are_the_python_paths(hospital_lake, run) -> None:
    for path in sorted((hospital_lake.hospital / "emr").glob("*.ndjson")):
        _same_chunks(_read(path, run), _read(path, None))


def _line(resource: dict) -> bytes:
    return orjson.dumps(resource) + b"\n"


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
    }


def test_edge_cases_fall_back_and_keep_line_order(tmp_path: Path, run) -> None:
    """Unusual lines go the Python way; chunks of a few lines keep their boundaries."""
    lines = [
        _line(_observation(1)),
        b"\n",
        _line(_observation(2, meta={"versionId": "3"})),
        _line(_observation(3, meta={"lastUpdated": "2024-01-01T00:00:00Z"})),
        _line(_observation(4, status="entered-in-error")),
        b'{"resourceType":"Observation","id":"o5",,}\n',
        _line(_observation(6, category=[{"coding": [{"code": "social-history"}]}])),
        _line(_observation(7, effectiveDateTime="2024-02-30")),
        _line(_observation(8, effectiveDateTime="2024")),
        _line(_observation(9, referenceRange=[{"text": "<5.2"}],
                           component=[{"code": {"coding": [{"system": "http://loinc.org",
                                                            "code": "8480-6"}]},
                                       "valueQuantity": {"value": 120, "unit": "mm[Hg]"}}])),
        _line(_observation(10, subject={"reference": "http://x/fhir/Patient/p1"})),
        _line(_observation(11, valueQuantity={"value": True})),
        _line({"resourceType": "Encounter", "id": "e0", "subject": {"reference": "Patient/p0"},
               "class": {"code": "IMP"}, "period": {"start": "2024-06-30", "end": "2024-07-02"}}),
        _line({"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/p1"},
               "period": {"end": "2024-07-02"}}),
        _line({"resourceType": "Patient", "id": "p0", "gender": "female"}),
        _line({"resourceType": "Flag", "id": "f1"}),
        _line(_observation(1, valueQuantity={"value": 7, "unit": "mmol/L"})),  # a duplicate id
        _line({"resourceType": "MedicationRequest", "id": "m1",
               "subject": {"reference": "Patient/p2"}, "authoredOn": "2024-05-01",
               "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc",
                                                         "code": "A10BA02"}]},
               "dispenseRequest": {"expectedSupplyDuration": {"value": 2, "code": "wk"}},
               "dosageInstruction": [{"text": "bid", "route": {"text": "oral"}}]}),
        _line({"resourceType": "Condition", "id": "c1", "subject": {"reference": "Patient/p2"},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm",
                                    "code": "E11.9"}]}, "recordedDate": "2023-03-04"}),
        _line({"resourceType": "Procedure", "id": "x1", "subject": {"reference": "Patient/p2"},
               "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-9-cm",
                                    "code": "88.56"}]}, "performedDateTime": "2023-03-04"}),
        _line({"resourceType": "Specimen", "id": "s1", "subject": {"reference": "Patient/p2"},
               "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0487",
                                    "code": "SER"}]}, "receivedTime": "2023-03-04T10:00:00Z"}),
    ]
    path = tmp_path / "mixed.ndjson"
    path.write_bytes(b"".join(lines))
    for size in (3, 7, 50_000):
        _same_chunks(_read(path, run, size), _read(path, None, size))
    # A Bundle line sends the rest of the file the Python way, same chunks as before.
    bundle = {"resourceType": "Bundle", "type": "collection",
              "entry": [{"resource": _observation(20 + i)} for i in range(5)]}
    path.write_bytes(b"".join([*lines[:6], _line(bundle), *lines[6:]]))
    for size in (3, 50_000):
        _same_chunks(_read(path, run, size), _read(path, None, size))


INGEST_TABLES = ("person", "death", "visit_occurrence", "condition_occurrence", "drug_exposure",
                 "procedure_occurrence", "measurement", "observation", "note", "specimen",
                 "observation_period", "source_patient", "pii_person", "source_record",
                 "quarantine", "ingest_batch")


def _ingest(root: Path, emr: Path, fast: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    workspace = root / ("fast" if fast else "python")
    init_workspace(workspace, name="t")
    settings = open_workspace(workspace).settings
    settings.empi.link_after_ingest = False
    settings.quality.run_after_ingest = False
    write_settings(workspace / "medlake.toml", settings)
    monkeypatch.setattr(service, "_FHIR_SQL", fast)
    service.ingest_paths(workspace, [emr], source_system="emr")
    with open_lake(open_workspace(workspace)) as engine:
        return {t: engine.execute(engine.table(t)) for t in INGEST_TABLES}


@pytest.mark.slow
def test_lake_is_the_python_paths(hospital_lake, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MEDLAKE_CLOCK", "2026-01-02T03:04:05")
    emr = hospital_lake.hospital / "emr"
    fast = _ingest(tmp_path, emr, True, monkeypatch)
    slow = _ingest(tmp_path, emr, False, monkeypatch)
    assert fast["measurement"].num_rows > 1000
    for table in INGEST_TABLES:
        left, right = fast[table], slow[table]
        keys = [(c, "ascending") for c in left.column_names
                if not pa.types.is_nested(left.schema.field(c).type)]
        assert left.sort_by(keys).to_pylist() == right.sort_by(keys).to_pylist(), table

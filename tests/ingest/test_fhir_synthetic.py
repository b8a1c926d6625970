"""The FHIR reader on the synthetic hospital's EMR export: accounting, defects, references."""

from __future__ import annotations

import csv
import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
import pytest

from medlake.ingest.fhir import FhirReader
from medlake.ingest.staging import ParsedChunk, SourceContext, record_hash
from medlake.synth import generate_hospital
from medlake.synth.emr import fhir_patient_id

RECEIVED = dt.datetime(2026, 1, 1)
SEED = 7


@dataclass
class Read:
    """Everything the reader gave for one file."""

    chunks: list[ParsedChunk] = field(default_factory=list)

    def table(self, name: str) -> pa.Table | None:
        parts = [t for c in self.chunks for t in c.tables.get(name, [])]
        return pa.concat_tables(parts) if parts else None

    def patients(self) -> pa.Table | None:
        parts = [t for c in self.chunks for t in c.patients]
        return pa.concat_tables(parts) if parts else None

    @property
    def quarantine(self) -> list:
        return [q for c in self.chunks for q in c.quarantine]

    @property
    def records(self) -> int:
        return sum(c.records_read for c in self.chunks)


def read_file(path: Path, chunk_size: int = 50_000) -> Read:
    context = SourceContext("emr", "batch-1", path, path.name, RECEIVED)
    return Read(list(FhirReader(chunk_size).read(context)))


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("hospital")
    generate_hospital(root, 300, SEED, workers=1)
    return root


@pytest.fixture(scope="module")
def emr(hospital: Path) -> dict[str, Read]:
    return {p.stem: read_file(p) for p in sorted((hospital / "emr").glob("*.ndjson"))}


@pytest.fixture(scope="module")
def defects(hospital: Path) -> list[dict[str, str]]:
    with (hospital / "truth" / "defects.csv").open(encoding="utf-8") as f:
        return [row for row in csv.DictReader(f) if row["system"] == "EMR"]


def lines_of(path: Path) -> dict[int, dict]:
    return {n: orjson.loads(line) for n, line in enumerate(path.read_bytes().splitlines(), 1)}


def staged_ids(read: Read, resource_type: str) -> list[str]:
    """The resource ids behind the staged rows (components folded into their resource)."""
    if resource_type == "Patient":
        return read.patients().column("_source_patient_id").to_pylist()
    ids = []
    for table in ("visit_occurrence", "condition_occurrence", "drug_exposure", "measurement",
                  "observation", "procedure_occurrence", "specimen", "note"):  # fmt: skip
        rows = read.table(table)
        if rows is not None:
            ids += [i.split("#")[0].removeprefix(f"{resource_type}/")
                    for i in rows.column("_source_record_id").to_pylist()]  # fmt: skip
    return ids


def test_every_emr_line_is_staged_or_quarantined(hospital: Path, emr: dict[str, Read]) -> None:
    for resource_type, read in emr.items():
        lines = lines_of(hospital / "emr" / f"{resource_type}.ndjson")
        assert read.records == len(lines)
        quarantined = {int(q.location.rsplit(":", 1)[1]) for q in read.quarantine}
        assert all(q.location.startswith(f"{resource_type}.ndjson:") for q in read.quarantine)
        staged = set(staged_ids(read, resource_type))
        expected = {r["id"] for n, r in lines.items() if n not in quarantined}
        assert staged == expected, resource_type
        assert not staged & {lines[n]["id"] for n in quarantined}
        assert not any(c.skipped for c in read.chunks)


def test_one_row_per_resource_except_components(emr: dict[str, Read]) -> None:
    for resource_type, read in emr.items():
        ids = staged_ids(read, resource_type)
        if resource_type != "Observation":
            assert len(ids) == len(set(ids)), resource_type
    bp = (
        emr["Observation"]
        .table("measurement")
        .filter(pa.compute.match_substring(pa.compute.field("_source_record_id"), "#component"))
    )
    assert set(bp.column("measurement_source_value").to_pylist()) == {"8480-6", "8462-4"}
    assert set(bp.column("unit_source_value").to_pylist()) == {"mm[Hg]"}


def test_planted_defects_are_quarantined_or_passed_through(
    emr: dict[str, Read], defects: list[dict[str, str]]
) -> None:
    assert {d["kind"] for d in defects} >= {"bad_date", "unknown_code", "missing_required_field"}
    for defect in defects:
        resource_type = Path(defect["file"]).stem
        read = emr[resource_type]
        location = f"{resource_type}.ndjson:{defect['line']}"
        entries = [q for q in read.quarantine if q.location == location]
        kind = defect["kind"]
        if kind == "bad_date" or (kind == "missing_required_field" and defect["field"] == "period"):
            assert len(entries) == 1, defect
            wanted = {"bad_date": f"{resource_type}.{defect['field']}",
                      "missing_required_field": "Encounter.period.start"}[kind]  # fmt: skip
            assert entries[0].field == wanted
            assert defect["record_id"] in entries[0].raw_payload
            if kind == "bad_date":
                assert "unparseable date" in entries[0].reason
            continue
        assert not entries, defect
        assert defect["record_id"] in staged_ids(read, resource_type)
        if kind == "unknown_code":
            table = {"Condition": "condition_occurrence", "Observation": "measurement",
                     "MedicationRequest": "drug_exposure"}[resource_type]  # fmt: skip
            rows = read.table(table).to_pylist()
            row = next(r for r in rows if r["_source_record_id"] == f"{resource_type}/"
                       f"{defect['record_id']}")  # fmt: skip
            assert row[f"{table.split('_')[0]}_source_value"] == defect["detail"]


def test_patients_missing_sex_or_birth_date_are_staged_with_nulls(
    emr: dict[str, Read], defects: list[dict[str, str]]
) -> None:
    patients = {p["_source_patient_id"]: p for p in emr["Patient"].patients().to_pylist()}
    for defect in defects:
        if defect["file"].endswith("Patient.ndjson"):
            row = patients[defect["record_id"]]
            column = {"gender": "gender_concept_id", "birthDate": "birth_date"}[defect["field"]]
            assert row[column] is None


def test_references_resolve_to_patients_and_visits_of_the_export(
    hospital: Path, emr: dict[str, Read]
) -> None:
    patients = set(emr["Patient"].patients().column("_source_patient_id").to_pylist())
    visits = {r["id"] for r in lines_of(hospital / "emr" / "Encounter.ndjson").values()}
    for read in emr.values():
        for table in {t for c in read.chunks for t in c.tables}:
            rows = read.table(table)
            assert set(rows.column("_source_patient_id").to_pylist()) <= patients
            if "_source_visit_id" in rows.column_names:
                assert set(rows.column("_source_visit_id").to_pylist()) - {None} <= visits


def test_patient_ids_are_fhir_ids_of_the_truths_emr_records(
    hospital: Path, emr: dict[str, Read]
) -> None:
    with (hospital / "truth" / "source_records.csv").open(encoding="utf-8") as f:
        mrns = [r["source_patient_id"] for r in csv.DictReader(f) if r["system"] == "EMR"]
    staged = emr["Patient"].patients().column("_source_patient_id").to_pylist()
    assert sorted(staged) == sorted(fhir_patient_id(SEED, mrn) for mrn in mrns)


def test_patient_identity_columns(hospital: Path, emr: dict[str, Read]) -> None:
    rows = emr["Patient"].patients().to_pylist()
    assert all(r["_source_version"] == SourceContext(
        "emr", "b", Path(), "", RECEIVED).default_version for r in rows)  # fmt: skip
    assert any(r["name_hanzi"] for r in rows)
    assert any(r["name_pinyin"] for r in rows)
    for r in rows:
        assert (r["name_hanzi"] is None) != (r["name_pinyin"] is None)
        assert r["gender_concept_id"] in (8507, 8532, None)
        assert r["resident_id"] is None or len(r["resident_id"]) == 18
    first = orjson.loads((hospital / "emr" / "Patient.ndjson").read_bytes().splitlines()[0])
    row = next(r for r in rows if r["_source_patient_id"] == first["id"])
    assert row["postcode"] == first["address"][0]["postalCode"]
    assert row["phone"] == first["telecom"][0]["value"]


def test_record_hash_is_the_hash_of_the_line(hospital: Path, emr: dict[str, Read]) -> None:
    line = (hospital / "emr" / "Specimen.ndjson").read_bytes().splitlines(keepends=True)[0]
    first = emr["Specimen"].table("specimen").to_pylist()[0]
    assert first["_record_hash"] == record_hash(line)


def test_small_chunks_give_the_same_rows(hospital: Path, emr: dict[str, Read]) -> None:
    path = hospital / "emr" / "Observation.ndjson"
    small = read_file(path, chunk_size=500)
    assert len(small.chunks) > 2
    assert all(c.records_read <= 500 for c in small.chunks)
    assert small.table("measurement").equals(emr["Observation"].table("measurement"))
    assert [q.location for q in small.quarantine] == [
        q.location for q in emr["Observation"].quarantine
    ]

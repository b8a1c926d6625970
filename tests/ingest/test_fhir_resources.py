"""The FHIR reader on hand-written resources and Bundles: mapping, versions, quarantine."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import orjson
import pytest

from medlake.errors import InputError
from medlake.ingest.fhir import FhirReader
from medlake.ingest.staging import ParsedChunk, PatientMerge, SourceContext

RECEIVED = dt.datetime(2026, 1, 1)
SUBJECT = {"reference": "Patient/p1"}
LAB = [
    {
        "coding": [
            {
                "system": "http://terminology.hl7.org/CodeSystem/observation-category",
                "code": "laboratory",
            }
        ]
    }
]
VITALS = [{"coding": [{"code": "vital-signs"}]}]


def loinc(code: str) -> dict[str, Any]:
    return {"coding": [{"system": "http://loinc.org", "code": code}]}


def glucose(rid: str = "o1", **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": rid,
        "status": "final",
        "category": LAB,
        "code": loinc("2345-7"),
        "subject": SUBJECT,
        "effectiveDateTime": "2024-03-05T08:30:00+08:00",
        "valueQuantity": {
            "value": 6.1,
            "unit": "mmol/L",
            "system": "http://unitsofmeasure.org",
            "code": "mmol/L",
        },
        **extra,
    }


def read(tmp_path: Path, *resources: Any, name: str = "in.ndjson") -> ParsedChunk:
    """Write ``resources`` (dicts as NDJSON lines, bytes as they are) and read them as one."""
    lines = [r if isinstance(r, bytes) else orjson.dumps(r) for r in resources]
    path = tmp_path / name
    path.write_bytes(b"\n".join(lines) + b"\n")
    return read_path(path)


def read_path(path: Path) -> ParsedChunk:
    chunks = list(FhirReader().read(SourceContext("emr", "b", path, path.name, RECEIVED)))
    assert len(chunks) == 1
    return chunks[0]


def rows(chunk: ParsedChunk, table: str) -> list[dict[str, Any]]:
    return [r for t in chunk.tables.get(table, []) for r in t.to_pylist()]


def test_sniff_knows_ndjson_and_bundles_but_not_csv() -> None:
    reader = FhirReader()
    assert reader.sniff(Path("x"), b'{"resourceType":"Patient","id":"1"}\n')
    assert reader.sniff(Path("x"), b'\xef\xbb\xbf{\n  "id": "b",\n  "resourceType": "Bundle"')
    assert not reader.sniff(Path("x"), b"MSH|^~\\&|LIS\r")
    assert not reader.sniff(Path("x"), b"id,name\n1,2\n")


def test_patient_identity(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        {
            "resourceType": "Patient",
            "id": "p1",
            "identifier": [
                {"type": {"coding": [{"code": "MR"}]}, "value": "MR1"},
                {"type": {"coding": [{"code": "NI"}]}, "value": "110105197612021940"},
            ],
            "name": [
                {"text": "陈云金", "family": "陈", "given": ["云金"]},
                {"family": "CHEN", "given": ["YUN", "JIN"]},
            ],
            "telecom": [
                {"system": "email", "value": "c@x.cn"},
                {"system": "phone", "value": "139"},
            ],
            "gender": "female",
            "birthDate": "1976-12-02",
            "deceasedDateTime": "2024-01-02T10:00:00Z",
            "address": [
                {
                    "use": "home",
                    "state": "北京市",
                    "district": "朝阳区",
                    "line": ["X路1号"],
                    "postalCode": "100020",
                }
            ],
        },
    )
    [row] = [r for t in chunk.patients for r in t.to_pylist()]
    assert row["_source_patient_id"] == "p1"
    assert (row["name_hanzi"], row["name_pinyin"]) == ("陈云金", "CHEN YUN JIN")
    assert (row["family_name"], row["given_name"]) == ("陈", "云金")
    assert row["resident_id"] == "110105197612021940"
    assert (row["sex"], row["gender_concept_id"]) == ("female", 8532)
    assert (row["phone"], row["email"]) == ("139", "c@x.cn")
    assert (row["address"], row["postcode"]) == ("北京市朝阳区X路1号", "100020")
    assert row["birth_date"] == dt.date(1976, 12, 2)
    assert row["death_date"] == dt.date(2024, 1, 2)


def test_patient_links_become_merges(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        {
            "resourceType": "Patient",
            "id": "old",
            "meta": {"versionId": "3"},
            "link": [{"type": "replaced-by", "other": {"reference": "Patient/new"}}],
        },
        {
            "resourceType": "Patient",
            "id": "new",
            "link": [
                {"type": "replaces", "other": {"reference": "Patient/older"}},
                {"type": "seealso", "other": {"reference": "Patient/x"}},
            ],
        },
    )
    default = SourceContext("emr", "b", tmp_path, "", RECEIVED).default_version
    assert chunk.merges == [PatientMerge("new", "old", 3), PatientMerge("new", "older", default)]


def test_encounter_visit_and_references(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        {
            "resourceType": "Encounter",
            "id": "e1",
            "class": {"code": "IMP"},
            "subject": SUBJECT,
            "period": {"start": "2024-03-01T09:00:00+08:00", "end": "2024-03-05"},
        },
        {
            "resourceType": "Encounter",
            "id": "e2",
            "class": {"code": "AMB"},
            "subject": {"reference": "https://emr.example.cn/fhir/Patient/p1/_history/2"},
            "period": {"start": "2024-04-01"},
        },
        glucose(encounter={"reference": "Encounter/e1"}),
    )
    visits = rows(chunk, "visit_occurrence")
    assert [(v["_source_record_id"], v["visit_concept_id"]) for v in visits] == [
        ("e1", 9201),
        ("e2", 9202),
    ]
    assert visits[0]["visit_start_datetime"] == dt.datetime(2024, 3, 1, 9)
    assert visits[0]["visit_end_date"] == dt.date(2024, 3, 5)
    assert visits[1]["visit_end_date"] == dt.date(2024, 4, 1)
    assert visits[1]["_source_patient_id"] == "p1"
    [lab] = rows(chunk, "measurement")
    assert (lab["_source_visit_id"], lab["_source_patient_id"]) == ("e1", "p1")


def test_condition_code_systems(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        {
            "resourceType": "Condition",
            "id": "c1",
            "subject": SUBJECT,
            "recordedDate": "2024-02",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "44054006"}]},
        },
        {
            "resourceType": "Condition",
            "id": "c2",
            "subject": SUBJECT,
            "onsetDateTime": "2023-01-05",
            "code": {
                "coding": [
                    {"system": "http://local/codes", "code": "X"},
                    {"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"},
                ]
            },
        },
    )
    found = {r["_source_record_id"]: r for r in rows(chunk, "condition_occurrence")}
    assert found["Condition/c1"]["_condition_vocabulary"] == "SNOMED"
    assert found["Condition/c1"]["condition_start_date"] == dt.date(2024, 2, 1)
    assert found["Condition/c2"]["condition_source_value"] == "E11.9"
    assert found["Condition/c2"]["_condition_vocabulary"] == "ICD10CM"
    assert {r["condition_type_concept_id"] for r in found.values()} == {32817}


def test_drugs_from_requests_statements_and_immunizations(tmp_path: Path) -> None:
    atc = {"coding": [{"system": "http://www.whocc.no/atc", "code": "A10BA02"}]}
    chunk = read(
        tmp_path,
        {
            "resourceType": "MedicationRequest",
            "id": "m1",
            "subject": SUBJECT,
            "medicationCodeableConcept": atc,
            "authoredOn": "2024-03-01T10:00:00+08:00",
            "dosageInstruction": [
                {
                    "text": "0.5g tid",
                    "route": {"text": "口服"},
                    "doseAndRate": [{"doseQuantity": {"value": 0.5, "code": "g"}}],
                }
            ],
            "dispenseRequest": {
                "expectedSupplyDuration": {"value": 2, "code": "wk"},
                "quantity": {"value": 42},
                "numberOfRepeatsAllowed": 1,
            },
        },
        {
            "resourceType": "MedicationStatement",
            "id": "m1",
            "subject": SUBJECT,
            "medicationCodeableConcept": {
                "coding": [
                    {"system": "http://www.nlm.nih.gov/research/umls/rxnorm", "code": "860975"}
                ]
            },
            "effectivePeriod": {"start": "2024-01-01", "end": "2024-02-01"},
        },
        {
            "resourceType": "Immunization",
            "id": "i1",
            "patient": SUBJECT,
            "lotNumber": "L7",
            "vaccineCode": {"coding": [{"system": "http://hl7.org/fhir/sid/cvx", "code": "140"}]},
            "occurrenceDateTime": "2023-10-01",
        },
        {
            "resourceType": "MedicationRequest",
            "id": "m2",
            "subject": SUBJECT,
            "medicationReference": {"reference": "Medication/x"},
            "authoredOn": "2024-03-01",
        },
    )
    found = {r["_source_record_id"]: r for r in rows(chunk, "drug_exposure")}
    request = found["MedicationRequest/m1"]
    assert (request["days_supply"], request["quantity"], request["refills"]) == (14, 42.0, 1)
    assert request["drug_exposure_end_date"] == dt.date(2024, 3, 14)
    assert (request["route_source_value"], request["dose_unit_source_value"]) == ("口服", "g")
    assert (request["sig"], request["_drug_vocabulary"]) == ("0.5g tid", "ATC")
    statement = found["MedicationStatement/m1"]
    assert statement["_drug_vocabulary"] == "RxNorm"
    assert statement["drug_exposure_end_date"] == dt.date(2024, 2, 1)
    vaccine = found["Immunization/i1"]
    assert (vaccine["drug_source_value"], vaccine["_drug_vocabulary"]) == ("140", "CVX")
    assert vaccine["lot_number"] == "L7"
    [entry] = chunk.quarantine
    assert (entry.location, entry.field) == ("in.ndjson:4", "MedicationRequest.medication[x]")


def test_observations_labs_vitals_components_and_others(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        glucose(referenceRange=[{"text": "3.9-6.1"}], interpretation=[{"coding": [{"code": "H"}]}]),
        {
            "resourceType": "Observation",
            "id": "bp",
            "category": VITALS,
            "subject": SUBJECT,
            "code": loinc("85354-9"),
            "effectiveDateTime": "2024-03-05",
            "component": [
                {
                    "code": loinc("8480-6"),
                    "valueQuantity": {
                        "value": 130,
                        "code": "mm[Hg]",
                        "system": "http://unitsofmeasure.org",
                    },
                },
                {"code": loinc("8462-4"), "valueQuantity": {"value": 85, "code": "mm[Hg]"}},
            ],
        },
        {
            "resourceType": "Observation",
            "id": "hbsag",
            "category": LAB,
            "subject": SUBJECT,
            "code": loinc("5196-1"),
            "effectiveDateTime": "2024-03-05",
            "valueCodeableConcept": {
                "coding": [{"system": "http://loinc.org", "code": "LA6576-8"}]
            },
        },
        {
            "resourceType": "Observation",
            "id": "smoke",
            "subject": SUBJECT,
            "category": [{"coding": [{"code": "social-history"}]}],
            "code": loinc("72166-2"),
            "effectiveDateTime": "2024-03-05",
            "valueString": "never smoked",
        },
    )
    found = {r["_source_record_id"]: r for r in rows(chunk, "measurement")}
    assert set(found) == {
        "Observation/o1",
        "Observation/bp#component[0]",
        "Observation/bp#component[1]",
        "Observation/hbsag",
    }
    lab = found["Observation/o1"]
    assert (lab["value_as_number"], lab["unit_source_value"], lab["_unit_vocabulary"]) == (
        6.1,
        "mmol/L",
        "UCUM",
    )
    assert (lab["range_low"], lab["range_high"]) == (3.9, 6.1)
    assert lab["measurement_type_concept_id"] == 32856
    assert lab["measurement_datetime"] == dt.datetime(2024, 3, 5, 8, 30)
    assert found["Observation/bp#component[1]"]["value_as_number"] == 85
    assert found["Observation/bp#component[0]"]["measurement_type_concept_id"] == 32817
    assert found["Observation/hbsag"]["value_source_value"] == "LA6576-8"
    assert found["Observation/hbsag"]["_value_vocabulary"] == "LOINC"
    [other] = rows(chunk, "observation")
    assert (other["observation_source_value"], other["value_as_string"]) == (
        "72166-2",
        "never smoked",
    )


def test_procedure_specimen_report_and_allergy(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        {
            "resourceType": "Procedure",
            "id": "pr",
            "subject": SUBJECT,
            "performedDateTime": "2024-01-02",
            "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-9-cm", "code": "45.13"}]},
        },
        {
            "resourceType": "Specimen",
            "id": "s1",
            "subject": SUBJECT,
            "accessionIdentifier": {"value": "A1"},
            "receivedTime": "2024-01-02T08:00:00+08:00",
            "type": {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/v2-0487", "code": "SER"}
                ]
            },
        },
        {
            "resourceType": "DiagnosticReport",
            "id": "d1",
            "subject": SUBJECT,
            "code": loinc("24323-8"),
            "issued": "2024-01-02T12:00:00+08:00",
            "conclusion": "normal",
        },
        {
            "resourceType": "AllergyIntolerance",
            "id": "a1",
            "patient": SUBJECT,
            "criticality": "high",
            "code": {"coding": [{"system": "http://snomed.info/sct", "code": "91936005"}]},
            "recordedDate": "2020-05-01",
        },
    )
    [procedure] = rows(chunk, "procedure_occurrence")
    assert (procedure["procedure_source_value"], procedure["_procedure_vocabulary"]) == (
        "45.13",
        "ICD9Proc",
    )
    [specimen] = rows(chunk, "specimen")
    assert (specimen["specimen_source_value"], specimen["_specimen_vocabulary"]) == (
        "serum",
        "medlake",
    )
    assert (specimen["specimen_source_id"], specimen["specimen_date"]) == (
        "A1",
        dt.date(2024, 1, 2),
    )
    found = {r["_source_record_id"]: r for r in rows(chunk, "observation")}
    assert found["DiagnosticReport/d1"]["value_as_string"] == "normal"
    assert found["AllergyIntolerance/a1"]["qualifier_source_value"] == "high"
    assert found["AllergyIntolerance/a1"]["_observation_vocabulary"] == "SNOMED"


def test_two_versions_of_one_observation_are_both_staged(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        glucose(meta={"versionId": "1"}),
        glucose(meta={"versionId": "2"}, valueQuantity={"value": 7.0}),
        glucose("o2", meta={"lastUpdated": "2024-03-05T00:00:00Z"}),
    )
    found = [
        (r["_source_record_id"], r["_source_version"], r["value_as_number"])
        for r in rows(chunk, "measurement")
    ]
    assert found == [
        ("Observation/o1", 1, 6.1),
        ("Observation/o1", 2, 7.0),
        ("Observation/o2", 1709596800000, 6.1),
    ]
    hashes = {r["_record_hash"] for r in rows(chunk, "measurement")}
    assert len(hashes) == 3


@pytest.mark.parametrize(
    ("resource", "field", "reason"),
    [
        ({**glucose(), "code": None}, "Observation.code", "missing required field"),
        (
            {k: v for k, v in glucose().items() if k != "subject"},
            "Observation.subject",
            "bad reference",
        ),
        (glucose(subject={"reference": "Group/g1"}), "Observation.subject", "bad reference"),
        (glucose(subject={"display": "陈云金"}), "Observation.subject", "bad reference"),
        (
            glucose(effectiveDateTime="2021-04-31"),
            "Observation.effectiveDateTime",
            "unparseable date",
        ),
        (
            glucose(code={"coding": [{"system": "http://local", "code": "GLU"}]}),
            "Observation.code",
            "unknown code system",
        ),
        (
            {k: v for k, v in glucose().items() if k != "effectiveDateTime"},
            "Observation.effective[x]",
            "missing required field",
        ),
        (
            glucose(valueQuantity={"value": "6.1"}),
            "Observation.valueQuantity.value",
            "not a number",
        ),
        ({k: v for k, v in glucose().items() if k != "id"}, "Observation.id", "missing required"),
        (glucose(code="2345-7"), "Observation.code", "not a CodeableConcept"),
        (glucose(category="laboratory"), "Observation", "malformed Observation"),
    ],
)
def test_bad_resources_are_quarantined_with_reason_and_field(
    tmp_path: Path, resource: dict[str, Any], field: str, reason: str
) -> None:
    chunk = read(tmp_path, glucose("ok"), resource)
    [entry] = chunk.quarantine
    assert (entry.location, entry.field) == ("in.ndjson:2", field)
    assert entry.reason.startswith(reason)
    assert orjson.loads(entry.raw_payload) == resource
    assert [r["_source_record_id"] for r in rows(chunk, "measurement")] == ["Observation/ok"]


def test_malformed_lines_are_quarantined_and_blank_lines_ignored(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        glucose("a"),
        b'{"resourceType": "Observation", "id": ',
        b"",
        b"[1, 2]",
        b'{"id": "x"}',
        glucose("b"),
    )
    assert [(q.location, q.raw_payload) for q in chunk.quarantine] == [
        ("in.ndjson:2", '{"resourceType": "Observation", "id": '),
        ("in.ndjson:4", "[1, 2]"),
        ("in.ndjson:5", '{"id": "x"}'),
    ]
    assert chunk.quarantine[0].reason.startswith("malformed JSON")
    assert chunk.records_read == 5
    assert len(rows(chunk, "measurement")) == 2


def test_unmapped_resource_types_are_counted(tmp_path: Path) -> None:
    chunk = read(
        tmp_path,
        {"resourceType": "Practitioner", "id": "d1"},
        {"resourceType": "Organization", "id": "o"},
        {"resourceType": "Practitioner"},
        glucose(),
    )
    assert chunk.skipped == {"Practitioner": 2, "Organization": 1}
    assert not chunk.quarantine


def test_a_file_that_is_not_fhir_is_rejected_naming_it(tmp_path: Path) -> None:
    for name, content in (
        ("his.csv", b"id,name\n1,x\n"),
        ("x.json", b'{"a": 1}'),
        ("lis.hl7", b"MSH|^~\\&|LIS|\r"),
    ):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(InputError, match=name):
            read_path(path)
    empty = tmp_path / "Empty.ndjson"
    empty.write_bytes(b"")
    assert read_path(empty).records_read == 0


def _entry(resource: dict[str, Any], url: str, method: str | None = None) -> dict[str, Any]:
    entry: dict[str, Any] = {"fullUrl": url, "resource": resource}
    if method:
        entry["request"] = {"method": method, "url": resource["resourceType"]}
    return entry


@pytest.mark.parametrize("kind", ["collection", "transaction", "searchset"])
def test_bundle_documents(tmp_path: Path, kind: str) -> None:
    method = "POST" if kind == "transaction" else None
    patient = {"resourceType": "Patient", "name": [{"text": "王芳"}], "gender": "female"}
    observation = glucose("g", subject={"reference": "urn:uuid:11111111-aaaa"})
    bundle = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            _entry(patient, "urn:uuid:11111111-aaaa", method),
            _entry(observation, "urn:uuid:22222222-bbbb", method),
            {"fullUrl": "urn:uuid:3", "search": {"mode": "outcome"}},
        ],
    }
    if kind == "transaction":
        bundle["entry"].append({"request": {"method": "DELETE", "url": "Observation/old"}})
    path = tmp_path / f"{kind}.json"
    path.write_bytes(orjson.dumps(bundle, option=orjson.OPT_INDENT_2))
    chunk = read_path(path)
    [person] = [r for t in chunk.patients for r in t.to_pylist()]
    assert (person["_source_patient_id"], person["name_hanzi"]) == ("11111111-aaaa", "王芳")
    [lab] = rows(chunk, "measurement")
    assert lab["_source_patient_id"] == "11111111-aaaa"
    assert chunk.quarantine[0].location == f"{kind}.json:entry 3"
    assert chunk.quarantine[0].reason == "entry without a resource"
    if kind == "transaction":
        assert chunk.quarantine[1].location == "transaction.json:entry 4"
        assert chunk.quarantine[1].field == "Bundle.entry.request.method"
    assert chunk.records_read == len(bundle["entry"])


def test_bundles_as_ndjson_lines_and_single_resource_documents(tmp_path: Path) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [
            {"resource": glucose("b1")},
            {"resource": glucose("b2", effectiveDateTime="2024-02-30")},
        ],
    }
    chunk = read(tmp_path, glucose("a"), bundle)
    assert len(rows(chunk, "measurement")) == 2
    assert [q.location for q in chunk.quarantine] == ["in.ndjson:2 entry 2"]
    assert chunk.records_read == 3
    single = tmp_path / "one.json"
    single.write_bytes(orjson.dumps(glucose("solo"), option=orjson.OPT_INDENT_2))
    assert rows(read_path(single), "measurement")[0]["_source_record_id"] == "Observation/solo"

"""The synthetic hospital's exports parse, agree with truth/ and stay inside the code list."""

from __future__ import annotations

import csv
import datetime as dt
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path

import hl7
import pytest

from medlake.errors import UsageError
from medlake.resident_id import has_valid_check_character
from medlake.synth import generate_hospital

REPO = Path(__file__).resolve().parents[2]
CODES_DOC = REPO / "docs" / "synthetic-hospital-codes.md"
PATIENTS = 800


@pytest.fixture(scope="module")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth") / "hospital"
    generate_hospital(out, PATIENTS, 20240314, workers=1, chunk_size=300)
    return out


def read_csv(path: Path, encoding: str = "utf-8") -> list[dict[str, str]]:
    with path.open(encoding=encoding, newline="") as handle:
        return list(csv.DictReader(handle))


def hl7_messages(path: Path) -> list[str]:
    """Messages of one LIS day file, checking the framing its extension promises."""
    text = path.read_bytes().decode("utf-8")
    if path.suffix == ".mllp":
        assert text.startswith("\x0b")
        assert text.endswith("\x1c\r")
        frames = text.split("\x1c\r")[:-1]
        assert all(frame.startswith("\x0b") and frame.count("\x0b") == 1 for frame in frames)
        return [frame[1:] for frame in frames]
    assert "\x0b" not in text
    assert "\x1c" not in text
    assert "\n" not in text
    return ["MSH|" + part for part in text.split("MSH|")[1:]]


_parsed: dict[Path, list[tuple[Path, int, hl7.Message]]] = {}


def lis_messages(root: Path) -> list[tuple[Path, int, hl7.Message]]:
    """Every LIS message of a tree, parsed once per test module."""
    if root in _parsed:
        return _parsed[root]
    found = []
    for path in sorted((root / "lis").rglob("*")):
        if path.is_file():
            for number, text in enumerate(hl7_messages(path), start=1):
                found.append((path, number, hl7.parse(text)))
    _parsed[root] = found
    return found


def ndjson(root: Path, resource_type: str) -> list[dict]:
    lines = (root / "emr" / f"{resource_type}.ndjson").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def documented_codes() -> set[str]:
    """Every code in docs/synthetic-hospital-codes.md: the first token of each listed line
    (ICD-10-CM, LOINC, ICD-9-CM procedures), and ATC and LOINC answer codes anywhere."""
    codes: set[str] = set()
    for line in CODES_DOC.read_text(encoding="utf-8").splitlines():
        first = re.match(r"([A-Z]\d{2}(?:\.\w+)?|\d{1,6}-\d|\d{2}\.\d{1,2}) ", line)
        if first:
            codes.add(first.group(1))
        codes.update(re.findall(r"\b([A-Z]\d{2}[A-Z]{2}\d{2}|LA\d+-\d)\b", line))
    return codes


def _is_calendar_date(stamp: str) -> bool:
    try:
        dt.date(int(stamp[:4]), int(stamp[4:6]), int(stamp[6:8]))
    except ValueError:
        return False
    return True


def test_his_csvs_parse_and_prescriptions_are_gb18030_with_chinese_headers(
    hospital: Path,
) -> None:
    for name in ("patients", "visits", "diagnoses"):
        rows = read_csv(hospital / "his" / f"{name}.csv")
        assert rows, name
    raw = (hospital / "his" / "prescriptions.csv").read_bytes()
    with pytest.raises(UnicodeDecodeError):
        raw.decode("utf-8")
    prescriptions = read_csv(hospital / "his" / "prescriptions.csv", "gb18030")
    assert list(prescriptions[0])[:4] == ["处方号", "就诊号", "病人ID", "开方时间"]
    assert all(re.fullmatch(r"\d{4}/\d{2}/\d{2} \d{2}:\d{2}", row["开方时间"])
               for row in prescriptions)  # fmt: skip
    assert "GB18030" in (hospital / "README.txt").read_text(encoding="utf-8")
    patients = read_csv(hospital / "his" / "patients.csv")
    assert all(re.fullmatch(r"H\d{8}", row["BRID"]) for row in patients)
    assert {row["XB"] for row in patients} <= {"男", "女", ""}


def test_every_lis_message_parses_and_carries_loinc_results(hospital: Path) -> None:
    messages = lis_messages(hospital)
    suffixes = {path.suffix for path, _, _ in messages}
    assert suffixes == {".hl7", ".mllp"}
    kinds = defaultdict(int)
    for path, _, message in messages:
        kind = str(message.segment("MSH")[9])
        kinds[kind] += 1
        assert str(message.segment("MSH")[12]) == "2.5"
        assert re.fullmatch(r"lis/\d{4}/\d{8}\.(hl7|mllp)", str(path.relative_to(hospital)))
        if kind.startswith("ORU"):
            assert message.segments("OBR")
            assert message.segments("OBX")
            for obx in message.segments("OBX"):
                assert str(obx[3][0][2]) == "LN"
                if str(obx[2]) == "NM":
                    float(str(obx[5]))
                    assert str(obx[8]) in {"H", "L", "N"}
    assert kinds["ORU^R01^ORU_R01"] > kinds["ADT^A01^ADT_A01"] > 0


def test_fhir_resources_have_required_fields_and_references_resolve(hospital: Path) -> None:
    manifest = json.loads((hospital / "emr" / "manifest.json").read_text())
    types = {entry["type"]: entry["count"] for entry in manifest["output"]}
    assert set(types) == {"Patient", "Encounter", "Condition", "MedicationRequest",
                          "Observation", "Procedure", "Specimen",
                          "DocumentReference"}  # fmt: skip
    resources = {t: ndjson(hospital, t) for t in types}
    assert {t: len(rows) for t, rows in resources.items()} == types
    ids = {t: {r["id"] for r in rows} for t, rows in resources.items()}
    required = {"Encounter": ("status", "class", "subject"), "Condition": ("subject", "code"),
                "MedicationRequest": ("status", "intent", "medicationCodeableConcept", "subject"),
                "Observation": ("status", "code", "subject"),
                "Procedure": ("status", "subject", "code"), "Specimen": ("subject", "type"),
                "Patient": ("identifier", "name"),
                "DocumentReference": ("status", "subject", "content")}  # fmt: skip
    for resource_type, rows in resources.items():
        for resource in rows:
            assert resource["resourceType"] == resource_type
            assert resource["id"]
            for name in required[resource_type]:
                assert name in resource, (resource_type, name)
            for key, target in (("subject", "Patient"), ("encounter", "Encounter"),
                                ("specimen", "Specimen")):  # fmt: skip
                if key in resource:
                    kind, _, ref = resource[key]["reference"].partition("/")
                    assert kind == target
                    assert ref in ids[target]
    panels = [o for o in resources["Observation"] if o["code"]["coding"][0]["code"] == "85354-9"]
    assert panels
    assert {c["code"]["coding"][0]["code"] for c in panels[0]["component"]} == {"8480-6",
                                                                             "8462-4"}  # fmt: skip
    id_systems = {i["system"] for p in resources["Patient"] for i in p["identifier"]}
    assert "urn:oid:2.16.156.10011.1.3" in id_systems


def _source_ids_in_exports(root: Path) -> set[tuple[str, str]]:
    found = {("HIS", row["BRID"]) for row in read_csv(root / "his" / "patients.csv")}
    for _, _, message in lis_messages(root):
        found.add(("LIS", str(message.segment("PID")[3][0][0])))
    for patient in ndjson(root, "Patient"):
        mrn = next(i["value"] for i in patient["identifier"] if i["type"]["coding"][0]["code"]
                   == "MR")  # fmt: skip
        found.add(("EMR", mrn))
    return found


def test_source_records_and_exports_list_the_same_patients(hospital: Path) -> None:
    truth = read_csv(hospital / "truth" / "source_records.csv")
    in_truth = {(row["system"], row["source_patient_id"]) for row in truth}
    assert len(in_truth) == len(truth)
    assert _source_ids_in_exports(hospital) == in_truth
    persons = {row["person_key"] for row in read_csv(hospital / "truth" / "persons.csv")}
    assert len(persons) == PATIENTS
    assert {row["person_key"] for row in truth} <= persons
    duplicates = sum(row["duplicate"] == "1" for row in truth)
    assert 0 < duplicates < 0.06 * len(truth)


def test_resident_ids_are_valid_except_the_planted_mistypes(hospital: Path) -> None:
    persons = read_csv(hospital / "truth" / "persons.csv")
    assert all(has_valid_check_character(row["resident_id"]) for row in persons)
    truth = {row["source_patient_id"]: row for row in read_csv(hospital / "truth" /
                                                               "source_records.csv")}  # fmt: skip
    checked = mistyped = 0
    for row in read_csv(hospital / "his" / "patients.csv"):
        if not row["SFZH"]:
            continue
        checked += 1
        planted = "resident_id_mistyped" in truth[row["BRID"]]["noise"]
        mistyped += planted
        assert has_valid_check_character(row["SFZH"]) != planted, row
    assert checked > 0.9 * len(persons) * 0.9


def test_every_planted_defect_is_in_the_record_it_names(hospital: Path) -> None:
    defects = read_csv(hospital / "truth" / "defects.csv")
    kinds = {row["kind"] for row in defects}
    assert {"unknown_code", "impossible_lab_value", "missing_required_field", "bad_date",
            "event_after_death"} <= kinds  # fmt: skip
    codes = documented_codes()
    deaths = {row["person_key"]: row["death_date"]
              for row in read_csv(hospital / "truth" / "persons.csv")}  # fmt: skip
    owner = {(row["system"], row["source_patient_id"]): row["person_key"]
             for row in read_csv(hospital / "truth" / "source_records.csv")}  # fmt: skip
    fhir_owner = {p["id"]: owner[("EMR", p["identifier"][0]["value"])]
                  for p in ndjson(hospital, "Patient")}  # fmt: skip
    for defect in defects:
        path, line = hospital / defect["file"], int(defect["line"])
        if defect["system"] == "LIS":
            text = hl7_messages(path)[line - 1]
            assert f"|{defect['record_id']}|" in text.split("\r")[0]
            record = text
        else:
            encoding = "gb18030" if path.name == "prescriptions.csv" else "utf-8"
            record = path.read_text(encoding=encoding).splitlines()[line - 1]
            assert defect["record_id"].split("#")[0] in record
        kind, detail = defect["kind"], defect["detail"]
        if kind in ("unknown_code", "bad_date"):
            assert detail in record
            if kind == "unknown_code":
                assert detail not in codes
            else:
                assert not _is_calendar_date(detail.replace("-", "")[:8])
        elif kind == "impossible_lab_value":
            values = re.findall(r'"value":(-?[\d.]+)', record) if record.startswith("{") else [
                str(seg).split("|")[5] for seg in record.split("\r") if seg.startswith("OBX")]
            assert any(float(v) < 0 or float(v) > 5000 for v in values) or detail == "100x"
        elif kind == "missing_required_field":
            if record.startswith("{"):
                assert f'"{defect["field"]}"' not in record
        elif kind == "event_after_death" and defect["system"] == "EMR":
            patient = json.loads(record)["subject"]["reference"].split("/")[1]
            assert detail[:10] > deaths[fhir_owner[patient]] != ""


def test_every_code_emitted_is_in_the_shared_code_list(hospital: Path) -> None:
    codes = documented_codes()
    planted = {row["detail"] for row in read_csv(hospital / "truth" / "defects.csv")
               if row["kind"] == "unknown_code"}  # fmt: skip
    emitted: set[str] = set()
    emitted |= {row["ZDDM"] for row in read_csv(hospital / "his" / "diagnoses.csv")}
    emitted |= {row["ATC编码"] for row in read_csv(hospital / "his" / "prescriptions.csv",
                                                    "gb18030")}  # fmt: skip
    for _, _, message in lis_messages(hospital):
        if not str(message.segment("MSH")[9]).startswith("ORU"):
            continue
        for obx in message.segments("OBX"):
            emitted.add(str(obx[3][0][0]))
            if str(obx[2]) == "CWE":
                emitted.add(str(obx[5][0][0]))
    vocabularies = ("icd-10-cm", "icd-9-cm", "loinc.org", "whocc.no/atc")
    for resource_type in ("Condition", "MedicationRequest", "Observation", "Procedure"):
        text = (hospital / "emr" / f"{resource_type}.ndjson").read_text(encoding="utf-8")
        for system, code in re.findall(r'"system":"([^"]+)","code":"([^"]+)"', text):
            if any(v in system for v in vocabularies):
                emitted.add(code)
    assert emitted - planted <= codes, sorted(emitted - planted - codes)
    assert len(codes) > 80


def test_diseases_follow_age_and_labs_follow_diseases(hospital: Path) -> None:
    persons = {row["person_key"]: row for row in read_csv(hospital / "truth" / "persons.csv")}
    conditions = defaultdict(set)
    for row in read_csv(hospital / "truth" / "conditions.csv"):
        conditions[row["person_key"]].add(row["icd10"])
    diabetic = {key for key, codes in conditions.items() if any(c.startswith("E1") for c in codes)}

    def share(low: int, high: int) -> float:
        group = [k for k, p in persons.items() if low <= 2025 - int(p["birth_date"][:4]) < high]
        return sum(k in diabetic for k in group) / max(len(group), 1)

    assert share(55, 75) > 2 * share(20, 40)
    owner = {row["source_patient_id"]: row["person_key"]
             for row in read_csv(hospital / "truth" / "source_records.csv")
             if row["system"] == "LIS"}  # fmt: skip
    hba1c: dict[bool, list[float]] = {True: [], False: []}
    for _, _, message in lis_messages(hospital):
        if not str(message.segment("MSH")[9]).startswith("ORU"):
            continue
        person = owner[str(message.segment("PID")[3][0][0])]
        for obx in message.segments("OBX"):
            if str(obx[3][0][0]) == "4548-4" and 0 < float(str(obx[5])) < 20:
                hba1c[person in diabetic].append(float(str(obx[5])))
    assert len(hba1c[True]) > 10
    assert len(hba1c[False]) > 10
    assert statistics.mean(hba1c[True]) > statistics.mean(hba1c[False]) + 1.0


def test_output_directory_must_be_empty(tmp_path: Path) -> None:
    (tmp_path / "something").write_text("x")
    with pytest.raises(UsageError):
        generate_hospital(tmp_path, 10, 1)

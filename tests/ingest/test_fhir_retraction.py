"""FHIR ``entered-in-error``: a newer version that withdraws a record removes its CDM rows,
keeps every version's provenance, and a later correct version brings the record back."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medlake.config import open_workspace
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import init_workspace, open_lake

PATIENT = {"resourceType": "Patient", "id": "p1", "gender": "female", "birthDate": "1970-01-01"}


def condition(version: int, **extra: Any) -> dict[str, Any]:
    return {
        "resourceType": "Condition", "id": "c1", "meta": {"versionId": str(version)},
        "subject": {"reference": "Patient/p1"},
        "code": {"coding": [{"system": "http://hl7.org/fhir/sid/icd-10-cm", "code": "E11.9"}]},
        "onsetDateTime": "2024-03-01", **extra,
    }  # fmt: skip


def blood_pressure(version: int, **extra: Any) -> dict[str, Any]:
    def component(code: str, value: int) -> dict[str, Any]:
        return {
            "code": {"coding": [{"system": "http://loinc.org", "code": code}]},
            "valueQuantity": {"value": value, "unit": "mm[Hg]",
                              "system": "http://unitsofmeasure.org", "code": "mm[Hg]"},
        }  # fmt: skip

    return {
        "resourceType": "Observation", "id": "bp1", "meta": {"versionId": str(version)},
        "status": "final", "subject": {"reference": "Patient/p1"},
        "category": [{"coding": [{"code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "85354-9"}]},
        "effectiveDateTime": "2024-05-01T08:00:00Z",
        "component": [component("8480-6", 120), component("8462-4", 80)], **extra,
    }  # fmt: skip


def write(folder: Path, name: str, *resources: dict[str, Any]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text("".join(json.dumps(r) + "\n" for r in resources), encoding="utf-8")
    return path


def ingest(root: Path, path: Path) -> Any:
    return ingest_paths(root, [path], source_system="emr")


def table(root: Path, name: str) -> list[dict[str, Any]]:
    with open_lake(open_workspace(root)) as engine:
        return engine.execute(engine.table(name)).to_pylist()


def provenance(root: Path, cdm_table: str) -> list[tuple[str, int, bool]]:
    rows = table(root, "source_record")
    return sorted(
        (r["source_record_id"], r["source_version"], r["is_current"])
        for r in rows
        if r["cdm_table"] == cdm_table
    )


@pytest.fixture
def root(tmp_path: Path) -> Path:
    root = init_workspace(tmp_path / "ws").root
    assert not ingest(root, write(tmp_path / "emr1", "a.ndjson", PATIENT, condition(1),
                                         blood_pressure(1))).failed  # fmt: skip
    assert len(table(root, "condition_occurrence")) == 1
    assert len(table(root, "measurement")) == 2  # systolic and diastolic
    return root


def test_entered_in_error_removes_the_rows_and_keeps_the_provenance(
    root: Path, tmp_path: Path
) -> None:
    withdrawn = condition(2, verificationStatus={"coding": [{"code": "entered-in-error"}]})
    bp_withdrawn = blood_pressure(2, status="entered-in-error")
    report = ingest(root, write(tmp_path / "emr2", "b.ndjson", withdrawn, bp_withdrawn))
    assert not report.failed
    assert report.files[0].summary is not None
    assert report.files[0].summary.retracted == 3
    assert table(root, "condition_occurrence") == []
    assert table(root, "measurement") == []
    assert provenance(root, "condition_occurrence") == [
        ("Condition/c1", 1, False), ("Condition/c1", 2, True)]  # fmt: skip
    assert [v for _, v, current in provenance(root, "measurement") if current] == [2, 2]
    assert table(root, "quarantine") == []
    # The person's only records are gone, so is their observation period.
    assert table(root, "observation_period") == []
    # The same retraction again changes nothing.
    again = ingest(root, write(tmp_path / "emr3", "b2.ndjson", withdrawn, bp_withdrawn))
    assert again.files[0].summary is not None
    assert again.files[0].summary.retracted == 0
    assert table(root, "condition_occurrence") == []
    assert len(provenance(root, "condition_occurrence")) == 2


def test_a_later_correct_version_brings_the_record_back(root: Path, tmp_path: Path) -> None:
    withdrawn = condition(2, verificationStatus={"coding": [{"code": "entered-in-error"}]})
    ingest(root, write(tmp_path / "emr2", "b.ndjson", withdrawn))
    assert table(root, "condition_occurrence") == []
    back = condition(3, onsetDateTime="2024-04-01")
    ingest(root, write(tmp_path / "emr3", "c.ndjson", back))
    rows = table(root, "condition_occurrence")
    assert [str(r["condition_start_date"]) for r in rows] == ["2024-04-01"]
    assert [v for _, v, current in provenance(root, "condition_occurrence") if current] == [3]
    periods = table(root, "observation_period")
    assert [str(p["observation_period_start_date"]) for p in periods] == ["2024-04-01"]


def test_an_older_version_does_not_undo_a_retraction(root: Path, tmp_path: Path) -> None:
    withdrawn = condition(2, verificationStatus={"coding": [{"code": "entered-in-error"}]})
    ingest(root, write(tmp_path / "emr2", "b.ndjson", withdrawn))
    older = condition(1, note=[{"text": "x"}])
    ingest(root, write(tmp_path / "emr3", "old.ndjson", older))
    assert table(root, "condition_occurrence") == []

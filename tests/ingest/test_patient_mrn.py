"""The medical record number reaches ``pii_person.mrn`` (and only there).

Checked against the generator's truth: ``truth/source_records.csv`` lists each EMR
patient by MRN, and the EMR's FHIR Patient id is derived from seed and MRN.
"""

from __future__ import annotations

import csv
import json
from typing import Any

from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.schema import table_spec
from medlake.synth.emr import fhir_patient_id


def _truth_ids(hospital_lake: Any, system: str) -> set[str]:
    """The system's source patient ids as the generator wrote them."""
    with (hospital_lake.truth / "source_records.csv").open(encoding="utf-8") as handle:
        return {row["source_patient_id"] for row in csv.DictReader(handle)
                if row["system"] == system}  # fmt: skip


def _identity_rows(hospital_lake: Any, system: str) -> list[dict[str, Any]]:
    with open_workspace_engine(open_workspace(hospital_lake.workspace)) as engine:
        pii = engine.table("pii_person")
        return engine.execute(
            pii.filter(pii.source_system == system).select("source_patient_id", "mrn")
        ).to_pylist()


def test_every_emr_identity_row_carries_its_mrn(hospital_lake: Any) -> None:
    seed = json.loads((hospital_lake.truth / "manifest.json").read_text())["seed"]
    truth = _truth_ids(hospital_lake, "EMR")
    rows = _identity_rows(hospital_lake, "emr")
    assert rows
    by_id = {fhir_patient_id(seed, mrn): mrn for mrn in truth}
    for row in rows:
        assert row["mrn"] == by_id[row["source_patient_id"]]
    # most EMR patients are in the lake (some Patient records are planted bad)
    assert len({r["mrn"] for r in rows}) > 0.9 * len(truth)


def test_his_patients_carry_their_his_patient_number_as_mrn(hospital_lake: Any) -> None:
    truth = _truth_ids(hospital_lake, "HIS")
    rows = _identity_rows(hospital_lake, "his")
    assert len(rows) > 0.9 * len(truth)
    for row in rows:
        assert row["mrn"] == row["source_patient_id"]
        assert row["mrn"] in truth


def test_the_mrn_is_an_identifier_kept_out_of_the_cdm() -> None:
    assert "mrn" in {c.name for c in table_spec("pii_person").columns}
    assert table_spec("pii_person").restricted
    assert "mrn" not in {c.name for c in table_spec("person").columns}

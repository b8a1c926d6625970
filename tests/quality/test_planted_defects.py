"""Every class of defect the synthetic hospital plants is caught at its planted count.

The truth is ``truth/defects.csv`` of the shared hospital (what the generator planted,
record by record). Some defects never reach the CDM tables because ingest quarantines
the record; those are caught by the checks on the quarantine. See docs/quality.md.
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import pytest

from medlake.quality import CheckResult

Results = dict[str, CheckResult]


@pytest.fixture(scope="module")
def defects(hospital_lake) -> pd.DataFrame:  # type: ignore[no-untyped-def]
    return pd.read_csv(hospital_lake.truth / "defects.csv", dtype=str)


def _violating(results: Results, prefix: str) -> int:
    matched = [r for check_id, r in results.items() if check_id.startswith(prefix)]
    assert matched, prefix
    assert all(r.status != "error" for r in matched)
    return sum(r.rows_violating or 0 for r in matched)


def test_the_hospital_plants_the_classes_tested_here(defects: pd.DataFrame) -> None:
    assert set(defects.kind) <= {
        "unknown_code", "impossible_lab_value", "event_after_death", "bad_date",
        "missing_required_field",
    }  # fmt: skip
    for kind in ("unknown_code", "impossible_lab_value", "event_after_death", "bad_date"):
        assert (defects.kind == kind).sum() > 0, kind


def test_unknown_codes_are_unmapped_concepts(results: Results, defects: pd.DataFrame) -> None:
    planted = int((defects.kind == "unknown_code").sum())
    caught = sum(
        _violating(results, f"standard_concept_record_completeness.{table}.{field}")
        for table, field in (
            ("condition_occurrence", "condition_concept_id"),
            ("drug_exposure", "drug_concept_id"),
            ("measurement", "measurement_concept_id"),
        )
    )
    assert caught == planted


def test_impossible_lab_values_are_out_of_plausible_range(
    results: Results, defects: pd.DataFrame
) -> None:
    planted = int((defects.kind == "impossible_lab_value").sum())
    assert _violating(results, "plausible_value_range.measurement.") == planted


def test_visits_after_death_are_implausible_during_life(
    results: Results, defects: pd.DataFrame
) -> None:
    planted = int((defects.kind == "event_after_death").sum())
    assert _violating(results, "plausible_during_life.visit_occurrence.") == planted


def test_bad_dates_are_caught_in_quarantine(results: Results, defects: pd.DataFrame) -> None:
    planted = int((defects.kind == "bad_date").sum())
    assert _violating(results, "quarantined_records.quarantine.bad_date") == planted


def _absorbed(defects: pd.DataFrame) -> pd.Series:
    # A birth date missing from a later LIS message: the person came with the earlier
    # message's birth date, and ingest keeps it; nothing reaches the lake.
    return (defects.system == "LIS") & (defects.field == "PID-7")


def test_missing_required_fields_are_quarantined_or_absorbed(
    results: Results, defects: pd.DataFrame, frame: Callable[[str], pd.DataFrame]
) -> None:
    missing = defects[defects.kind == "missing_required_field"]
    sex_fields = {"gender", "XB", "PID-8"}
    quarantined = missing[~_absorbed(missing) & ~missing.field.isin(sex_fields)]
    assert _violating(results, "quarantined_records.quarantine.missing_required_field") == len(
        quarantined
    )
    # Missing sex is kept, as unknown gender.
    planted_sex = int(missing.field.isin(sex_fields).sum())
    assert _violating(results, "unknown_concept_record_completeness.person.") == planted_sex
    # The absorbed ones: every person in the lake has a year of birth.
    assert _violating(results, "is_required.person.year_of_birth") == 0
    assert frame("person").year_of_birth.notna().all()


def test_rows_of_a_quarantined_patient_are_caught_as_dangling(
    results: Results, frame: Callable[[str], pd.DataFrame]
) -> None:
    # Their patient record was quarantined, so their visits and results point nowhere;
    # the foreign-key checks count exactly those rows.
    persons = set(frame("person").person_id)
    linked = frame("source_patient")
    orphans = set(linked[~linked.person_id.isin(persons)].person_id.dropna())
    for table in ("visit_occurrence", "measurement", "drug_exposure", "condition_occurrence"):
        df = frame(table)
        of_orphans = int(df.person_id.isin(orphans).sum())
        assert _violating(results, f"is_foreign_key.{table}.person_id") == of_orphans

"""Each kind of check counts what pandas counts over the same lake tables.

The reference is written independently of the Ibis queries: plain pandas over the
tables read whole. A check whose query drifts from its definition fails here.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pandas as pd
import pytest

from medlake.quality import CheckResult
from medlake.quality.catalogue import plausible_values
from medlake.schema import table_spec

Frame = Callable[[str], pd.DataFrame]
CLINICAL = ("person", "visit_occurrence", "condition_occurrence", "drug_exposure",
            "procedure_occurrence", "measurement", "death", "note", "specimen")  # fmt: skip


def _counts(results: dict[str, CheckResult], check_id: str) -> tuple[int | None, int | None]:
    result = results[check_id]
    assert result.status != "error", result.message
    return result.rows_violating, result.rows_total


@pytest.mark.parametrize("table", CLINICAL)
def test_required_keys_and_concepts(results, frame: Frame, table: str) -> None:  # type: ignore[no-untyped-def]
    df = frame(table)
    concepts = set(frame("concept").concept_id)
    spec = table_spec(table)
    assert len(df) > 0
    for column in spec.columns:
        f = column.name
        if column.required:
            assert _counts(results, f"is_required.{table}.{f}") == (
                int(df[f].isna().sum()),
                len(df),
            )
        if spec.primary_key == (f,):
            duplicates = len(df) - df[f].nunique()
            assert _counts(results, f"is_primary_key.{table}.{f}") == (duplicates, len(df))
        target = column.foreign_key
        if target and target[0] == "concept":
            known = df[f].notna() & (df[f] != 0)
            bad = known & ~df[f].isin(concepts)
            assert _counts(results, f"fk_concept.{table}.{f}") == (
                int(bad.sum()),
                int(known.sum()),
            )
            if column.required:
                zero = int((df[f] == 0).sum())
                assert _counts(results, f"standard_concept_record_completeness.{table}.{f}") == (
                    zero,
                    len(df),
                )
        elif target and target[0] in CLINICAL and target[0] != table:
            ids = set(frame(target[0])[target[1]])
            present = df[f].notna()
            bad = present & ~df[f].isin(ids)
            assert _counts(results, f"is_foreign_key.{table}.{f}") == (
                int(bad.sum()),
                int(present.sum()),
            )


def test_during_life_start_before_end_and_within_visit(results, frame: Frame) -> None:  # type: ignore[no-untyped-def]
    death = frame("death").groupby("person_id").death_date.min()
    visits = frame("visit_occurrence").set_index("visit_occurrence_id")
    for table, start, end in (
        ("visit_occurrence", "visit_start_date", "visit_end_date"),
        ("condition_occurrence", "condition_start_date", "condition_end_date"),
        ("drug_exposure", "drug_exposure_start_date", "drug_exposure_end_date"),
    ):
        df = frame(table)
        died = df.person_id.map(death)
        known = df[start].notna() & died.notna()
        after = known & (df[start] > died)
        assert _counts(results, f"plausible_during_life.{table}.{start}") == (
            int(after.sum()),
            int(known.sum()),
        )
        both = df[start].notna() & df[end].notna()
        backwards = both & (df[start] > df[end])
        assert _counts(results, f"plausible_start_before_end.{table}.{start}") == (
            int(backwards.sum()),
            int(both.sum()),
        )
        if table == "visit_occurrence":
            continue
        v_start = df.visit_occurrence_id.map(visits.visit_start_date)
        v_end = df.visit_occurrence_id.map(visits.visit_end_date)
        known = df[start].notna() & v_start.notna()
        week = dt.timedelta(days=7)
        outside = known & ((df[start] < v_start - week) | (df[start] > v_end + week))
        assert _counts(results, f"within_visit_dates.{table}.{start}") == (
            int(outside.sum()),
            int(known.sum()),
        )


def test_concept_level_ranges_and_units(results, frame: Frame) -> None:  # type: ignore[no-untyped-def]
    concept = frame("concept")
    key = concept.vocabulary_id + ":" + concept.concept_code
    ids = dict(zip(key, concept.concept_id, strict=True))
    m = frame("measurement")
    checked_some = False
    for row in plausible_values():
        code = f"{row['vocabulary_id']}:{row['concept_code']}"
        of = (m.measurement_concept_id == ids.get(code, -1)) & m.value_as_number.notna()
        outside = of & (
            (m.value_as_number < float(row["low"])) | (m.value_as_number > float(row["high"]))
        )
        check = f"plausible_value_range.measurement.value_as_number.{code}"
        assert _counts(results, check) == (int(outside.sum()), int(of.sum()))
        units = {ids.get(f"UCUM:{u}") for u in row["units"].split("|")} - {None}
        bad_unit = of & ~m.unit_concept_id.isin(units)
        check = f"plausible_unit_concept_ids.measurement.unit_concept_id.{code}"
        assert _counts(results, check) == (int(bad_unit.sum()), int(of.sum()))
        checked_some |= bool(of.any())
    assert checked_some


def test_person_completeness_and_temporal_after_birth(results, frame: Frame) -> None:  # type: ignore[no-untyped-def]
    person = frame("person")
    for table in ("visit_occurrence", "measurement", "drug_exposure"):
        missing = ~person.person_id.isin(set(frame(table).person_id))
        assert _counts(results, f"measure_person_completeness.{table}") == (
            int(missing.sum()),
            len(person),
        )
    df = frame("condition_occurrence")
    yob = df.person_id.map(person.set_index("person_id").year_of_birth)
    known = df.condition_start_date.notna() & yob.notna()
    before = known & (pd.to_datetime(df.condition_start_date).dt.year < yob)
    check = "plausible_temporal_after.condition_occurrence.condition_start_date"
    assert _counts(results, check) == (int(before.sum()), int(known.sum()))


def test_schema_checks_pass_on_a_lake_medlake_created(results) -> None:  # type: ignore[no-untyped-def]
    schema = [
        r
        for r in results.values()
        if r.check.check_type in ("cdm_table", "cdm_field", "cdm_datatype")
    ]
    assert len(schema) > 700
    assert all(r.status == "pass" for r in schema), [
        r.check.check_id for r in schema if r.status != "pass"
    ]

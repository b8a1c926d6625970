"""Cohort members and their periods: exit strategies, censoring and era collapse vs pandas."""

from __future__ import annotations

from typing import Any

import pandas as pd
from tests.cohort.reference import DAY, Lake

from medlake.service.cohort import cohort_members, parse_definition


def collapse(periods: pd.DataFrame, gap: int) -> list[tuple[int, pd.Timestamp, pd.Timestamp]]:
    """Merge each person's periods closer than ``gap`` days (a plain loop, as on paper)."""
    merged: list[tuple[int, pd.Timestamp, pd.Timestamp]] = []
    for person, rows in periods.sort_values(["person_id", "start", "end"]).groupby("person_id"):
        current: list[pd.Timestamp] | None = None
        for start, end in zip(rows.start, rows.end, strict=True):
            if current is not None and start <= current[1] + gap * DAY:
                current[1] = max(current[1], end)
                continue
            if current is not None:
                merged.append((int(person), current[0], current[1]))
            current = [start, end]
        assert current is not None
        merged.append((int(person), current[0], current[1]))
    return sorted(merged)


def members(
    hospital_lake: Any, definition: dict[str, Any]
) -> list[tuple[int, pd.Timestamp, pd.Timestamp]]:
    table = cohort_members(hospital_lake.workspace, parse_definition(definition)).to_pandas()
    return sorted(
        (int(p), pd.Timestamp(s), pd.Timestamp(e))
        for p, s, e in zip(
            table.person_id, table.cohort_start_date, table.cohort_end_date, strict=True
        )
    )


T2D = {
    "id": 1,
    "items": [{"vocabulary_id": "ICD10CM", "concept_code": "E11", "include_descendants": True}],
}
METFORMIN = {"id": 2, "items": [{"vocabulary_id": "ATC", "concept_code": "A10BA02"}]}


def test_fixed_offset_with_death_censoring_and_era_collapse(lake: Lake, hospital_lake: Any) -> None:
    got = members(
        hospital_lake,
        {
            "name": "t2d visits",
            "concept_sets": [T2D],
            "primary_criteria": {
                "criteria": [{"domain": "condition_occurrence", "codeset_id": 1}],
                "limit": "all",
            },
            "end_strategy": {"type": "fixed_offset", "date_field": "start", "offset_days": 30},
            "censoring_criteria": [{"domain": "death"}],
            "collapse_days": 15,
        },
    )
    index = lake.entry(
        lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True)),
        limit="all",
    )
    index["end"] = (index.start + 30 * DAY).where(
        index.start + 30 * DAY <= index.op_end, index.op_end
    )
    deaths = lake.events("death")[["person_id", "start"]].rename(columns={"start": "death"})
    index = index.merge(deaths, on="person_id", how="left")
    censored = index.death.notna() & (index.death >= index.start) & (index.death <= index.end)
    index.loc[censored, "end"] = index.loc[censored, "death"]
    expected = collapse(index, 15)
    assert got == expected
    assert len(expected) < len(index)  # some periods merged


def test_drug_era_exit(lake: Lake, hospital_lake: Any) -> None:
    got = members(
        hospital_lake,
        {
            "name": "metformin eras",
            "concept_sets": [METFORMIN],
            "primary_criteria": {"criteria": [{"domain": "drug_exposure", "codeset_id": 2}]},
            "end_strategy": {"type": "drug_era", "codeset_id": 2, "gap_days": 30, "offset_days": 7},
        },
    )
    exposures = lake.events("drug_exposure", lake.concepts("ATC", "A10BA02"))
    eras = pd.DataFrame(collapse(exposures, 30), columns=["person_id", "era_start", "era_end"])
    index = lake.entry(exposures)
    found = index.merge(eras, on="person_id", how="left")
    found = found[(found.era_start <= found.start) & (found.era_end >= found.start)]
    end = (found.era_end + 7 * DAY).where(found.era_end + 7 * DAY <= found.op_end, found.op_end)
    expected = sorted(zip(found.person_id.astype(int), found.start, end, strict=True))
    assert got == expected
    assert any(e - s > 60 * DAY for _, s, e in expected)  # eras span several prescriptions


def test_end_of_observation(lake: Lake, hospital_lake: Any) -> None:
    got = members(
        hospital_lake,
        {
            "name": "observed after an HbA1c",
            "concept_sets": [
                {"id": 1, "items": [{"vocabulary_id": "LOINC", "concept_code": "4548-4"}]}
            ],
            "primary_criteria": {"criteria": [{"domain": "measurement", "codeset_id": 1}]},
        },
    )
    index = lake.entry(lake.events("measurement", lake.concepts("LOINC", "4548-4")))
    expected = sorted(zip(index.person_id.astype(int), index.start, index.op_end, strict=True))
    assert got == expected

"""Cohort counts with attrition vs pandas, continued: visits, the other domains, groups,
observation windows and limits (see test_counts.py for the approach)."""

from __future__ import annotations

from typing import Any

import pandas as pd
from tests.cohort.definitions import Json, cs, first, rule
from tests.cohort.reference import Lake, attrition, observed

# ---------------------------------------------------------------------- visits


def test_same_visit_and_visit_type(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "ECG in the visit of an inpatient diagnosis",
            "concept_sets": [
                cs(1, "ICD10CM", "I00-I99", descendants=True),
                cs(2, "ICD9Proc", "89.52", "87.44"),
            ],
            "primary_criteria": {
                "criteria": [
                    {
                        "domain": "condition_occurrence",
                        "codeset_id": 1,
                        "visit_type": [9201],
                    }
                ],
                "limit": "all",
            },
            "inclusion_rules": [
                rule(
                    "ECG in the same visit",
                    {
                        "criterion": {"domain": "procedure_occurrence", "codeset_id": 2},
                        "restrict_visit": True,
                    },
                )
            ],
        }
    )
    circulatory = lake.concepts("ICD10CM", "I00-I99", descendants=True)
    dx = lake.events("condition_occurrence", circulatory)
    inpatient = set(lake.events("visit_occurrence", {9201}).source_id)
    index = lake.entry(dx[dx.visit_id.isin(inpatient)], limit="all")
    ecg = lake.events("procedure_occurrence", lake.concepts("ICD9Proc", "89.52", "87.44"))
    expected = attrition(index, [lake.counts(index, ecg, same_visit=True) >= 1])
    assert observed(result) == expected
    assert expected["remaining"][0] > 0


def test_visits_with_lab_inside_the_visit(lake: Lake, count: Any) -> None:
    # window on the index end: a measurement from the admission to the discharge date
    result = count(
        {
            "name": "visits with an eGFR",
            "concept_sets": [cs(2, "LOINC", "62238-1")],
            "primary_criteria": {"criteria": [{"domain": "visit_occurrence"}], "limit": "all"},
            "inclusion_rules": [
                rule(
                    "eGFR during the visit",
                    {
                        "criterion": {"domain": "measurement", "codeset_id": 2},
                        "start_window": {"start": 0},
                        "end_window": {"end": 1, "use_index_end": True},
                    },
                ),
                rule(
                    "a visit of at most 1 day",
                    {
                        "criterion": {
                            "domain": "visit_occurrence",
                            "length_days": {"op": "lte", "value": 1},
                        },
                        "start_window": {"start": 0, "end": 0},
                        "restrict_visit": True,
                    },
                ),
            ],
        }
    )
    index = lake.entry(lake.events("visit_occurrence"), limit="all")
    egfr = lake.events("measurement", lake.concepts("LOINC", "62238-1"))
    pairs = index.merge(egfr, on="person_id", suffixes=("", "_e"))
    inside = pairs[
        (pairs.start_e >= pairs.start)
        & (pairs.end_e <= pairs.end + pd.Timedelta(days=1))
        & (pairs.start_e >= pairs.op_start)
        & (pairs.start_e <= pairs.op_end)
    ]
    during = index.event_id.isin(inside.event_id)
    short = (index.end - index.start).dt.days <= 1
    expected = attrition(index, [during, short])
    assert observed(result) == expected
    assert expected["remaining"][0] > 0
    assert expected["satisfied"][1] < expected["initial"]


def test_emergency_visit_within_30_days_before(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "admitted after an ER visit",
            "concept_sets": [{"id": 1, "items": [{"concept_id": 9201}]}],
            "primary_criteria": {"criteria": [{"domain": "visit_occurrence", "codeset_id": 1}]},
            "inclusion_rules": [
                rule(
                    "ER visit in the 30 days before",
                    {
                        "criterion": {"domain": "visit_occurrence", "visit_type": [9203]},
                        "start_window": {"start": -30, "end": 0},
                    },
                )
            ],
        }
    )
    index = lake.entry(lake.events("visit_occurrence", {9201}))
    er = lake.events("visit_occurrence", {9203})
    assert observed(result) == attrition(index, [lake.counts(index, er, -30, 0) >= 1])


# ---------------------------------------------------------------------- other domains


def test_death_within_a_year_of_heart_failure(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "heart failure deaths",
            "concept_sets": [cs(1, "ICD10CM", "I50.9")],
            "primary_criteria": {"criteria": [{"domain": "condition_occurrence", "codeset_id": 1}]},
            "inclusion_rules": [
                rule(
                    "died within 365 days",
                    {
                        "criterion": {"domain": "death"},
                        "start_window": {"start": 0, "end": 365},
                    },
                )
            ],
        }
    )
    index = lake.entry(lake.events("condition_occurrence", lake.concepts("ICD10CM", "I50.9")))
    deaths = lake.events("death")
    assert observed(result) == attrition(index, [lake.counts(index, deaths, 0, 365) >= 1])


def test_specimens_and_death_as_entry(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "specimens",
            "concept_sets": [cs(1, "medlake", "serum", "plasma")],
            "primary_criteria": {
                "criteria": [{"domain": "specimen", "codeset_id": 1}, {"domain": "death"}]
            },
            "inclusion_rules": [
                rule(
                    "at most 2 specimens of any kind in the year after",
                    {
                        "criterion": {"domain": "specimen"},
                        "start_window": {"start": 1, "end": 365},
                        "occurrence": {"type": "at_most", "count": 2},
                    },
                )
            ],
        }
    )
    entries = pd.concat(
        [
            lake.events("specimen", lake.concepts("medlake", "serum", "plasma")),
            lake.events("death"),
        ]
    )
    index = lake.entry(entries)
    specimens = lake.events("specimen")
    expected = attrition(index, [lake.counts(index, specimens, 1, 365) <= 2])
    assert observed(result) == expected
    assert 0 < expected["remaining"][0] < expected["initial"]


def test_observation_period_length_around_index(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "observed 3 years",
            "concept_sets": [cs(1, "ICD10CM", "I10")],
            "primary_criteria": {"criteria": [{"domain": "condition_occurrence", "codeset_id": 1}]},
            "inclusion_rules": [
                rule(
                    "in a period of 3 years or more",
                    {
                        "criterion": {
                            "domain": "observation_period",
                            "length_days": {"op": "gte", "value": 1095},
                        },
                        "start_window": {"end": 0},
                        "end_window": {"start": 0},
                    },
                )
            ],
        }
    )
    index = lake.entry(lake.events("condition_occurrence", lake.concepts("ICD10CM", "I10")))
    long = (index.op_end - index.op_start).dt.days >= 1095
    expected = attrition(index, [long])
    assert observed(result) == expected
    assert 0 < expected["remaining"][0] < expected["initial"]


def test_observation_and_device_domains(lake: Lake, count: Any) -> None:
    # The synthetic hospital exports no OMOP observation or device rows: both read as none.
    result = count(
        {
            "name": "observations and devices",
            "primary_criteria": {"criteria": [{"domain": "visit_occurrence"}]},
            "inclusion_rules": [
                rule(
                    "an observation or a device",
                    {"criterion": {"domain": "observation"}},
                    {"criterion": {"domain": "device_exposure"}},
                    type_="any",
                ),
                rule(
                    "no observation",
                    {
                        "criterion": {"domain": "observation"},
                        "occurrence": {"type": "exactly", "count": 0},
                    },
                ),
            ],
        }
    )
    index = lake.entry(lake.events("visit_occurrence"))
    some = (lake.counts(index, lake.events("observation")) >= 1) | (
        lake.counts(index, lake.events("device_exposure")) >= 1
    )
    none = lake.counts(index, lake.events("observation")) == 0
    assert observed(result) == attrition(index, [some, none])


# ---------------------------------------------------------------------- groups


def _comorbidities(lake: Lake, index: pd.DataFrame) -> pd.Series:
    found = pd.Series(0, index=index.index)
    for code in ("E11", "E78", "E66", "N18"):
        events = lake.events(
            "condition_occurrence", lake.concepts("ICD10CM", code, descendants=True)
        )
        found += (lake.counts(index, events, end=0) >= 1).astype(int)
    return found


def _comorbidity_criteria() -> list[Json]:
    return [
        {
            "criterion": {"domain": "condition_occurrence", "codeset_id": i},
            "start_window": {"end": 0},
        }
        for i in (2, 3, 4, 5)
    ]


COMORBIDITY_SETS = [
    cs(1, "ICD10CM", "I10"),
    cs(2, "ICD10CM", "E11", descendants=True),
    cs(3, "ICD10CM", "E78", descendants=True),
    cs(4, "ICD10CM", "E66", descendants=True),
    cs(5, "ICD10CM", "N18", descendants=True),
]


def test_at_least_and_at_most_groups(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "comorbidities",
            "concept_sets": COMORBIDITY_SETS,
            "primary_criteria": {
                "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
            },
            "inclusion_rules": [
                rule("at least 2 of 4", *_comorbidity_criteria(), type_="at_least", count=2),
                rule("at most 3 of 4", *_comorbidity_criteria(), type_="at_most", count=3),
            ],
        }
    )
    hypertension = lake.events("condition_occurrence", lake.concepts("ICD10CM", "I10"))
    index = lake.entry(first(hypertension))
    n = _comorbidities(lake, index)
    expected = attrition(index, [n >= 2, n <= 3])
    assert observed(result) == expected
    assert 0 < expected["remaining"][1] < expected["initial"]


def test_nested_groups_with_demographics(lake: Lake, count: Any) -> None:
    # ALL( ANY(diabetes before, obesity before), ANY(male, AT_LEAST 2 of 4) )
    result = count(
        {
            "name": "nested",
            "concept_sets": COMORBIDITY_SETS,
            "primary_criteria": {
                "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
            },
            "inclusion_rules": [
                rule(
                    "nested",
                    type_="all",
                    groups=[
                        {
                            "type": "any",
                            "criteria": [_comorbidity_criteria()[0], _comorbidity_criteria()[2]],
                        },
                        {
                            "type": "any",
                            "demographics": [{"gender": [8507]}],
                            "groups": [
                                {
                                    "type": "at_least",
                                    "count": 2,
                                    "criteria": _comorbidity_criteria(),
                                },
                            ],
                        },
                    ],
                )
            ],
        }
    )
    hypertension = lake.events("condition_occurrence", lake.concepts("ICD10CM", "I10"))
    index = lake.entry(first(hypertension))
    before = {}
    for code in ("E11", "E66"):
        events = lake.events(
            "condition_occurrence", lake.concepts("ICD10CM", code, descendants=True)
        )
        before[code] = lake.counts(index, events, end=0) >= 1
    nested = (before["E11"] | before["E66"]) & (
        (lake.gender(index) == 8507) | (_comorbidities(lake, index) >= 2)
    )
    expected = attrition(index, [nested])
    assert observed(result) == expected
    assert 0 < expected["remaining"][0] < expected["initial"]


# ---------------------------------------------------------------------- windows and limits


def test_prior_and_post_observation_days(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "observed before and after",
            "concept_sets": [cs(1, "ICD10CM", "E11", descendants=True)],
            "primary_criteria": {
                "criteria": [{"domain": "condition_occurrence", "codeset_id": 1}],
                "prior_observation_days": 365,
                "post_observation_days": 180,
            },
        }
    )
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    expected = lake.entry(t2d, prior=365, post=180).person_id.nunique()
    assert result.initial == expected
    assert 0 < expected < lake.entry(t2d).person_id.nunique()


def test_additional_criteria_and_qualified_limit(
    lake: Lake, count: Any, hospital_lake: Any
) -> None:
    from medlake.service.cohort import cohort_members, parse_definition

    data = {
        "name": "last high HbA1c after diabetes",
        "concept_sets": [cs(1, "LOINC", "4548-4"), cs(2, "ICD10CM", "E11", descendants=True)],
        "primary_criteria": {
            "criteria": [
                {
                    "domain": "measurement",
                    "codeset_id": 1,
                    "value_as_number": {"op": "gt", "value": 7},
                }
            ],
            "limit": "all",
        },
        "additional_criteria": {
            "criteria": [
                {
                    "criterion": {"domain": "condition_occurrence", "codeset_id": 2},
                    "start_window": {"end": -1},
                }
            ]
        },
        "qualified_limit": "last",
        "end_strategy": {"type": "fixed_offset", "offset_days": 0},
    }
    hba1c = lake.events("measurement", lake.concepts("LOINC", "4548-4"))
    index = lake.entry(hba1c[hba1c.value_as_number > 7], limit="all")
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    qualified = index[lake.counts(index, t2d, end=-1) >= 1]
    last = qualified.sort_values(["person_id", "start"]).groupby("person_id").tail(1)
    assert count(data).initial == len(last) > 0
    members = cohort_members(hospital_lake.workspace, parse_definition(data)).to_pandas()
    got = dict(zip(members.person_id, pd.to_datetime(members.cohort_start_date), strict=True))
    assert got == dict(zip(last.person_id, last.start, strict=True))

"""Cohort counts and attrition equal an independent pandas computation over the lake.

Each test states one definition and computes what it should find with pandas
(:mod:`tests.cohort.reference`) over the 400-patient synthetic hospital; together they
use every criterion type (every domain, omics, demographics, each group type, each
occurrence type, windows on index start and end, same visit, visit type, value filters,
concept sets with descendants, exclusions, source codes and mapping, limits and
observation windows), with test_counts_more.py; the omics ones are in
test_omics_criteria.py.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
from tests.cohort.definitions import cs, first, rule
from tests.cohort.reference import Lake, attrition, observed

from medlake.cohort import example_path
from medlake.service.cohort import load_definition

# ---------------------------------------------------------------------- the demo cohort


def test_demo_definition_metformin_t2d_hba1c(lake: Lake, count: Any, hospital_lake: Any) -> None:
    definition = load_definition(example_path("t2d_hba1c_metformin"))
    from medlake.service.cohort import count_cohort

    result = count_cohort(hospital_lake.workspace, definition, exact=True)
    metformin = lake.events("drug_exposure", lake.concepts("ATC", "A10BA02", descendants=True))
    index = lake.entry(first(metformin))
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    hba1c = lake.events("measurement", lake.concepts("LOINC", "4548-4"))
    high = hba1c[hba1c.value_as_number > 7]
    expected = attrition(
        index,
        [
            lake.counts(index, t2d, end=0) >= 1,
            lake.counts(index, high, -365, 0) >= 1,
            lake.age(index) >= 18,
        ],
    )
    assert observed(result) == expected
    assert expected["remaining"][-1] > 0  # the demo finds people


# ---------------------------------------------------------------------- concept sets


def test_condition_with_descendants_first_occurrence(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "t2d",
            "concept_sets": [cs(1, "ICD10CM", "E11", descendants=True)],
            "primary_criteria": {
                "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
            },
        }
    )
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    assert result.initial == lake.entry(first(t2d)).person_id.nunique() > 0


def test_concept_set_exclusion_source_codes_and_mapping(lake: Lake, count: Any) -> None:
    # E11 and below except E11.65, matched on condition_source_concept_id; plus mapped
    # source concepts of E78.5 (in the demo vocabulary each maps to itself).
    excluded = {"vocabulary_id": "ICD10CM", "concept_code": "E11.65", "excluded": True}
    mapped = {"vocabulary_id": "ICD10CM", "concept_code": "E78.5", "include_mapped": True}
    result = count(
        {
            "name": "source codes",
            "concept_sets": [
                {"id": 1, "items": [*cs(1, "ICD10CM", "E11", descendants=True)["items"], excluded]},
                {"id": 2, "items": [mapped]},
            ],
            "primary_criteria": {
                "criteria": [
                    {"domain": "condition_occurrence", "source_codeset_id": 1},
                    {"domain": "condition_occurrence", "codeset_id": 2},
                ],
                "limit": "all",
            },
        }
    )
    wanted = lake.concepts("ICD10CM", "E11", descendants=True) - lake.concepts("ICD10CM", "E11.65")
    events = pd.concat(
        [
            lake.events("condition_occurrence", wanted, source=True),
            lake.events("condition_occurrence", lake.concepts("ICD10CM", "E78.5")),
        ]
    )
    assert result.initial == lake.entry(events, limit="all").person_id.nunique() > 0
    # the exclusion matters: someone has E11.65
    assert not lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11.65")).empty


# ---------------------------------------------------------------------- demographics


def test_sex_and_age_at_index(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "hypertensive women 40-70",
            "concept_sets": [cs(1, "ICD10CM", "I10")],
            "primary_criteria": {"criteria": [{"domain": "condition_occurrence", "codeset_id": 1}]},
            "inclusion_rules": [
                rule("female", demographics=[{"gender": [8532]}]),
                rule(
                    "aged 40 to 70", demographics=[{"age": {"op": "bt", "value": 40, "extent": 70}}]
                ),
            ],
        }
    )
    index = lake.entry(lake.events("condition_occurrence", lake.concepts("ICD10CM", "I10")))
    age = lake.age(index)
    expected = attrition(index, [lake.gender(index) == 8532, (age >= 40) & (age <= 70)])
    assert observed(result) == expected
    assert 0 < expected["remaining"][1] < expected["initial"]


def test_criterion_age_and_gender_filters(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "men with a statin after 60",
            "concept_sets": [cs(1, "ATC", "C10AA", descendants=True)],
            "primary_criteria": {
                "criteria": [
                    {
                        "domain": "drug_exposure",
                        "codeset_id": 1,
                        "age": {"op": "gte", "value": 60},
                        "gender": [8507],
                    }
                ]
            },
        }
    )
    statins = lake.events("drug_exposure", lake.concepts("ATC", "C10AA", descendants=True))
    statins = statins[
        (statins.start.dt.year - statins.person_id.map(lake.person.year_of_birth) >= 60)
        & (statins.person_id.map(lake.person.gender_concept_id) == 8507)
    ]
    assert result.initial == lake.entry(statins).person_id.nunique() > 0


# ---------------------------------------------------------------------- occurrences


def test_at_least_two_distinct_statins_all_events(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "two statins",
            "concept_sets": [cs(1, "ATC", "C10AA", descendants=True)],
            "primary_criteria": {
                "criteria": [{"domain": "drug_exposure", "codeset_id": 1}],
                "limit": "all",
            },
            "inclusion_rules": [
                rule(
                    "two distinct statins in the observation period",
                    {
                        "criterion": {"domain": "drug_exposure", "codeset_id": 1},
                        "occurrence": {
                            "type": "at_least",
                            "count": 2,
                            "distinct": True,
                            "distinct_on": "concept",
                        },
                    },
                )
            ],
        }
    )
    statins = lake.events("drug_exposure", lake.concepts("ATC", "C10AA", descendants=True))
    index = lake.entry(statins, limit="all")
    expected = attrition(index, [lake.counts(index, statins, distinct="concept_id") >= 2])
    assert observed(result) == expected


def test_exactly_one_hba1c_in_the_year_after(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "one HbA1c",
            "concept_sets": [cs(1, "ICD10CM", "E11", descendants=True), cs(2, "LOINC", "4548-4")],
            "primary_criteria": {
                "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
            },
            "inclusion_rules": [
                rule(
                    "exactly one HbA1c within a year",
                    {
                        "criterion": {"domain": "measurement", "codeset_id": 2},
                        "start_window": {"start": 0, "end": 365},
                        "occurrence": {"type": "exactly", "count": 1},
                    },
                )
            ],
        }
    )
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    index = lake.entry(first(t2d))
    hba1c = lake.events("measurement", lake.concepts("LOINC", "4548-4"))
    expected = attrition(index, [lake.counts(index, hba1c, 0, 365) == 1])
    assert observed(result) == expected


def test_at_most_one_visit_in_two_years_before_and_none_of_a_kind(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "few visits",
            "concept_sets": [cs(1, "ICD10CM", "I10"), {"id": 2, "items": [{"concept_id": 9203}]}],
            "primary_criteria": {"criteria": [{"domain": "condition_occurrence", "codeset_id": 1}]},
            "inclusion_rules": [
                rule(
                    "at most one visit in the 2 years before",
                    {
                        "criterion": {"domain": "visit_occurrence"},
                        "start_window": {"start": -730, "end": -1},
                        "occurrence": {"type": "at_most", "count": 1},
                    },
                ),
                rule(
                    "never an emergency visit",
                    {
                        "criterion": {"domain": "visit_occurrence", "codeset_id": 2},
                        "occurrence": {"type": "exactly", "count": 0},
                    },
                ),
            ],
        }
    )
    index = lake.entry(lake.events("condition_occurrence", lake.concepts("ICD10CM", "I10")))
    visits = lake.events("visit_occurrence")
    er = lake.events("visit_occurrence", {9203})
    expected = attrition(
        index,
        [
            lake.counts(index, visits, -730, -1) <= 1,
            lake.counts(index, er) == 0,
        ],
    )
    assert observed(result) == expected
    assert expected["satisfied"][1] < expected["initial"]


def test_distinct_start_dates(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "BP on 3 days",
            "concept_sets": [cs(1, "ICD10CM", "I10"), cs(2, "LOINC", "8480-6")],
            "primary_criteria": {"criteria": [{"domain": "condition_occurrence", "codeset_id": 1}]},
            "inclusion_rules": [
                rule(
                    "systolic BP on 3 distinct days, ever",
                    {
                        "criterion": {"domain": "measurement", "codeset_id": 2},
                        "occurrence": {
                            "type": "at_least",
                            "count": 3,
                            "distinct": True,
                            "distinct_on": "start_date",
                        },
                    },
                )
            ],
        }
    )
    index = lake.entry(lake.events("condition_occurrence", lake.concepts("ICD10CM", "I10")))
    bp = lake.events("measurement", lake.concepts("LOINC", "8480-6"))
    expected = attrition(index, [lake.counts(index, bp, distinct="start") >= 3])
    assert observed(result) == expected


# ---------------------------------------------------------------------- values


def test_measurement_value_unit_and_reference_range(lake: Lake, count: Any) -> None:
    umol = lake.concepts("UCUM", "umol/L")
    result = count(
        {
            "name": "creatinine",
            "concept_sets": [cs(1, "LOINC", "14682-9")],
            "primary_criteria": {
                "criteria": [
                    {
                        "domain": "measurement",
                        "codeset_id": 1,
                        "unit": sorted(umol),
                        "value_as_number": {"op": "gte", "value": 90},
                        "range_low": {"op": "lte", "value": 44},
                        "range_high": {"op": "gt", "value": 120},
                    }
                ],
                "limit": "all",
            },
        }
    )
    m = lake.events("measurement", lake.concepts("LOINC", "14682-9"))
    m = m[m.unit_concept_id.isin(umol) & (m.value_as_number >= 90)]
    m = m[(m.range_low <= 44) & (m.range_high > 120)]
    assert result.initial == lake.entry(m, limit="all").person_id.nunique() > 0


def test_abnormal_egfr_then_ckd_diagnosis(lake: Lake, count: Any) -> None:
    result = count(
        {
            "name": "abnormal eGFR",
            "concept_sets": [cs(1, "LOINC", "62238-1"), cs(2, "ICD10CM", "N18", descendants=True)],
            "primary_criteria": {
                "criteria": [{"domain": "measurement", "codeset_id": 1, "abnormal": True}]
            },
            "inclusion_rules": [
                rule(
                    "CKD diagnosed on or after",
                    {
                        "criterion": {"domain": "condition_occurrence", "codeset_id": 2},
                        "start_window": {"start": 0},
                    },
                )
            ],
        }
    )
    egfr = lake.events("measurement", lake.concepts("LOINC", "62238-1"))
    egfr = egfr[(egfr.value_as_number < egfr.range_low) | (egfr.value_as_number > egfr.range_high)]
    index = lake.entry(egfr)
    ckd = lake.events("condition_occurrence", lake.concepts("ICD10CM", "N18", descendants=True))
    expected = attrition(index, [lake.counts(index, ckd, start=0) >= 1])
    assert observed(result) == expected
    assert expected["remaining"][0] > 0


def test_qualitative_value_as_concept(lake: Lake, count: Any) -> None:
    positive = lake.concepts("LOINC", "LA6576-8")
    result = count(
        {
            "name": "HBsAg positive",
            "concept_sets": [cs(1, "LOINC", "5195-3")],
            "primary_criteria": {
                "criteria": [
                    {
                        "domain": "measurement",
                        "codeset_id": 1,
                        "value_as_concept": sorted(positive),
                    }
                ]
            },
        }
    )
    m = lake.events("measurement", lake.concepts("LOINC", "5195-3"))
    expected = lake.entry(m[m.value_as_concept_id.isin(positive)]).person_id.nunique()
    assert result.initial == expected > 0

"""ATLAS/Circe cohort JSON runs here unchanged, or is refused with the element's JSON path.

The Circe documents are written by hand in Circe's published format (OHDSI/circe-be
``CohortExpression``), with Athena's concept ids, so the translation must find the demo
vocabulary's concepts by vocabulary and code.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from tests.cohort.reference import observed

from medlake.cohort import example_path
from medlake.cohort.circe import circe_to_definition
from medlake.cohort.model import CohortDefinition
from medlake.errors import InputError
from medlake.service.cohort import count_cohort, load_definition


def concept(concept_id: int, code: str, vocabulary: str, name: str = "") -> dict[str, Any]:
    return {
        "CONCEPT_ID": concept_id,
        "CONCEPT_NAME": name,
        "STANDARD_CONCEPT": "S",
        "STANDARD_CONCEPT_CAPTION": "Standard",
        "INVALID_REASON": "V",
        "INVALID_REASON_CAPTION": "Valid",
        "CONCEPT_CODE": code,
        "DOMAIN_ID": "",
        "VOCABULARY_ID": vocabulary,
        "CONCEPT_CLASS_ID": "",
    }


def concept_set(id_: int, name: str, item: dict[str, Any], descendants: bool) -> dict[str, Any]:
    return {
        "id": id_,
        "name": name,
        "expression": {
            "items": [
                {
                    "concept": item,
                    "isExcluded": False,
                    "includeDescendants": descendants,
                    "includeMapped": False,
                }
            ]
        },
    }


def window(start: int | None, start_coeff: int, end: int | None, end_coeff: int) -> dict[str, Any]:
    return {
        "Start": {"Days": start, "Coeff": start_coeff},
        "End": {"Days": end, "Coeff": end_coeff},
        "UseIndexEnd": False,
        "UseEventEnd": False,
    }


def group(
    criteria: list[dict[str, Any]], demographics: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    return {
        "Type": "ALL",
        "CriteriaList": criteria,
        "DemographicCriteriaList": demographics or [],
        "Groups": [],
    }


# The demo cohort as ATLAS would export it (Athena ids: metformin 21600713 is the ATC
# class, type 2 diabetes 35206878 the ICD10CM code E11, HbA1c 3004410).
DEMO_CIRCE: dict[str, Any] = {
    "cdmVersionRange": ">=5.0.0",
    "PrimaryCriteria": {
        "CriteriaList": [{"DrugExposure": {"CodesetId": 0, "First": True}}],
        "ObservationWindow": {"PriorDays": 0, "PostDays": 0},
        "PrimaryCriteriaLimit": {"Type": "First"},
    },
    "ConceptSets": [
        concept_set(0, "metformin", concept(21600713, "A10BA02", "ATC", "metformin"), True),
        concept_set(1, "type 2 diabetes", concept(35206878, "E11", "ICD10CM"), True),
        concept_set(2, "HbA1c", concept(3004410, "4548-4", "LOINC"), False),
    ],
    "QualifiedLimit": {"Type": "First"},
    "ExpressionLimit": {"Type": "First"},
    "InclusionRules": [
        {
            "name": "type 2 diabetes diagnosed on or before the metformin start",
            "description": None,
            "expression": group(
                [
                    {
                        "Criteria": {
                            "ConditionOccurrence": {"CodesetId": 1, "ConditionTypeExclude": False}
                        },
                        "StartWindow": window(None, -1, 0, 1),
                        "RestrictVisit": False,
                        "IgnoreObservationPeriod": False,
                        "Occurrence": {"Type": 2, "Count": 1, "IsDistinct": False},
                    }
                ]
            ),
        },
        {
            "name": "HbA1c > 7 % within 365 days before the metformin start",
            "expression": group(
                [
                    {
                        "Criteria": {
                            "Measurement": {
                                "CodesetId": 2,
                                "ValueAsNumber": {"Value": 7, "Op": "gt"},
                                "MeasurementTypeExclude": False,
                                "Abnormal": False,
                            }
                        },
                        "StartWindow": window(365, -1, 0, 1),
                        "Occurrence": {"Type": 2, "Count": 1},
                    }
                ]
            ),
        },
        {
            "name": "aged 18 or over at the metformin start",
            "expression": group([], [{"Age": {"Value": 18, "Op": "gte"}}]),
        },
    ],
    "EndStrategy": {"CustomEra": {"DrugCodesetId": 0, "GapDays": 30, "Offset": 0}},
    "CensoringCriteria": [],
    "CollapseSettings": {"CollapseType": "ERA", "EraPad": 0},
    "CensorWindow": {},
}


def test_atlas_export_of_the_demo_cohort_counts_like_the_native_definition(
    hospital_lake: Any, tmp_path: Path
) -> None:
    path = tmp_path / "atlas.json"
    path.write_text(json.dumps({"name": "demo from ATLAS", "expression": json.dumps(DEMO_CIRCE)}))
    translated = load_definition(path, circe=True)
    native = load_definition(example_path("t2d_hba1c_metformin"))
    assert translated.name == "demo from ATLAS"
    from_circe = count_cohort(hospital_lake.workspace, translated, exact=True)
    from_native = count_cohort(hospital_lake.workspace, native, exact=True)
    assert observed(from_circe) == observed(from_native)
    assert from_circe.final > 0


def test_translation_of_each_element() -> None:
    circe = {
        "Title": "translated",
        "ConceptSets": [
            {
                "id": 3,
                "name": "x",
                "expression": {
                    "items": [
                        {
                            "concept": {"CONCEPT_ID": 8507},
                            "isExcluded": True,
                            "includeDescendants": False,
                        },
                    ]
                },
            }
        ],
        "PrimaryCriteria": {
            "CriteriaList": [
                {"VisitOccurrence": {"CodesetId": 3, "VisitLength": {"Value": 2, "Op": "gte"}}}
            ],
            "ObservationWindow": {"PriorDays": 30, "PostDays": 7},
            "PrimaryCriteriaLimit": {"Type": "All"},
        },
        "AdditionalCriteria": {
            "Type": "AT_LEAST",
            "Count": 1,
            "CriteriaList": [
                {
                    "Criteria": {"Death": {}},
                    "StartWindow": {
                        "Start": {"Days": 0, "Coeff": 1},
                        "End": {"Days": 30, "Coeff": 1},
                        "UseIndexEnd": True,
                    },
                    "EndWindow": {
                        "Start": {"Days": None, "Coeff": -1},
                        "End": {"Days": 10, "Coeff": 1},
                    },
                    "RestrictVisit": True,
                    "IgnoreObservationPeriod": True,
                    "Occurrence": {
                        "Type": 0,
                        "Count": 0,
                        "IsDistinct": True,
                        "CountColumn": "START_DATE",
                    },
                }
            ],
            "DemographicCriteriaList": [{"Gender": [{"CONCEPT_ID": 8532}]}],
            "Groups": [{"Type": "AT_MOST", "Count": 2, "CriteriaList": [], "Groups": []}],
        },
        "QualifiedLimit": {"Type": "Last"},
        "ExpressionLimit": {"Type": "All"},
        "EndStrategy": {"DateOffset": {"DateField": "EndDate", "Offset": 14}},
        "CensoringCriteria": [{"ObservationPeriod": {"PeriodLength": {"Value": 1, "Op": "lt"}}}],
        "CollapseSettings": {"CollapseType": "ERA", "EraPad": 3},
    }
    expected = CohortDefinition.model_validate(
        {
            "name": "translated",
            "concept_sets": [
                {"id": 3, "name": "x", "items": [{"concept_id": 8507, "excluded": True}]}
            ],
            "primary_criteria": {
                "criteria": [
                    {
                        "domain": "visit_occurrence",
                        "codeset_id": 3,
                        "length_days": {"op": "gte", "value": 2},
                    }
                ],
                "prior_observation_days": 30,
                "post_observation_days": 7,
                "limit": "all",
            },
            "additional_criteria": {
                "type": "at_least",
                "count": 1,
                "criteria": [
                    {
                        "criterion": {"domain": "death"},
                        "start_window": {"start": 0, "end": 30, "use_index_end": True},
                        "end_window": {"end": 10},
                        "restrict_visit": True,
                        "ignore_observation_period": True,
                        "occurrence": {
                            "type": "exactly",
                            "count": 0,
                            "distinct": True,
                            "distinct_on": "start_date",
                        },
                    }
                ],
                "demographics": [{"gender": [8532]}],
                "groups": [{"type": "at_most", "count": 2}],
            },
            "qualified_limit": "last",
            "expression_limit": "all",
            "end_strategy": {"type": "fixed_offset", "date_field": "end", "offset_days": 14},
            "censoring_criteria": [
                {"domain": "observation_period", "length_days": {"op": "lt", "value": 1}}
            ],
            "collapse_days": 3,
        }
    )
    assert circe_to_definition(circe) == expected


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (
            lambda d: d["PrimaryCriteria"]["CriteriaList"].append(
                {"ConditionEra": {"CodesetId": 1}}
            ),
            "$.PrimaryCriteria.CriteriaList[1].ConditionEra",
        ),
        (
            lambda d: d["InclusionRules"][1]["expression"]["CriteriaList"][0]["Criteria"][
                "Measurement"
            ].update({"Operator": [{"CONCEPT_ID": 4172703}]}),
            "$.InclusionRules[1].expression.CriteriaList[0].Criteria.Measurement.Operator",
        ),
        (
            lambda d: d["PrimaryCriteria"]["CriteriaList"][0]["DrugExposure"].update(
                {"CorrelatedCriteria": group([{"Criteria": {"Death": {}}}])}
            ),
            "$.PrimaryCriteria.CriteriaList[0].DrugExposure.CorrelatedCriteria",
        ),
        (
            lambda d: d["InclusionRules"][0]["expression"]["CriteriaList"][0]["Occurrence"].update(
                {"CountColumn": "DOMAIN_SOURCE_CONCEPT"}
            ),
            "$.InclusionRules[0].expression.CriteriaList[0].Occurrence.CountColumn",
        ),
        (
            lambda d: d.update({"CensorWindow": {"StartDate": "2020-01-01"}}),
            "$.CensorWindow.StartDate",
        ),
    ],
)
def test_untranslatable_elements_are_refused_with_their_path(change: Any, path: str) -> None:
    document = json.loads(json.dumps(DEMO_CIRCE))
    change(document)
    with pytest.raises(InputError) as error:
        circe_to_definition(document, source="atlas.json")
    assert f"atlas.json: {path} " in error.value.message


def test_empty_values_of_unsupported_options_are_ignored() -> None:
    document = json.loads(json.dumps(DEMO_CIRCE))
    measurement = document["InclusionRules"][1]["expression"]["CriteriaList"][0]["Criteria"][
        "Measurement"
    ]
    measurement.update({"Operator": [], "ProviderSpecialty": None, "RangeLowRatio": None})
    assert circe_to_definition(document) == circe_to_definition(DEMO_CIRCE)

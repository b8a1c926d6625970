"""OHDSI ATLAS/Circe cohort JSON to a medlake :class:`CohortDefinition`.

Reads the cohort expression as ATLAS exports it (``ConceptSets``, ``PrimaryCriteria``,
``AdditionalCriteria``, ``InclusionRules``, ``EndStrategy``, ``CensoringCriteria``,
``CollapseSettings`` ...; also the WebAPI wrapper ``{"name": ..., "expression": ...}``)
so that cohorts written in ATLAS run here unchanged. Anything this translation cannot
express is refused with the JSON path of the element (``$.InclusionRules[0].expression
.CriteriaList[1].Criteria.Measurement.Operator``), never dropped: a cohort silently
broader than its author wrote would be worse than no cohort. Keys holding an empty value
(``null``, ``[]``, ``{}``, ``false``), as ATLAS writes for unused options, are ignored.

Concept set items that carry ``VOCABULARY_ID`` and ``CONCEPT_CODE`` are matched by
vocabulary and code, so a definition written against Athena's concept ids also finds
its concepts in a lake whose vocabulary numbers them differently (the demo vocabulary).

Circe's format is documented by its Java classes (OHDSI/circe-be,
``org.ohdsi.circe.cohortdefinition``); the names below are theirs.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from medlake.cohort.model import CohortDefinition
from medlake.errors import InputError

Json = dict[str, Any]

# Circe criteria names -> medlake domain, and per domain Circe field -> medlake field.
_DOMAINS = {
    "ConditionOccurrence": "condition_occurrence",
    "DrugExposure": "drug_exposure",
    "ProcedureOccurrence": "procedure_occurrence",
    "Measurement": "measurement",
    "Observation": "observation",
    "VisitOccurrence": "visit_occurrence",
    "DeviceExposure": "device_exposure",
    "Specimen": "specimen",
    "Death": "death",
    "ObservationPeriod": "observation_period",
}
_COMMON = {
    "CodesetId": "codeset_id",
    "First": "first",
    "OccurrenceStartDate": "start_date",
    "OccurrenceEndDate": "end_date",
    "Age": "age",
    "Gender": "gender",
    "VisitType": "visit_type",
}
_SPECIFIC: dict[str, dict[str, str]] = {
    "ConditionOccurrence": {
        "ConditionType": "type_concept",
        "ConditionSourceConcept": "source_codeset_id",
    },
    "DrugExposure": {
        "DrugType": "type_concept",
        "DrugSourceConcept": "source_codeset_id",
        "DaysSupply": "days_supply",
    },
    "ProcedureOccurrence": {
        "ProcedureType": "type_concept",
        "ProcedureSourceConcept": "source_codeset_id",
    },
    "Measurement": {
        "MeasurementType": "type_concept",
        "MeasurementSourceConcept": "source_codeset_id",
        "ValueAsNumber": "value_as_number",
        "ValueAsConcept": "value_as_concept",
        "Unit": "unit",
        "RangeLow": "range_low",
        "RangeHigh": "range_high",
        "Abnormal": "abnormal",
    },
    "Observation": {
        "ObservationType": "type_concept",
        "ObservationSourceConcept": "source_codeset_id",
        "ValueAsNumber": "value_as_number",
        "ValueAsConcept": "value_as_concept",
        "Unit": "unit",
    },
    "VisitOccurrence": {
        "VisitSourceConcept": "source_codeset_id",
        "VisitLength": "length_days",
    },
    "DeviceExposure": {"DeviceType": "type_concept", "DeviceSourceConcept": "source_codeset_id"},
    "Specimen": {"SpecimenType": "type_concept"},
    "Death": {"DeathType": "type_concept", "DeathSourceConcept": "source_codeset_id"},
    "ObservationPeriod": {
        "PeriodType": "type_concept",
        "PeriodStartDate": "start_date",
        "PeriodEndDate": "end_date",
        "PeriodLength": "length_days",
        "AgeAtStart": "age",
    },
}
_CONCEPT_LISTS = {"Gender", "VisitType", "ValueAsConcept", "Unit", "Race", "Ethnicity"} | {
    k for fields in _SPECIFIC.values() for k, v in fields.items() if v == "type_concept"
}
_RANGES = {
    "Age",
    "ValueAsNumber",
    "RangeLow",
    "RangeHigh",
    "DaysSupply",
    "VisitLength",
    "PeriodLength",
    "AgeAtStart",
}
_DATE_RANGES = {"OccurrenceStartDate", "OccurrenceEndDate", "PeriodStartDate", "PeriodEndDate"}
_OCCURRENCE_TYPES = {0: "exactly", 1: "at_most", 2: "at_least"}
_COUNT_COLUMNS = {"DOMAIN_CONCEPT": "concept", "START_DATE": "start_date", "VISIT_ID": "visit"}
_LIMITS = {"First": "first", "Last": "last", "All": "all"}


def _empty(value: object) -> bool:
    return value is None or value is False or value == [] or value == {}


class _Translator:
    def __init__(self, source: str) -> None:
        self.source = source

    def refuse(self, path: str, what: str = "is not supported") -> InputError:
        return InputError(f"{self.source}: {path} {what}")

    def obj(self, value: object, path: str) -> Json:
        if not isinstance(value, dict):
            raise self.refuse(path, "must be a JSON object")
        return value

    def check_keys(self, value: Json, known: set[str], path: str) -> None:
        for key, item in value.items():
            if key not in known and not _empty(item):
                raise self.refuse(f"{path}.{key}")

    # ------------------------------------------------------------------ pieces

    def concept_ids(self, value: object, path: str) -> list[int]:
        if not isinstance(value, list):
            raise self.refuse(path, "must be a list of concepts")
        ids = []
        for i, concept in enumerate(value):
            concept = self.obj(concept, f"{path}[{i}]")
            if "CONCEPT_ID" not in concept:
                raise self.refuse(f"{path}[{i}]", "has no CONCEPT_ID")
            ids.append(int(concept["CONCEPT_ID"]))
        return ids

    def numeric_range(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        self.check_keys(value, {"Value", "Op", "Extent"}, path)
        out = {"op": value.get("Op"), "value": value.get("Value")}
        if value.get("Extent") is not None:
            out["extent"] = value["Extent"]
        return out

    def window(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        self.check_keys(value, {"Start", "End", "UseIndexEnd", "UseEventEnd"}, path)
        out: Json = {
            "use_index_end": bool(value.get("UseIndexEnd")),
            "use_event_end": bool(value.get("UseEventEnd")),
        }
        for side in ("Start", "End"):
            point = self.obj(value.get(side) or {}, f"{path}.{side}")
            self.check_keys(point, {"Days", "Coeff"}, f"{path}.{side}")
            if point.get("Days") is not None:
                out[side.lower()] = int(point["Days"]) * int(point.get("Coeff", 1))
        return out

    def criterion(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        if len(value) != 1:
            raise self.refuse(path, "must hold exactly one criterion")
        ((kind, body),) = value.items()
        if kind not in _DOMAINS:
            raise self.refuse(f"{path}.{kind}")
        body = self.obj(body or {}, f"{path}.{kind}")
        fields = _COMMON | _SPECIFIC[kind]
        out: Json = {"domain": _DOMAINS[kind]}
        for key, item in body.items():
            where = f"{path}.{kind}.{key}"
            if _empty(item):
                continue
            if key not in fields:
                raise self.refuse(where)
            target = fields[key]
            if key in _CONCEPT_LISTS:
                out[target] = self.concept_ids(item, where)
            elif key in _RANGES or key in _DATE_RANGES:
                out[target] = self.numeric_range(item, where)
            else:
                out[target] = item
        return out

    def group(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        self.check_keys(
            value, {"Type", "Count", "CriteriaList", "DemographicCriteriaList", "Groups"}, path
        )
        kind = str(value.get("Type", "ALL")).lower()
        if kind not in ("all", "any", "at_least", "at_most"):
            raise self.refuse(f"{path}.Type", f"{value.get('Type')!r} is not a group type")
        out: Json = {"type": kind, "criteria": [], "demographics": [], "groups": []}
        if value.get("Count") is not None:
            out["count"] = value["Count"]
        for i, item in enumerate(value.get("CriteriaList") or []):
            out["criteria"].append(self.correlated(item, f"{path}.CriteriaList[{i}]"))
        for i, item in enumerate(value.get("DemographicCriteriaList") or []):
            out["demographics"].append(
                self.demographic(item, f"{path}.DemographicCriteriaList[{i}]")
            )
        for i, item in enumerate(value.get("Groups") or []):
            out["groups"].append(self.group(item, f"{path}.Groups[{i}]"))
        return out

    def correlated(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        self.check_keys(
            value,
            {
                "Criteria",
                "StartWindow",
                "EndWindow",
                "Occurrence",
                "RestrictVisit",
                "IgnoreObservationPeriod",
            },
            path,
        )
        out: Json = {
            "criterion": self.criterion(value.get("Criteria"), f"{path}.Criteria"),
            "restrict_visit": bool(value.get("RestrictVisit")),
            "ignore_observation_period": bool(value.get("IgnoreObservationPeriod")),
        }
        if value.get("StartWindow"):
            out["start_window"] = self.window(value["StartWindow"], f"{path}.StartWindow")
        if value.get("EndWindow"):
            out["end_window"] = self.window(value["EndWindow"], f"{path}.EndWindow")
        occurrence = self.obj(
            value.get("Occurrence") or {"Type": 2, "Count": 1}, f"{path}.Occurrence"
        )
        self.check_keys(
            occurrence, {"Type", "Count", "IsDistinct", "CountColumn"}, f"{path}.Occurrence"
        )
        if occurrence.get("Type") not in _OCCURRENCE_TYPES:
            raise self.refuse(
                f"{path}.Occurrence.Type", f"{occurrence.get('Type')!r} is not 0, 1 or 2"
            )
        out["occurrence"] = {
            "type": _OCCURRENCE_TYPES[occurrence["Type"]],
            "count": occurrence.get("Count", 1),
            "distinct": bool(occurrence.get("IsDistinct")),
        }
        column = occurrence.get("CountColumn")
        if column is not None:
            if column not in _COUNT_COLUMNS:
                raise self.refuse(f"{path}.Occurrence.CountColumn", f"{column!r} is not supported")
            out["occurrence"]["distinct_on"] = _COUNT_COLUMNS[column]
        return out

    def demographic(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        self.check_keys(
            value,
            {"Age", "Gender", "Race", "Ethnicity", "OccurrenceStartDate", "OccurrenceEndDate"},
            path,
        )
        out: Json = {}
        if value.get("Age"):
            out["age"] = self.numeric_range(value["Age"], f"{path}.Age")
        for key in ("Gender", "Race", "Ethnicity"):
            if value.get(key):
                out[key.lower()] = self.concept_ids(value[key], f"{path}.{key}")
        for key, target in (
            ("OccurrenceStartDate", "index_start_date"),
            ("OccurrenceEndDate", "index_end_date"),
        ):
            if value.get(key):
                out[target] = self.numeric_range(value[key], f"{path}.{key}")
        return out

    def concept_set(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        expression = self.obj(value.get("expression") or {}, f"{path}.expression")
        items = []
        for i, item in enumerate(expression.get("items") or []):
            where = f"{path}.expression.items[{i}]"
            item = self.obj(item, where)
            self.check_keys(
                item, {"concept", "isExcluded", "includeDescendants", "includeMapped"}, where
            )
            concept = self.obj(item.get("concept"), f"{where}.concept")
            out: Json = {
                "excluded": bool(item.get("isExcluded")),
                "include_descendants": bool(item.get("includeDescendants")),
                "include_mapped": bool(item.get("includeMapped")),
            }
            if concept.get("VOCABULARY_ID") and concept.get("CONCEPT_CODE"):
                out["vocabulary_id"] = concept["VOCABULARY_ID"]
                out["concept_code"] = str(concept["CONCEPT_CODE"])
            elif concept.get("CONCEPT_ID") is not None:
                out["concept_id"] = int(concept["CONCEPT_ID"])
            else:
                raise self.refuse(
                    f"{where}.concept", "has neither CONCEPT_ID nor a vocabulary and code"
                )
            items.append(out)
        return {"id": value.get("id"), "name": value.get("name", ""), "items": items}

    def limit(self, value: object, path: str) -> str:
        value = self.obj(value or {"Type": "First"}, path)
        kind = value.get("Type", "First")
        if kind not in _LIMITS:
            raise self.refuse(f"{path}.Type", f"{kind!r} is not First, Last or All")
        return _LIMITS[kind]

    def end_strategy(self, value: object, path: str) -> Json:
        value = self.obj(value, path)
        self.check_keys(value, {"DateOffset", "CustomEra"}, path)
        if value.get("DateOffset"):
            offset = self.obj(value["DateOffset"], f"{path}.DateOffset")
            self.check_keys(offset, {"DateField", "Offset"}, f"{path}.DateOffset")
            field = {"StartDate": "start", "EndDate": "end"}.get(
                offset.get("DateField", "StartDate")
            )
            if field is None:
                raise self.refuse(f"{path}.DateOffset.DateField", "must be StartDate or EndDate")
            return {
                "type": "fixed_offset",
                "date_field": field,
                "offset_days": offset.get("Offset", 0),
            }
        if value.get("CustomEra"):
            era = self.obj(value["CustomEra"], f"{path}.CustomEra")
            self.check_keys(
                era,
                {"DrugCodesetId", "GapDays", "Offset", "DaysSupplyOverride"},
                f"{path}.CustomEra",
            )
            if era.get("DaysSupplyOverride") is not None:
                raise self.refuse(f"{path}.CustomEra.DaysSupplyOverride")
            return {
                "type": "drug_era",
                "codeset_id": era.get("DrugCodesetId"),
                "gap_days": era.get("GapDays", 0),
                "offset_days": era.get("Offset", 0),
            }
        return {"type": "end_of_observation"}

    # ------------------------------------------------------------------ the expression

    def expression(self, value: object, name: str) -> Json:
        value = self.obj(value, "$")
        self.check_keys(
            value,
            {
                "ConceptSets",
                "PrimaryCriteria",
                "AdditionalCriteria",
                "QualifiedLimit",
                "ExpressionLimit",
                "InclusionRules",
                "EndStrategy",
                "CensoringCriteria",
                "CollapseSettings",
                "CensorWindow",
                "cdmVersionRange",
                "Title",
            },
            "$",
        )
        censor_window = self.obj(value.get("CensorWindow") or {}, "$.CensorWindow")
        self.check_keys(censor_window, set(), "$.CensorWindow")
        primary = self.obj(value.get("PrimaryCriteria"), "$.PrimaryCriteria")
        self.check_keys(
            primary,
            {"CriteriaList", "ObservationWindow", "PrimaryCriteriaLimit"},
            "$.PrimaryCriteria",
        )
        window = self.obj(
            primary.get("ObservationWindow") or {}, "$.PrimaryCriteria.ObservationWindow"
        )
        self.check_keys(window, {"PriorDays", "PostDays"}, "$.PrimaryCriteria.ObservationWindow")
        out: Json = {
            "name": value.get("Title") or name,
            "concept_sets": [
                self.concept_set(c, f"$.ConceptSets[{i}]")
                for i, c in enumerate(value.get("ConceptSets") or [])
            ],
            "primary_criteria": {
                "criteria": [
                    self.criterion(c, f"$.PrimaryCriteria.CriteriaList[{i}]")
                    for i, c in enumerate(primary.get("CriteriaList") or [])
                ],
                "prior_observation_days": window.get("PriorDays", 0),
                "post_observation_days": window.get("PostDays", 0),
                "limit": self.limit(
                    primary.get("PrimaryCriteriaLimit"), "$.PrimaryCriteria.PrimaryCriteriaLimit"
                ),
            },
            "qualified_limit": self.limit(value.get("QualifiedLimit"), "$.QualifiedLimit"),
            "expression_limit": self.limit(value.get("ExpressionLimit"), "$.ExpressionLimit"),
            "inclusion_rules": [],
            "censoring_criteria": [
                self.criterion(c, f"$.CensoringCriteria[{i}]")
                for i, c in enumerate(value.get("CensoringCriteria") or [])
            ],
        }
        if value.get("AdditionalCriteria"):
            out["additional_criteria"] = self.group(
                value["AdditionalCriteria"], "$.AdditionalCriteria"
            )
        for i, rule in enumerate(value.get("InclusionRules") or []):
            path = f"$.InclusionRules[{i}]"
            rule = self.obj(rule, path)
            self.check_keys(rule, {"name", "description", "expression"}, path)
            out["inclusion_rules"].append(
                {
                    "name": rule.get("name") or f"rule {i + 1}",
                    "description": rule.get("description") or "",
                    "expression": self.group(rule.get("expression"), f"{path}.expression"),
                }
            )
        if value.get("EndStrategy"):
            out["end_strategy"] = self.end_strategy(value["EndStrategy"], "$.EndStrategy")
        collapse = self.obj(value.get("CollapseSettings") or {}, "$.CollapseSettings")
        self.check_keys(collapse, {"CollapseType", "EraPad"}, "$.CollapseSettings")
        if collapse.get("CollapseType", "ERA") != "ERA":
            raise self.refuse("$.CollapseSettings.CollapseType", "must be ERA")
        out["collapse_days"] = collapse.get("EraPad", 0)
        return out


def circe_to_definition(
    data: object, name: str = "circe cohort", source: str = "circe"
) -> CohortDefinition:
    """Translate a Circe cohort expression (or WebAPI cohort with ``expression``)."""
    if isinstance(data, dict) and isinstance(data.get("expression"), dict | str):
        expression = data["expression"]
        if isinstance(expression, str):  # WebAPI stores the expression as a JSON string
            import json

            expression = json.loads(expression)
        name = data.get("name") or name
        data = expression
    translated = _Translator(source).expression(data, name)
    try:
        return CohortDefinition.model_validate(translated)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InputError(f"{source}: after translation, {where}: {first['msg']}") from None

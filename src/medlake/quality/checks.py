"""What a data-quality check is: its type, where it applies, and what it found.

Check *types* follow OHDSI's DataQualityDashboard (DQD) and Kahn et al.'s harmonized
framework (Kahn MG et al., "A Harmonized Data Quality Assessment Terminology and
Framework for the Secondary Use of Electronic Health Record Data", eGEMs 4(1), 2016):
each type has a Kahn category (conformance, completeness, plausibility), a subcategory
(value, relational, computational; atemporal, temporal) and a level (table, field,
concept). A *check* is a type instantiated on one table, field or concept
(:mod:`medlake.quality.catalogue`), with a threshold: the percent of rows allowed to
violate it (:mod:`medlake.quality.thresholds`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

CONFORMANCE = "conformance"
COMPLETENESS = "completeness"
PLAUSIBILITY = "plausibility"

PASS = "pass"
FAIL = "fail"
ERROR = "error"
NOT_APPLICABLE = "n/a"


@dataclass(frozen=True)
class CheckType:
    """A kind of check, as DQD names it, with its place in Kahn's framework."""

    name: str
    category: str
    subcategory: str
    level: str
    description: str


CHECK_TYPES: dict[str, CheckType] = {
    t.name: t
    for t in (
        CheckType("cdm_table", CONFORMANCE, "relational", "table", "the table exists"),
        CheckType(
            "measure_person_completeness",
            COMPLETENESS,
            "atemporal",
            "table",
            "persons with no row in the table",
        ),
        CheckType(
            "quarantined_records",
            CONFORMANCE,
            "value",
            "table",
            "source records set aside at ingest for this reason, per record loaded",
        ),
        CheckType("cdm_field", CONFORMANCE, "relational", "field", "the field exists"),
        CheckType(
            "cdm_datatype", CONFORMANCE, "value", "field", "the field has the specified type"
        ),
        CheckType("is_required", CONFORMANCE, "relational", "field", "a required field is null"),
        CheckType(
            "is_primary_key", CONFORMANCE, "relational", "field", "primary-key value repeated"
        ),
        CheckType(
            "is_foreign_key",
            CONFORMANCE,
            "relational",
            "field",
            "value not found in the table it refers to",
        ),
        CheckType(
            "fk_concept",
            CONFORMANCE,
            "relational",
            "field",
            "concept id not in the vocabulary (0 is allowed)",
        ),
        CheckType(
            "fk_domain", CONFORMANCE, "value", "field", "concept of another domain than the table's"
        ),
        CheckType(
            "is_standard_valid_concept",
            CONFORMANCE,
            "value",
            "field",
            "concept not standard or not valid",
        ),
        CheckType(
            "standard_concept_record_completeness",
            COMPLETENESS,
            "value",
            "field",
            "rows whose concept is 0 (source code not mapped)",
        ),
        CheckType(
            "unknown_concept_record_completeness",
            COMPLETENESS,
            "value",
            "field",
            "rows whose concept says 'unknown' (0, or e.g. 8551 unknown gender)",
        ),
        CheckType(
            "source_concept_record_completeness",
            COMPLETENESS,
            "value",
            "field",
            "rows whose source concept is 0",
        ),
        CheckType(
            "source_value_completeness",
            COMPLETENESS,
            "value",
            "field",
            "rows with a concept but no source value",
        ),
        CheckType("measure_value_completeness", COMPLETENESS, "value", "field", "null values"),
        CheckType(
            "plausible_value_low", PLAUSIBILITY, "atemporal", "field", "value below plausible"
        ),
        CheckType(
            "plausible_value_high", PLAUSIBILITY, "atemporal", "field", "value above plausible"
        ),
        CheckType(
            "plausible_temporal_after",
            PLAUSIBILITY,
            "temporal",
            "field",
            "date before the person's birth",
        ),
        CheckType(
            "plausible_during_life",
            PLAUSIBILITY,
            "temporal",
            "field",
            "date after the person's death",
        ),
        CheckType(
            "plausible_start_before_end", PLAUSIBILITY, "temporal", "field", "start after end"
        ),
        CheckType(
            "within_visit_dates",
            PLAUSIBILITY,
            "temporal",
            "field",
            "date outside its visit (with a week's slack)",
        ),
        CheckType(
            "plausible_gender",
            PLAUSIBILITY,
            "atemporal",
            "concept",
            "concept implausible for the person's sex",
        ),
        CheckType(
            "plausible_value_range",
            PLAUSIBILITY,
            "atemporal",
            "concept",
            "value outside the plausible range for the concept and its unit",
        ),
        CheckType(
            "plausible_unit_concept_ids",
            CONFORMANCE,
            "value",
            "concept",
            "unit not one expected for the concept",
        ),
    )
}


@dataclass(frozen=True)
class Check:
    """One concrete check: a type on a table, field or concept, and its threshold.

    ``params`` hold what the type needs (a target table, bounds, a concept code, ...).
    """

    check_id: str
    check_type: str
    table: str
    field: str | None = None
    concept: str | None = None  # "VOCABULARY:code" for concept-level checks
    params: tuple[tuple[str, Any], ...] = ()
    threshold_pct: float = 0.0

    @property
    def type(self) -> CheckType:
        return CHECK_TYPES[self.check_type]

    def param(self, name: str, default: Any = None) -> Any:
        return dict(self.params).get(name, default)

    def describe(self) -> str:
        where = ".".join(p for p in (self.table, self.field) if p)
        concept = f" [{self.concept}]" if self.concept else ""
        return f"{where}{concept}: {self.type.description}"


@dataclass
class CheckResult:
    """What one check found: violating rows of how many, against its threshold."""

    check: Check
    rows_violating: int | None
    rows_total: int | None
    status: str
    message: str | None = None
    elapsed_ms: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def pct_violating(self) -> float | None:
        if self.rows_violating is None or not self.rows_total:
            return None if self.rows_violating is None else 0.0
        return 100.0 * self.rows_violating / self.rows_total


def status_for(violating: int, total: int, threshold_pct: float) -> str:
    """``pass`` when the violating percent is within the threshold; n/a with no rows."""
    if total == 0:
        return NOT_APPLICABLE
    return PASS if 100.0 * violating / total <= threshold_pct else FAIL


__all__ = [
    "CHECK_TYPES",
    "COMPLETENESS",
    "CONFORMANCE",
    "ERROR",
    "FAIL",
    "NOT_APPLICABLE",
    "PASS",
    "PLAUSIBILITY",
    "Check",
    "CheckResult",
    "CheckType",
    "status_for",
]

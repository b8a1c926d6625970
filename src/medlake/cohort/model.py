"""Cohort definitions as data: the Pydantic models a definition JSON file is read into.

The shape follows OHDSI Circe (the ATLAS cohort expression) closely, so that ATLAS
definitions translate one to one (:mod:`medlake.cohort.circe`), with snake_case names,
signed day offsets instead of Circe's ``Days``/``Coeff`` pairs, and two kinds of criteria
Circe does not have (``genotype``, ``expression``).

A definition is read as:

1. **entry events** (``primary_criteria``): occurrences in any domain matching a criterion,
   inside an observation period with ``prior_observation_days`` before and
   ``post_observation_days`` after, limited to each person's first, last or all;
2. ``additional_criteria`` (a group), then ``qualified_limit``;
3. named ``inclusion_rules`` (each a group; attrition is reported per rule), then
   ``expression_limit``;
4. the exit: ``end_strategy``, ``censoring_criteria`` and ``collapse_days`` (periods of a
   person closer than this are merged into one cohort era).

Concept sets are referenced by ``codeset_id`` (standard concept column) or
``source_codeset_id`` (the domain's ``*_source_concept_id`` column).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Operator = Literal["lt", "lte", "gt", "gte", "eq", "neq", "bt", "nbt"]
Limit = Literal["first", "last", "all"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------------- concept sets


class ConceptSetItem(_Model):
    """One concept (by id, or by vocabulary and code) and how to expand it."""

    concept_id: int | None = None
    vocabulary_id: str | None = None
    concept_code: str | None = None
    include_descendants: bool = False
    include_mapped: bool = False  # also the source concepts that map to it ("Maps to")
    excluded: bool = False

    @model_validator(mode="after")
    def _one_reference(self) -> ConceptSetItem:
        by_code = self.vocabulary_id is not None and self.concept_code is not None
        if (self.concept_id is None) == (not by_code):
            raise ValueError("give either concept_id or both vocabulary_id and concept_code")
        return self


class ConceptSet(_Model):
    id: int
    name: str = ""
    items: list[ConceptSetItem] = Field(min_length=1)


# ---------------------------------------------------------------------- value filters


class NumericRange(_Model):
    """``value op x`` (``bt``/``nbt``: between ``value`` and ``extent``, inclusive)."""

    op: Operator
    value: float
    extent: float | None = None

    @model_validator(mode="after")
    def _extent(self) -> NumericRange:
        if self.op in ("bt", "nbt") and self.extent is None:
            raise ValueError(f"op {self.op!r} needs an extent")
        return self


class DateRange(_Model):
    op: Operator
    value: dt.date
    extent: dt.date | None = None

    @model_validator(mode="after")
    def _extent(self) -> DateRange:
        if self.op in ("bt", "nbt") and self.extent is None:
            raise ValueError(f"op {self.op!r} needs an extent")
        return self


# ---------------------------------------------------------------------- criteria


class DomainCriterion(_Model):
    """Filters every domain criterion has."""

    codeset_id: int | None = None
    source_codeset_id: int | None = None
    first: bool = False  # only the person's first such event (in the whole record)
    start_date: DateRange | None = None
    end_date: DateRange | None = None
    age: NumericRange | None = None  # years at the event's start (calendar-year difference)
    gender: list[int] = []  # gender_concept_id of the person
    visit_type: list[int] = []  # visit_concept_id of the event's visit
    type_concept: list[int] = []  # the domain's *_type_concept_id


class ConditionOccurrence(DomainCriterion):
    domain: Literal["condition_occurrence"] = "condition_occurrence"


class DrugExposure(DomainCriterion):
    domain: Literal["drug_exposure"] = "drug_exposure"
    days_supply: NumericRange | None = None


class ProcedureOccurrence(DomainCriterion):
    domain: Literal["procedure_occurrence"] = "procedure_occurrence"


class ValuedCriterion(DomainCriterion):
    value_as_number: NumericRange | None = None
    value_as_concept: list[int] = []
    unit: list[int] = []


class Measurement(ValuedCriterion):
    domain: Literal["measurement"] = "measurement"
    range_low: NumericRange | None = None
    range_high: NumericRange | None = None
    abnormal: bool = False  # value below range_low or above range_high


class Observation(ValuedCriterion):
    domain: Literal["observation"] = "observation"


class VisitOccurrence(DomainCriterion):
    domain: Literal["visit_occurrence"] = "visit_occurrence"
    length_days: NumericRange | None = None


class DeviceExposure(DomainCriterion):
    domain: Literal["device_exposure"] = "device_exposure"


class Specimen(DomainCriterion):
    domain: Literal["specimen"] = "specimen"


class Death(DomainCriterion):
    domain: Literal["death"] = "death"


class ObservationPeriod(DomainCriterion):
    domain: Literal["observation_period"] = "observation_period"
    length_days: NumericRange | None = None


class Genotype(_Model):
    """Carriers of ``allele`` at ``variant`` in the registered genotypes of linked samples.

    One event per genotyped sample with at least ``min_copies`` copies (1 = carrier,
    2 = homozygous), dated by the sample's collection date.
    """

    domain: Literal["genotype"] = "genotype"
    variant: str
    allele: str
    min_copies: int = Field(default=1, ge=1, le=2)


class Expression(_Model):
    """Samples whose expression of ``gene`` passes ``value`` or ``quantile``.

    ``measure`` is counts per million (library-size normalized) or the raw count.
    ``quantile`` is a range in quantile space (``{"op": "gt", "value": 0.9}``: above
    the 90th percentile of all registered samples' values for the gene).
    """

    domain: Literal["expression"] = "expression"
    gene: str
    measure: Literal["cpm", "count"] = "cpm"
    value: NumericRange | None = None
    quantile: NumericRange | None = None

    @model_validator(mode="after")
    def _one_threshold(self) -> Expression:
        if (self.value is None) == (self.quantile is None):
            raise ValueError("give exactly one of value or quantile")
        if self.quantile is not None:
            bounds = [self.quantile.value] + (
                [self.quantile.extent] if self.quantile.extent is not None else []
            )
            if any(not 0 <= b <= 1 for b in bounds):
                raise ValueError("quantiles lie between 0 and 1")
        return self


ClinicalCriterion = (
    ConditionOccurrence
    | DrugExposure
    | ProcedureOccurrence
    | Measurement
    | Observation
    | VisitOccurrence
    | DeviceExposure
    | Specimen
    | Death
    | ObservationPeriod
)
OmicsCriterion = Genotype | Expression
Criterion = Annotated[ClinicalCriterion | OmicsCriterion, Field(discriminator="domain")]


# ---------------------------------------------------------------------- groups


class Window(_Model):
    """Days relative to the index event; ``None`` is unbounded on that side.

    ``{"start": -365, "end": 0}``: from a year before the index start to the index start.
    """

    start: int | None = None
    end: int | None = None
    use_index_end: bool = False  # measure from the index event's end date
    use_event_end: bool = False  # place the criterion event by its end date


class Occurrence(_Model):
    type: Literal["exactly", "at_most", "at_least"] = "at_least"
    count: int = Field(default=1, ge=0)
    distinct: bool = False
    distinct_on: Literal["concept", "start_date", "visit"] = "concept"


class CorrelatedCriterion(_Model):
    """A criterion's events counted relative to each index event."""

    criterion: Criterion
    start_window: Window = Window()
    end_window: Window | None = None  # on the criterion event's end date
    occurrence: Occurrence = Occurrence()
    restrict_visit: bool = False  # same visit as the index event
    ignore_observation_period: bool = False


class DemographicCriterion(_Model):
    """The person at the index event."""

    age: NumericRange | None = None
    gender: list[int] = []
    race: list[int] = []
    ethnicity: list[int] = []
    index_start_date: DateRange | None = None
    index_end_date: DateRange | None = None


class CriteriaGroup(_Model):
    type: Literal["all", "any", "at_least", "at_most"] = "all"
    count: int | None = None
    criteria: list[CorrelatedCriterion] = []
    demographics: list[DemographicCriterion] = []
    groups: list[CriteriaGroup] = []

    @model_validator(mode="after")
    def _count(self) -> CriteriaGroup:
        if self.type in ("at_least", "at_most") and self.count is None:
            raise ValueError(f"a group of type {self.type!r} needs a count")
        return self

    @property
    def items(self) -> int:
        return len(self.criteria) + len(self.demographics) + len(self.groups)


# ---------------------------------------------------------------------- the definition


class PrimaryCriteria(_Model):
    criteria: list[Criterion] = Field(min_length=1)
    prior_observation_days: int = Field(default=0, ge=0)
    post_observation_days: int = Field(default=0, ge=0)
    limit: Limit = "first"


class InclusionRule(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    expression: CriteriaGroup


class EndOfObservation(_Model):
    type: Literal["end_of_observation"] = "end_of_observation"


class FixedOffset(_Model):
    type: Literal["fixed_offset"] = "fixed_offset"
    date_field: Literal["start", "end"] = "start"
    offset_days: int = 0


class DrugEra(_Model):
    """Exit at the end of the era of ``codeset_id`` exposures that contains the index.

    Exposures of the concept set are merged into eras when the gap between one's end and
    the next one's start is at most ``gap_days``; the cohort ends ``offset_days`` after
    the end of the era holding the index start (capped at the observation period end).
    """

    type: Literal["drug_era"] = "drug_era"
    codeset_id: int
    gap_days: int = Field(default=0, ge=0)
    offset_days: int = 0


EndStrategy = Annotated[EndOfObservation | FixedOffset | DrugEra, Field(discriminator="type")]


class CohortDefinition(_Model):
    name: str = Field(min_length=1)
    description: str = ""
    concept_sets: list[ConceptSet] = []
    primary_criteria: PrimaryCriteria
    additional_criteria: CriteriaGroup | None = None
    qualified_limit: Limit = "first"
    inclusion_rules: list[InclusionRule] = []
    expression_limit: Limit = "all"
    end_strategy: EndStrategy = EndOfObservation()
    censoring_criteria: list[Criterion] = []
    collapse_days: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _codesets_exist(self) -> CohortDefinition:
        ids = [c.id for c in self.concept_sets]
        if len(ids) != len(set(ids)):
            raise ValueError("concept set ids must be unique")
        known = set(ids)
        for criterion in iter_criteria(self):
            for ref in ("codeset_id", "source_codeset_id"):
                value = getattr(criterion, ref, None)
                if value is not None and value not in known:
                    raise ValueError(f"{ref} {value} names no concept set")
        if isinstance(self.end_strategy, DrugEra) and self.end_strategy.codeset_id not in known:
            raise ValueError(
                f"end_strategy codeset_id {self.end_strategy.codeset_id} names no concept set"
            )
        return self


def iter_groups(definition: CohortDefinition) -> list[CriteriaGroup]:
    """Every group of the definition, nested ones included."""
    roots = [r.expression for r in definition.inclusion_rules]
    if definition.additional_criteria is not None:
        roots.append(definition.additional_criteria)
    found: list[CriteriaGroup] = []
    while roots:
        group = roots.pop()
        found.append(group)
        roots.extend(group.groups)
    return found


def iter_criteria(definition: CohortDefinition) -> list[ClinicalCriterion | OmicsCriterion]:
    """Every criterion of the definition: entry, in groups, and censoring."""
    criteria: list[ClinicalCriterion | OmicsCriterion] = list(definition.primary_criteria.criteria)
    for group in iter_groups(definition):
        criteria.extend(c.criterion for c in group.criteria)
    criteria.extend(definition.censoring_criteria)
    return criteria

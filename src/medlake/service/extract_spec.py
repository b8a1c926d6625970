"""The feature spec of an extraction: which columns a study's analysis dataset has.

A JSON file read by ``medlake extract --features SPEC`` (format in docs/privacy.md).
Concept sets are written as in cohort definitions and may also be taken from the
definition by id. Windows are days relative to the index date (the cohort start),
both ends inclusive; an open end is unbounded.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from medlake.cohort.model import ConceptSet
from medlake.errors import InputError, UsageError

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MeasurementStat = Literal["latest", "latest_day", "min", "max", "mean", "count"]
QuasiIdentifier = Literal["age_band", "sex", "birth_year", "region"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Window(_Model):
    """Days relative to the index date, inclusive; ``None`` is unbounded."""

    start: int | None = None
    end: int | None = 0

    @model_validator(mode="after")
    def _ordered(self) -> Window:
        if self.start is not None and self.end is not None and self.start > self.end:
            raise ValueError(f"window start {self.start} is after its end {self.end}")
        return self


class Demographics(_Model):
    sex: bool = True
    age_band: bool = True
    birth_year: bool = True
    region: bool = True
    index_date: bool = True
    """The (shifted) cohort start and end dates."""


class ConditionFeature(_Model):
    """``<name>``: 1 when the person has a condition of the set in the window, else 0."""

    name: str
    codeset_id: int
    window: Window = Window()


class DrugFeature(_Model):
    """``<name>_exposed`` (0/1), ``<name>_count`` (exposure records) and
    ``<name>_first_day`` (days from index to the first one) in the window."""

    name: str
    codeset_id: int
    window: Window = Window()


class MeasurementFeature(_Model):
    """``<name>_<stat>`` of ``value_as_number`` over the window's measurements.

    ``latest`` is the value of the last measurement (by date, time, then id) and
    ``latest_day`` its day relative to index.
    """

    name: str
    codeset_id: int
    window: Window = Window(start=-365, end=0)
    stats: list[MeasurementStat] = Field(default_factory=lambda: ["latest", "min", "max", "mean"])
    unit_concept_id: int | None = None


class GenotypeFeature(_Model):
    """``<name>``: copies (0, 1, 2) of ``allele`` at ``variant`` in the person's genotype."""

    variant: str
    allele: str
    name: str | None = None

    @property
    def column(self) -> str:
        return self.name or _safe(f"{self.variant}_{self.allele}")


class ExpressionFeature(_Model):
    """``<name>``: the gene's read count (or counts per million) in the person's sample."""

    gene: str
    measure: Literal["count", "cpm"] = "count"
    name: str | None = None

    @property
    def column(self) -> str:
        return self.name or _safe(f"{self.gene}_{self.measure}")


class FeatureSpec(_Model):
    concept_sets: list[ConceptSet] = Field(default_factory=list)
    demographics: Demographics = Demographics()
    conditions: list[ConditionFeature] = Field(default_factory=list)
    drugs: list[DrugFeature] = Field(default_factory=list)
    measurements: list[MeasurementFeature] = Field(default_factory=list)
    genotypes: list[GenotypeFeature] = Field(default_factory=list)
    expression: list[ExpressionFeature] = Field(default_factory=list)
    quasi_identifiers: list[QuasiIdentifier] | None = None
    """Default: every demographic column the dataset has."""
    k: int | None = Field(default=None, ge=1)
    """Default: the workspace's ``privacy.k``."""
    pseudonym_context: str = ""
    """Mixed into the pseudonyms: extracts with the same context share them."""

    @model_validator(mode="after")
    def _distinct_columns(self) -> FeatureSpec:
        seen: set[str] = set()
        for column in self.feature_columns():
            if not _NAME.match(column):
                raise ValueError(f"feature name {column!r} is not a plain column name")
            if column in seen:
                raise ValueError(f"feature column {column!r} is defined twice")
            seen.add(column)
        return self

    def feature_columns(self) -> list[str]:
        columns = [c.name for c in self.conditions]
        for d in self.drugs:
            columns += [f"{d.name}_exposed", f"{d.name}_count", f"{d.name}_first_day"]
        for m in self.measurements:
            columns += [f"{m.name}_{stat}" for stat in m.stats]
        columns += [g.column for g in self.genotypes]
        columns += [e.column for e in self.expression]
        return columns

    def quasi_identifier_columns(self) -> list[str]:
        shown = [
            q for q in ("age_band", "sex", "birth_year", "region") if getattr(self.demographics, q)
        ]
        if self.quasi_identifiers is None:
            return shown
        missing = [q for q in self.quasi_identifiers if q not in shown]
        if missing:
            raise UsageError(f"quasi-identifiers not in the dataset: {', '.join(missing)}")
        return list(self.quasi_identifiers)


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", text if re.match(r"[A-Za-z_]", text) else f"v_{text}")


def parse_feature_spec(data: object, source: str = "feature spec") -> FeatureSpec:
    try:
        return FeatureSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "(top)"
        raise InputError(f"{source}: {where}: {first['msg']}") from exc


def load_feature_spec(path: Path) -> FeatureSpec:
    """Read a feature spec file; errors name the file and the field."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not valid JSON: {exc}") from exc
    return parse_feature_spec(data, str(path))

"""The concrete checks: each check type instantiated over the CDM's table specs.

Nothing here is written per table by hand except what the CDM's specs cannot say: which
concept field is a table's main one (and its domain), the field-level plausible bounds,
and the concept-level data files (``data/plausible_values.csv``: plausible range and
units per measurement concept; ``data/plausible_gender.csv``: concepts plausible for one
sex only). Every other check follows from :class:`~medlake.engine.TableSpec`: required
fields, primary and foreign keys, concept fields, date fields, start/end pairs.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Iterable, Sequence
from functools import cache
from importlib import resources

from medlake.engine import TableSpec
from medlake.quality.checks import Check

#: Each table's main concept field and the domain its concepts must be in.
MAIN_CONCEPTS: dict[tuple[str, str], str] = {
    ("person", "gender_concept_id"): "Gender",
    ("visit_occurrence", "visit_concept_id"): "Visit",
    ("visit_detail", "visit_detail_concept_id"): "Visit",
    ("condition_occurrence", "condition_concept_id"): "Condition",
    ("drug_exposure", "drug_concept_id"): "Drug",
    ("procedure_occurrence", "procedure_concept_id"): "Procedure",
    ("device_exposure", "device_concept_id"): "Device",
    ("measurement", "measurement_concept_id"): "Measurement",
    ("measurement", "unit_concept_id"): "Unit",
    ("observation", "observation_concept_id"): "Observation",
    ("observation", "unit_concept_id"): "Unit",
    ("specimen", "specimen_concept_id"): "Specimen",
    ("specimen", "unit_concept_id"): "Unit",
    ("death", "cause_concept_id"): "Condition",
}

#: Field-level plausible bounds (DQD's plausibleValueLow/High), inclusive.
FIELD_BOUNDS: dict[tuple[str, str], tuple[float | None, float | None]] = {
    ("person", "year_of_birth"): (1850, dt.date.today().year),
    ("person", "month_of_birth"): (1, 12),
    ("person", "day_of_birth"): (1, 31),
    ("drug_exposure", "quantity"): (0.0000001, 10_000),
    ("drug_exposure", "days_supply"): (1, 365),
    ("drug_exposure", "refills"): (0, 24),
    ("specimen", "quantity"): (0, None),
    ("procedure_occurrence", "quantity"): (1, 100),
    ("device_exposure", "quantity"): (1, 1000),
    ("observation_period", "observation_period_id"): (1, None),
}

#: Concepts whose sex is determined by the person's gender concept.
GENDER_CONCEPTS = {"M": 8507, "F": 8532}

#: Fields whose "unknown" concepts are counted as missing (Kahn: value completeness).
UNKNOWN_CONCEPTS: dict[tuple[str, str], tuple[int, ...]] = {
    ("person", "gender_concept_id"): (0, 8551),  # 8551 UNKNOWN gender
}

# Where a vocabulary's concepts are recorded, for concept-level checks.
_VOCABULARY_FIELD = {
    "ICD10CM": ("condition_occurrence", "condition_concept_id"),
    "ICD10": ("condition_occurrence", "condition_concept_id"),
    "SNOMED": ("condition_occurrence", "condition_concept_id"),
    "ICD9Proc": ("procedure_occurrence", "procedure_concept_id"),
    "LOINC": ("measurement", "measurement_concept_id"),
}

# Medlake's operational tables are checked by their own code, not as CDM tables.
_QUARANTINE_CLASSES = {
    "bad_date": ("unparseable date", "is not a date", "not a valid date"),
    "missing_required_field": ("missing required field",),
}


@cache
def plausible_values() -> tuple[dict[str, str], ...]:
    """Rows of ``data/plausible_values.csv``."""
    return _data_rows("plausible_values.csv")


@cache
def plausible_gender() -> tuple[dict[str, str], ...]:
    """Rows of ``data/plausible_gender.csv``."""
    return _data_rows("plausible_gender.csv")


def _data_rows(name: str) -> tuple[dict[str, str], ...]:
    text = (
        resources.files("medlake.quality")
        .joinpath("data")
        .joinpath(name)
        .read_text(encoding="utf-8")
    )
    return tuple(csv.DictReader(text.splitlines()))


def quarantine_classes() -> dict[str, tuple[str, ...]]:
    """Quarantine reason classes and the phrases that mark them."""
    return dict(_QUARANTINE_CLASSES)


def build_catalogue(tables: Sequence[TableSpec]) -> list[Check]:
    """Every concrete check over ``tables`` (the CDM's), in a stable order."""
    names = {table.name for table in tables}
    checks: list[Check] = []
    for table in tables:
        checks.extend(_table_checks(table, names))
    checks.extend(_concept_checks(names))
    checks.extend(
        Check(f"quarantined_records.quarantine.{name}", "quarantined_records", "quarantine",
              params=(("reason_class", name),))
        for name in _QUARANTINE_CLASSES
    )  # fmt: skip
    seen: set[str] = set()
    for check in checks:
        if check.check_id in seen:
            raise ValueError(f"two checks share the id {check.check_id}")
        seen.add(check.check_id)
    return checks


def _table_checks(table: TableSpec, names: set[str]) -> Iterable[Check]:
    t = table.name
    yield Check(f"cdm_table.{t}", "cdm_table", t)
    columns = set(table.column_names)
    if "person_id" in columns and t != "person":
        yield Check(f"measure_person_completeness.{t}", "measure_person_completeness", t)
    key = table.primary_key
    for column in table.columns:
        f = column.name
        yield Check(f"cdm_field.{t}.{f}", "cdm_field", t, f)
        yield Check(
            f"cdm_datatype.{t}.{f}", "cdm_datatype", t, f, params=(("type", column.logical_type),)
        )
        if column.required:
            yield Check(f"is_required.{t}.{f}", "is_required", t, f)
        else:
            yield Check(f"measure_value_completeness.{t}.{f}", "measure_value_completeness", t, f)
        if key == (f,):
            yield Check(f"is_primary_key.{t}.{f}", "is_primary_key", t, f)
        target = column.foreign_key
        if target is not None and target[0] == "concept":
            yield from _concept_field_checks(table, f, columns)
        elif target is not None and target[0] in names and target[0] != t:
            yield Check(
                f"is_foreign_key.{t}.{f}", "is_foreign_key", t, f,
                params=(("target", target[0]), ("target_field", target[1])),
            )  # fmt: skip
        bounds = FIELD_BOUNDS.get((t, f))
        if bounds is not None:
            low, high = bounds
            if low is not None:
                yield Check(f"plausible_value_low.{t}.{f}", "plausible_value_low", t, f,
                            params=(("low", low),))  # fmt: skip
            if high is not None:
                yield Check(f"plausible_value_high.{t}.{f}", "plausible_value_high", t, f,
                            params=(("high", high),))  # fmt: skip
    yield from _date_checks(table, columns, names)


def _concept_field_checks(table: TableSpec, f: str, columns: set[str]) -> Iterable[Check]:
    t = table.name
    yield Check(f"fk_concept.{t}.{f}", "fk_concept", t, f)
    if f.endswith("_source_concept_id"):
        yield Check(
            f"source_concept_record_completeness.{t}.{f}",
            "source_concept_record_completeness",
            t,
            f,
        )
        return
    if table.column(f).required:
        yield Check(
            f"standard_concept_record_completeness.{t}.{f}",
            "standard_concept_record_completeness", t, f,
        )  # fmt: skip
    unknown = UNKNOWN_CONCEPTS.get((t, f))
    if unknown is not None:
        kind = "unknown_concept_record_completeness"
        yield Check(f"{kind}.{t}.{f}", kind, t, f, params=(("unknown", unknown),))
    domain = MAIN_CONCEPTS.get((t, f))
    if domain is None:
        return
    yield Check(f"fk_domain.{t}.{f}", "fk_domain", t, f, params=(("domain", domain),))
    yield Check(f"is_standard_valid_concept.{t}.{f}", "is_standard_valid_concept", t, f)
    source_value = f.removesuffix("_concept_id") + "_source_value"
    if source_value in columns:
        yield Check(
            f"source_value_completeness.{t}.{source_value}", "source_value_completeness",
            t, source_value, params=(("concept_field", f),),
        )  # fmt: skip


def _date_checks(table: TableSpec, columns: set[str], names: set[str]) -> Iterable[Check]:
    t = table.name
    dates = [c.name for c in table.columns if c.logical_type == "date"]
    for f in dates:
        end = _end_of(f, columns)
        if end is not None:
            yield Check(f"plausible_start_before_end.{t}.{f}", "plausible_start_before_end", t, f,
                        params=(("end", end),))  # fmt: skip
    if "person_id" not in columns or t == "person":
        return
    for f in dates:
        yield Check(f"plausible_temporal_after.{t}.{f}", "plausible_temporal_after", t, f)
    # An end date may well pass a death (a prescription's planned end); starts may not.
    if t != "death" and "death" in names and dates:
        first = dates[0]
        yield Check(f"plausible_during_life.{t}.{first}", "plausible_during_life", t, first)
    starts = [f for f in dates if _end_of(f, columns) is not None or f.endswith("_date")]
    if "visit_occurrence_id" in columns and t != "visit_occurrence" and starts:
        first = starts[0]
        yield Check(f"within_visit_dates.{t}.{first}", "within_visit_dates", t, first)


def _end_of(field: str, columns: set[str]) -> str | None:
    for start, end in (("_start_date", "_end_date"), ("_date", "_end_date")):
        if field.endswith(start) and not field.endswith("_end_date"):
            candidate = field.removesuffix(start) + end
            if candidate in columns and candidate != field:
                return candidate
    return None


def _concept_checks(names: set[str]) -> Iterable[Check]:
    for row in plausible_values():
        concept = f"{row['vocabulary_id']}:{row['concept_code']}"
        table, field = _VOCABULARY_FIELD[row["vocabulary_id"]]
        if table not in names:
            continue
        yield Check(
            f"plausible_value_range.{table}.value_as_number.{concept}", "plausible_value_range",
            table, "value_as_number", concept,
            params=(("concept_field", field), ("low", float(row["low"])),
                    ("high", float(row["high"]))),
        )  # fmt: skip
        yield Check(
            f"plausible_unit_concept_ids.{table}.unit_concept_id.{concept}",
            "plausible_unit_concept_ids", table, "unit_concept_id", concept,
            params=(("concept_field", field), ("units", tuple(row["units"].split("|")))),
        )  # fmt: skip
    for row in plausible_gender():
        concept = f"{row['vocabulary_id']}:{row['concept_code']}"
        table, field = _VOCABULARY_FIELD[row["vocabulary_id"]]
        if table not in names:
            continue
        yield Check(
            f"plausible_gender.{table}.{field}.{concept}", "plausible_gender", table, field,
            concept, params=(("gender", row["gender"]),),
        )  # fmt: skip


__all__ = [
    "FIELD_BOUNDS",
    "GENDER_CONCEPTS",
    "MAIN_CONCEPTS",
    "UNKNOWN_CONCEPTS",
    "build_catalogue",
    "plausible_gender",
    "plausible_values",
    "quarantine_classes",
]

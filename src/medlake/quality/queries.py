"""Checks compiled to Ibis: each a pair (violating rows, rows checked) on a base table.

Checks that share a base (a table, or a table joined to ``person``, ``death`` or
``visit_occurrence``) become one aggregate query, so a whole table's checks cost one
scan on the engine. Schema checks (``cdm_table``, ``cdm_field``, ``cdm_datatype``) are
answered from the lake's schema without a query.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

import ibis
import ibis.expr.types as ir

from medlake.quality.catalogue import GENDER_CONCEPTS, quarantine_classes
from medlake.quality.checks import Check

SCHEMA_TYPES = frozenset({"cdm_table", "cdm_field", "cdm_datatype"})
_WEEK = dt.timedelta(days=7)

Tables = Callable[[str], ir.Table]


@dataclass(frozen=True)
class Compiled:
    """A check as two integer expressions over its base."""

    violating: ir.IntegerScalar
    total: ir.IntegerScalar


def base_key(check: Check) -> str:
    """The table a check's aggregate runs on (a domain table, or ``person``)."""
    if check.check_type == "measure_person_completeness":
        return "person"
    return check.table


def joins_needed(check: Check) -> frozenset[str]:
    """Which of ``person``, ``death``, ``visit`` the check needs joined to its table."""
    kind = check.check_type
    if kind in ("plausible_temporal_after", "plausible_gender"):
        return frozenset({"person"})
    if kind == "plausible_during_life":
        return frozenset({"death"})
    if kind == "within_visit_dates":
        return frozenset({"visit"})
    return frozenset()


def base_table(key: str, tables: Tables, joins: frozenset[str] = frozenset()) -> ir.Table:
    """Table ``key`` with the ``joins`` it needs, as left joins (rows are never lost).

    The joined columns are ``qc_yob``, ``qc_gender`` (person), ``qc_death`` (death),
    ``qc_vstart``, ``qc_vend`` (the row's visit); null where nothing joined.
    """
    t = tables(key)
    if "person" in joins:
        p = tables("person").select(
            qc_pid=ibis._.person_id, qc_yob=ibis._.year_of_birth, qc_gender=ibis._.gender_concept_id
        )
        t = t.left_join(p, t.person_id == p.qc_pid).drop("qc_pid")
    if "death" in joins:
        d = tables("death")
        # One row per person, whatever the death table holds.
        d = d.group_by(qc_did=d.person_id).aggregate(qc_death=d.death_date.min())
        t = t.left_join(d, t.person_id == d.qc_did).drop("qc_did")
    if "visit" in joins:
        v = tables("visit_occurrence").select(
            qc_vid=ibis._.visit_occurrence_id,
            qc_vstart=ibis._.visit_start_date,
            qc_vend=ibis._.visit_end_date,
        )
        t = t.left_join(v, t.visit_occurrence_id == v.qc_vid)
    return t


def compile_check(
    check: Check,
    base: ir.Table,
    tables: Tables,
    resolve: Callable[[str], list[int]] | None = None,
) -> Compiled:
    """``check`` as (violating, total) on ``base``; raises if its fields are missing.

    ``resolve`` turns ``"VOCABULARY:code"`` into concept ids ahead of the query (a list
    of literals runs much faster than one sub-query per concept-level check).
    """
    kind, f = check.check_type, check.field
    rows = base.count()
    col = base[f] if f is not None and kind != "measure_person_completeness" else None
    concept = tables("concept") if kind in _CONCEPT_TYPES else None

    def count(predicate: ir.BooleanValue) -> ir.IntegerScalar:
        return predicate.fill_null(False).cast("int64").sum().fill_null(0)

    if kind in ("is_required", "measure_value_completeness"):
        assert col is not None
        return Compiled(count(col.isnull()), rows)
    if kind == "source_value_completeness":
        assert col is not None
        has_concept = base[check.param("concept_field")].notnull()
        missing = col.isnull() | (col.cast("string").strip() == "")
        return Compiled(count(has_concept & missing), count(has_concept))
    if kind == "is_primary_key":
        assert col is not None
        return Compiled(rows - col.nunique(), rows)
    if kind == "is_foreign_key":
        assert col is not None
        target = tables(check.param("target"))[check.param("target_field")]
        return Compiled(count(col.notnull() & ~col.isin(target)), count(col.notnull()))
    if kind in ("fk_concept", "fk_domain", "is_standard_valid_concept"):
        assert col is not None
        assert concept is not None
        known = col.notnull() & (col != 0)
        if kind == "fk_concept":
            bad = ~col.isin(concept.concept_id)
        elif kind == "fk_domain":
            bad = col.isin(concept.filter(concept.domain_id != check.param("domain")).concept_id)
        else:
            standard = (concept.standard_concept == "S") & concept.invalid_reason.isnull()
            bad = ~col.isin(concept.filter(standard).concept_id)
        return Compiled(count(known & bad), count(known))
    if kind == "unknown_concept_record_completeness":
        assert col is not None
        return Compiled(count(col.isin(list(check.param("unknown")))), rows)
    if kind in ("standard_concept_record_completeness", "source_concept_record_completeness"):
        assert col is not None
        return Compiled(count(col == 0), rows)
    if kind == "plausible_value_low":
        assert col is not None
        return Compiled(count(col < check.param("low")), count(col.notnull()))
    if kind == "plausible_value_high":
        assert col is not None
        return Compiled(count(col > check.param("high")), count(col.notnull()))
    if kind == "plausible_start_before_end":
        assert col is not None
        end = base[check.param("end")]
        both = col.notnull() & end.notnull()
        return Compiled(count(both & (col > end)), count(both))
    if kind == "plausible_temporal_after":
        assert col is not None
        known = col.notnull() & base.qc_yob.notnull()
        return Compiled(count(known & (col.year() < base.qc_yob)), count(known))
    if kind == "plausible_during_life":
        assert col is not None
        known = col.notnull() & base.qc_death.notnull()
        return Compiled(count(known & (col > base.qc_death)), count(known))
    if kind == "within_visit_dates":
        assert col is not None
        known = col.notnull() & base.qc_vid.notnull()
        outside = (col < base.qc_vstart - _WEEK) | (col > base.qc_vend + _WEEK)
        return Compiled(count(known & outside), count(known))
    if kind == "measure_person_completeness":
        people = tables(check.table).person_id
        return Compiled(count(~base.person_id.isin(people)), rows)
    if kind in ("plausible_value_range", "plausible_unit_concept_ids", "plausible_gender"):
        assert col is not None
        assert concept is not None
        ids = resolve(check.concept or "") if resolve else _concept_ids(concept, check.concept)
        of_concept = base[check.param("concept_field") or check.field].isin(ids or [-1])
        if kind == "plausible_gender":
            other = [g for s, g in GENDER_CONCEPTS.items() if s != check.param("gender")]
            known = of_concept & base.qc_gender.notnull()
            return Compiled(count(known & base.qc_gender.isin(other)), count(known))
        value = base.value_as_number
        checked = of_concept & value.notnull()
        if kind == "plausible_value_range":
            outside = (value < check.param("low")) | (value > check.param("high"))
            return Compiled(count(checked & outside), count(checked))
        units = [f"UCUM:{unit}" for unit in check.param("units")]
        ucum = (
            [i for unit in units for i in resolve(unit)]
            if resolve
            else concept.filter(
                (concept.vocabulary_id == "UCUM") & concept.concept_code.isin(check.param("units"))
            ).concept_id
        )
        return Compiled(count(checked & (col.isnull() | ~col.isin(ucum or [-1]))), count(checked))
    raise ValueError(f"check type {kind} has no query")


_CONCEPT_TYPES = frozenset(
    {
        "fk_concept",
        "fk_domain",
        "is_standard_valid_concept",
        "plausible_value_range",
        "plausible_unit_concept_ids",
        "plausible_gender",
    }
)


def _concept_ids(concept: ir.Table, vocabulary_code: str | None) -> ir.Column:
    vocabulary, _, code = (vocabulary_code or "").partition(":")
    return concept.filter(
        (concept.vocabulary_id == vocabulary) & (concept.concept_code == code)
    ).concept_id


def quarantine_query(
    tables: Tables, reason_class: str
) -> tuple[ir.IntegerScalar, ir.IntegerScalar, ir.IntegerScalar]:
    """Open quarantine entries of a reason class, all open entries, and records loaded."""
    q = tables("quarantine")
    phrases = quarantine_classes()[reason_class]
    matches = ibis.or_(*(q.reason.contains(p) for p in phrases))
    loaded = tables("source_record")
    open_ = q.filter(q.resolved_at.isnull())
    return open_.filter(matches).count(), open_.count(), loaded.filter(loaded.is_current).count()


__all__ = [
    "SCHEMA_TYPES",
    "Compiled",
    "base_key",
    "base_table",
    "compile_check",
    "joins_needed",
    "quarantine_query",
]

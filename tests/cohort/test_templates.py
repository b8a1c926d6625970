"""Step statements bound into a template of their shape equal those compiled directly.

A step's SQL is compiled once per shape, from sentinel values, and each step's values
are bound into it (:mod:`medlake.cohort.templates`, :mod:`medlake.service.cohort_templates`).
Here, for definitions covering every kind of value that becomes a parameter (numeric
ranges and extents, negative and fractional values, window offsets, observation days,
occurrence counts, concept sets, concept id lists) and those that stay in the shape
(zero offsets, open windows, dates, counts 0 and 1, empty sets), the bound statement of
the index and of every rule is the statement compiled directly, as SQL text; a second
definition of the same shape reuses the template; the template cache follows the data
version (a write, a schema change) and a changed vocabulary binds its new concept ids.
Counts from the steps are checked against pandas in ``test_shared_steps.py``.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import ibis
import pytest
import sqlglot
from tests.cohort.definitions import cs, rule
from tests.cohort.reference import Lake, observed
from tests.cohort.test_shared_steps import VARIETY, counted, pandas_count, t2d_definition

from medlake.cohort.exit import INDEX_COLUMNS
from medlake.cohort.steps import COUNT_TABLES
from medlake.cohort.templates import bind, parametrize, template_from
from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.service.cohort import _compiled, parse_definition
from medlake.service.cohort_query import clear_cache
from medlake.service.cohort_templates import index_statement, rule_statement, template_stats
from medlake.service.workspace import open_lake

INDEX_SCHEMA = ibis.schema(
    {
        "person_id": "int64",
        "event_id": "int64",
        "start_date": "date",
        "end_date": "date",
        "visit_id": "int64",
        "op_start": "date",
        "op_end": "date",
    }
)


def many_values() -> dict[str, Any]:
    """Every kind of parameter, and every structural value beside them."""
    d = t2d_definition(hba1c=6.5, days=-30, age=40)
    d["concept_sets"].append(cs(4, "ICD10CM", "I10", "E78", descendants=True))
    d["concept_sets"].append(cs(5, "LOINC", "no-such-code"))  # resolves to nothing
    d["primary_criteria"] |= {"prior_observation_days": 30, "post_observation_days": 0}
    d["additional_criteria"] = {
        "type": "any",
        "criteria": [
            {
                "criterion": {"domain": "condition_occurrence", "codeset_id": 4,
                              "start_date": {"op": "gt", "value": "2001-02-03"}},
                "start_window": {"start": -3650, "end": 7, "use_index_end": True},
                "end_window": {"start": 0},
                "occurrence": {"type": "at_least", "count": 2, "distinct": True},
            },
            {"criterion": {"domain": "measurement", "codeset_id": 5}},
        ],
    }  # fmt: skip
    d["qualified_limit"] = "all"
    d["inclusion_rules"] += [
        rule(
            "labs in range",
            {
                "criterion": {
                    "domain": "measurement",
                    "codeset_id": 2,
                    "value_as_number": {"op": "bt", "value": -1.25, "extent": 1e6},
                    "range_low": {"op": "lte", "value": 4.0},
                    "abnormal": True,
                    "unit": [8554, 8713],
                    "value_as_concept": [4181412],
                },
                "start_window": {"start": -365, "end": -1},
                "occurrence": {"type": "exactly", "count": 3},
                "restrict_visit": True,
            },
            {
                "criterion": {
                    "domain": "drug_exposure",
                    "codeset_id": 3,
                    "days_supply": {"op": "nbt", "value": 7, "extent": 30},
                    "type_concept": [38000177],
                    "age": {"op": "lt", "value": 80},
                    "gender": [8507, 8532],
                    "first": True,
                },
                "start_window": {"start": 0, "end": 0},
                "occurrence": {"type": "at_most", "count": 0},
                "ignore_observation_period": True,
            },
            {
                "criterion": {
                    "domain": "visit_occurrence",
                    "length_days": {"op": "gte", "value": 2},
                    "visit_type": [9201],
                },
                "start_window": {"start": 1},
                "occurrence": {
                    "type": "at_most",
                    "count": 5,
                    "distinct": True,
                    "distinct_on": "start_date",
                },
            },
            type_="at_least",
            count=2,
            demographics=[
                {
                    "age": {"op": "gte", "value": 18},
                    "gender": [8532],
                    "race": [8527],
                    "index_end_date": {"op": "lt", "value": "2030-01-01"},
                }
            ],
            groups=[
                {
                    "type": "all",
                    "criteria": [
                        {
                            "criterion": {"domain": "condition_occurrence", "codeset_id": 1},
                            "start_window": {"end": 0},
                            "occurrence": {"type": "at_least", "count": 1},
                        },
                        {
                            "criterion": {
                                "domain": "observation_period",
                                "length_days": {"op": "gt", "value": 365},
                            }
                        },
                    ],
                }
            ],
        ),
    ]
    return d


def other_values(definition: dict[str, Any]) -> dict[str, Any]:
    """The same shape with other values: every non-zero number moved (a new template
    must not be needed), dates, zeros and empty sets kept."""
    changed = copy.deepcopy(definition)

    def move(value: Any, key: str | None = None) -> Any:
        if isinstance(value, dict):
            return {k: (v if k in ("id", "codeset_id", "source_codeset_id", "count") and
                        not (k == "count" and isinstance(v, int) and v >= 2 and
                             "distinct_on" in value)
                        else move(v, k)) for k, v in value.items()}  # fmt: skip
        if isinstance(value, list):
            return [move(v, key) for v in value]
        if isinstance(value, bool) or not isinstance(value, int | float) or value == 0:
            return value
        if key == "count":
            return value + 1
        return value * 2 + (0.5 if isinstance(value, float) else 3)

    for part in ("primary_criteria", "additional_criteria", "inclusion_rules"):
        if changed.get(part) is not None:
            changed[part] = move(changed[part])
    return changed


DEFINITIONS = [*VARIETY, many_values()]


@pytest.fixture
def held(hospital_lake: Any) -> Iterator[Path]:
    clear_cache()
    with open_lake(open_workspace(hospital_lake.workspace)):
        yield hospital_lake.workspace
    clear_cache()


def sql(statement: Any) -> str:
    return str(statement.sql(dialect="duckdb"))


def steps_sql(root: Path, definition: dict[str, Any], templates: bool) -> list[str]:
    """The index statement and every rule's statement of ``definition``."""
    with _compiled(root, parse_definition(definition)) as (_, engine, compiler):
        version = engine.data_version(COUNT_TABLES)
        found = [sql(index_statement(engine, compiler, version, templates=templates))]
        for i in range(len(compiler.definition.inclusion_rules)):
            statement = rule_statement(engine, compiler, i, INDEX_SCHEMA, "medlake_cohort_index_x",
                                       version, templates=templates)  # fmt: skip
            found.append(sql(statement))
    return found


@pytest.mark.parametrize("number", range(len(DEFINITIONS)))
def test_bound_statements_equal_those_compiled_directly(held: Path, number: int) -> None:
    definition = DEFINITIONS[number]
    direct = steps_sql(held, definition, templates=False)
    assert steps_sql(held, definition, templates=True) == direct
    assert template_stats()["untemplated"] == 0  # every shape made a template
    # Another definition of the same shape: its values bound into the same templates.
    moved = other_values(definition)
    compiled = template_stats()["computed"]
    bound = steps_sql(held, moved, templates=True)
    assert template_stats()["computed"] == compiled  # no new template
    assert bound == steps_sql(held, moved, templates=False)
    if definition["inclusion_rules"] or number == len(DEFINITIONS) - 1:
        assert bound != direct  # the values did move


def test_a_template_is_exact_about_its_values() -> None:
    """Parametrizing: shapes ignore values and concept set numbering, keep structure."""
    codesets = {1: [10, 11], 2: [12], 3: []}
    part = {"criterion": {"codeset_id": 1, "value_as_number": {"op": "gt", "value": 7.0,
            "extent": None}}, "start_window": {"start": -365, "end": 0, "use_index_end": False,
            "use_event_end": False}}  # fmt: skip
    other = copy.deepcopy(part)
    other["criterion"]["codeset_id"] = 2
    other["criterion"]["value_as_number"]["value"] = 8.5
    other["start_window"]["start"] = -180
    a, b = parametrize(part, codesets), parametrize(other, codesets)
    assert a is not None
    assert b is not None
    assert a.shape == b.shape
    assert a.values == ((10, 11), 7.0, -365)
    assert b.values == ((12,), 8.5, -180)
    zero = copy.deepcopy(part)
    zero["start_window"]["start"] = 0  # no interval at all: another shape
    empty = copy.deepcopy(part)
    empty["criterion"]["codeset_id"] = 3  # an empty set filters nothing: another shape
    assert len({a.shape, parametrize(zero, codesets).shape,  # type: ignore[union-attr]
                parametrize(empty, codesets).shape}) == 3  # type: ignore[union-attr]  # fmt: skip
    # A value of the structure that reads like a sentinel makes no template.
    clash = copy.deepcopy(part)
    clash["start_window"]["end"] = 820_000_000
    assert parametrize(clash, codesets) is not None  # a parameter: fine
    clash["criterion"]["first_n"] = 830_000_000
    assert parametrize(clash, codesets) is None
    # A statement that lost a sentinel makes no template; binding fills every slot.
    lost = "SELECT * FROM t WHERE x > 810000001.5 AND c IN (830000000)"
    assert template_from(sqlglot.parse_one(lost, read="duckdb"), a) is None
    whole = sqlglot.parse_one(lost + " AND d > e + INTERVAL '820000002' DAY", read="duckdb")
    template = template_from(whole, a, ["t"])
    assert template is not None
    assert bind(template, b.values, ["u"]).sql(dialect="duckdb") == (
        "SELECT * FROM \"u\" WHERE x > 8.5 AND c IN (12) AND d > e + INTERVAL '-180' DAY"
    )


def test_a_write_or_schema_change_compiles_templates_afresh(
    hospital_lake: Any, tmp_path: Path
) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    lake = Lake(workspace)
    clear_cache()
    with open_lake(open_workspace(workspace)) as engine:
        assert counted(workspace, t2d_definition()).initial == pandas_count(lake)["initial"]
        first = template_stats()["computed"]
        counted(workspace, t2d_definition(hba1c=8))  # the same shapes: no new template
        assert template_stats()["computed"] == first
        # A schema change (DDL through the engine) moves the data version: the rules'
        # templates are compiled again (the index, the same step, keeps its statement).
        engine.run_sql("ALTER TABLE measurement ADD COLUMN medlake_test_extra INTEGER")
        result = counted(workspace, t2d_definition(hba1c=7.5, days=120, age=30))
        assert first == 4
        assert template_stats()["computed"] == first + 3
        assert observed(result) == pandas_count(lake, hba1c=7.5, days=120, age=30)
    clear_cache()


def test_a_changed_vocabulary_binds_its_new_concepts(hospital_lake: Any, tmp_path: Path) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    clear_cache()
    with open_lake(open_workspace(workspace)):
        before = counted(workspace, t2d_definition())
        assert observed(before) == pandas_count(Lake(workspace))
        with open_workspace_engine(open_workspace(workspace)) as engine:
            concept = engine.table("concept")
            e11_row = (concept.vocabulary_id == "ICD10CM") & (concept.concept_code == "E11")
            (e11,) = engine.execute(concept.filter(e11_row).concept_id).column(0).to_pylist()
            ancestor = engine.table("concept_ancestor")
            engine.delete_where(
                "concept_ancestor",
                (ancestor.ancestor_concept_id == e11) & (ancestor.descendant_concept_id != e11),
            )
        after = counted(workspace, t2d_definition())
        assert observed(after) == pandas_count(Lake(workspace))
        assert after.initial != before.initial
    clear_cache()


assert set(INDEX_SCHEMA.names) == set(INDEX_COLUMNS)

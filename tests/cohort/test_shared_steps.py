"""Counts from step results shared across definitions equal the one statement and pandas.

A count is split into steps (the index events, each rule's flags) kept by their own part
of the definition (:mod:`medlake.service.cohort_steps`). These tests hold the lake open
as ``medlake serve`` does (so steps can be kept between counts) and check that counts
assembled from kept steps equal the one-statement attrition and an independent pandas
computation, that only missing steps run, that concurrent definitions compute a shared
step once, that a write to the lake makes steps computed afresh, and that the cache
stays within its byte bound.
"""

from __future__ import annotations

import contextvars
import threading
from collections.abc import Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import ibis
import pyarrow as pa
import pytest
from tests.cohort.definitions import cs, first, rule
from tests.cohort.reference import Lake, attrition, observed

from medlake.cohort.compiler import CohortCompiler
from medlake.cohort.steps import step_plan
from medlake.config import open_workspace, write_settings
from medlake.engine import SupportsArrowInputs
from medlake.errors import EngineError
from medlake.service.cohort import _compiled, count_cohort, parse_definition
from medlake.service.cohort_query import clear_cache, run_cohort_query
from medlake.service.cohort_steps import StepCache, count_by_steps, step_stats
from medlake.service.workspace import open_lake


def t2d_definition(hba1c: float = 7, days: int = 90, age: int = 18, **primary: Any) -> dict:
    """The benchmark's shape on the synthetic hospital: first type 2 diabetes, then HbA1c
    above ``hba1c`` in the year before, metformin within ``days`` after, age ``age``+."""
    return {
        "name": f"t2d hba1c>{hba1c} metformin {days} d age {age}+",
        "concept_sets": [
            cs(1, "ICD10CM", "E11", descendants=True),
            cs(2, "LOINC", "4548-4"),
            cs(3, "ATC", "A10BA02", descendants=True),
        ],
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}],
            **primary,
        },
        "inclusion_rules": [
            rule(
                "hba1c",
                {
                    "criterion": {
                        "domain": "measurement",
                        "codeset_id": 2,
                        "value_as_number": {"op": "gt", "value": hba1c},
                    },
                    "start_window": {"start": -365, "end": 0},
                },
            ),
            rule(
                "metformin",
                {
                    "criterion": {"domain": "drug_exposure", "codeset_id": 3},
                    "start_window": {"start": 0, "end": days},
                },
            ),
            rule("adult", demographics=[{"age": {"op": "gte", "value": age}}]),
        ],
    }


def pandas_count(lake: Lake, hba1c: float = 7, days: int = 90, age: int = 18) -> dict:
    t2d = lake.events("condition_occurrence", lake.concepts("ICD10CM", "E11", descendants=True))
    index = lake.entry(first(t2d))
    lab = lake.events("measurement", lake.concepts("LOINC", "4548-4"))
    metformin = lake.events("drug_exposure", lake.concepts("ATC", "A10BA02", descendants=True))
    return attrition(
        index,
        [
            lake.counts(index, lab[lab.value_as_number > hba1c], -365, 0) >= 1,
            lake.counts(index, metformin, 0, days) >= 1,
            lake.age(index) >= age,
        ],
    )


@pytest.fixture
def held(hospital_lake: Any) -> Iterator[Path]:
    """The shared lake held open (steps are kept while its data version stands)."""
    clear_cache()
    with open_lake(open_workspace(hospital_lake.workspace)):
        yield hospital_lake.workspace
    clear_cache()


def counted(root: Path, definition: dict) -> Any:
    return count_cohort(root, parse_definition(definition), exact=True)


def one_statement(root: Path, definition: dict) -> dict:
    """The attrition row of the one statement (the way before steps), not cached."""
    with _compiled(root, parse_definition(definition)) as (_, engine, compiler):
        return run_cohort_query(engine, compiler.count_query, None).to_pylist()[0]


def as_row(result: Any) -> dict:
    row: dict[str, object] = {"initial": result.initial}
    for i, r in enumerate(result.rules):
        row[f"remaining_{i}"] = r.remaining
        row[f"satisfied_{i}"] = r.satisfied_alone
    return row


def zeroed(row: dict) -> dict:
    return {k: int(v or 0) for k, v in row.items()}


# ---------------------------------------------------------------------- equal results


VARIETY = [
    t2d_definition(),
    # every index event counts (persons grouped), a rule used twice, no rule at all
    {
        **t2d_definition(),
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1}],
            "limit": "all",
        },
    },
    {**t2d_definition(), "inclusion_rules": t2d_definition()["inclusion_rules"][:1] * 2},
    {**t2d_definition(), "inclusion_rules": []},
    {
        **t2d_definition(),
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1}],
            "limit": "all",
        },
        "inclusion_rules": [],
    },
    # additional criteria and a qualified limit; groups of each kind
    {
        **t2d_definition(),
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1}],
            "limit": "all",
        },
        "additional_criteria": {
            "criteria": [
                {
                    "criterion": {"domain": "drug_exposure", "codeset_id": 3},
                    "start_window": {"start": -30, "end": 365},
                }
            ]
        },
        "qualified_limit": "last",
        "inclusion_rules": [
            rule(
                "any of",
                {
                    "criterion": {"domain": "measurement", "codeset_id": 2},
                    "start_window": {"start": -365, "end": 0},
                },
                type_="any",
                demographics=[{"gender": [8532]}],
            ),
            rule(
                "at most 1",
                {
                    "criterion": {"domain": "drug_exposure", "codeset_id": 3},
                    "start_window": {"start": 0},
                },
                type_="at_most",
                count=1,
            ),
            rule(
                "at least 2 of 3",
                {
                    "criterion": {"domain": "measurement", "codeset_id": 2},
                    "start_window": {"end": 0},
                },
                {"criterion": {"domain": "drug_exposure", "codeset_id": 3}},
                type_="at_least",
                count=2,
                demographics=[{"age": {"op": "lt", "value": 60}}],
            ),
        ],
    },
]


@pytest.mark.parametrize("number", range(len(VARIETY)))
def test_steps_equal_the_one_statement(held: Path, number: int) -> None:
    definition = VARIETY[number]
    computed = step_stats().computed
    result = counted(held, definition)
    assert step_stats().computed > computed  # counted by steps, not the one statement
    assert zeroed(as_row(result)) == zeroed(one_statement(held, definition))


def test_edits_compute_only_what_changed_and_equal_pandas(held: Path, lake: Lake) -> None:
    """The cohort builder's live attrition: each edit changes one thing."""
    sequence = [  # (the change, steps computed: one statement each)
        ({}, 1 + 3),  # the first definition: its index, then its three rules
        ({"hba1c": 8}, 1),  # one rule changed: that rule only
        ({"hba1c": 8, "days": 180}, 1),
        ({"hba1c": 8, "days": 180, "age": 60}, 1),
        ({"hba1c": 7, "days": 180, "age": 60}, 0),  # every step known: nothing runs
    ]
    for change, new_steps in sequence:
        before = step_stats()
        result = counted(held, t2d_definition(**change))
        after = step_stats()
        assert after.computed - before.computed == new_steps, change
        assert after.statements - before.statements == new_steps, change
        assert observed(result) == pandas_count(lake, **change), change


def test_definitions_in_a_study_share_a_step_once_at_the_same_time(held: Path, lake: Lake) -> None:
    variants = [(h, d, a) for h in (7, 8) for d in (90, 180) for a in (18, 50)]
    results: dict[tuple, Any] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(variants))

    def client(h: float, d: int, a: int) -> None:
        try:
            start.wait()
            results[(h, d, a)] = counted(held, t2d_definition(h, d, a))
        except BaseException as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [
        threading.Thread(target=contextvars.copy_context().run, args=(client, *v)) for v in variants
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    # one index, and each distinct rule once: 2 HbA1c, 2 metformin, 2 age rules
    assert step_stats().computed == 1 + 2 + 2 + 2
    for (h, d, a), result in results.items():
        assert observed(result) == pandas_count(lake, h, d, a)


def test_rule_keys_ignore_names_and_concept_set_numbers(held: Path) -> None:
    a = parse_definition(t2d_definition())
    renumbered = t2d_definition()
    renumbered["name"] = "another study"
    renumbered["concept_sets"] = [{**c, "id": c["id"] + 10} for c in renumbered["concept_sets"]]
    for r, inclusion in enumerate(renumbered["inclusion_rules"]):
        inclusion["name"] = f"rule {r}"
        for item in inclusion["expression"]["criteria"]:
            item["criterion"]["codeset_id"] += 10
    renumbered["primary_criteria"]["criteria"][0]["codeset_id"] += 10
    b = parse_definition(renumbered)
    plans = []
    for definition in (a, b):
        with _compiled(held, definition) as (_, _, compiler):
            codesets = compiler.resolved_codesets
            assert codesets is not None
            plans.append(step_plan(definition, codesets, compiler.periods_mode, True))
    assert plans[0] == plans[1]
    changed = t2d_definition(hba1c=8)
    with _compiled(held, parse_definition(changed)) as (_, _, compiler):
        plan = step_plan(compiler.definition, compiler.resolved_codesets or {}, "table", True)
    assert plan.index_key == plans[0].index_key
    assert plan.rule_keys[0] != plans[0].rule_keys[0]
    assert plan.rule_keys[1:] == plans[0].rule_keys[1:]


# ---------------------------------------------------------------------- the cache itself


def test_the_cache_keeps_within_its_bytes_least_recently_used_out() -> None:
    cache = StepCache()
    for key in ("a", "b", "c"):
        state, _ = cache.claim(key)
        assert state == "mine"
        cache.finish(key, key.upper(), 40, limit=100)
    # 120 bytes > 100: "a", the least recently used, is gone
    assert cache.size() == 80
    assert cache.claim("b") == ("hit", "B")  # b is now the most recently used
    state, _ = cache.claim("d")
    cache.finish("d", "D", 40, limit=100)
    assert cache.claim("b") == ("hit", "B")
    assert cache.claim("c")[0] == "mine"  # c was dropped for d
    assert cache.stats.evicted == 2
    state, _ = cache.claim("huge")
    cache.finish("huge", "H", 500, limit=100)  # larger than the bound: returned, not kept
    assert cache.claim("huge")[0] == "mine"


def test_a_failed_step_reaches_its_waiters_and_is_not_kept() -> None:
    cache = StepCache()
    state, _ = cache.claim("k")
    assert state == "mine"
    state, waiting = cache.claim("k")
    assert state == "wait"
    assert isinstance(waiting, Future)
    cache.fail("k", EngineError("boom"))
    with pytest.raises(EngineError):
        waiting.result()
    assert cache.claim("k")[0] == "mine"  # computed again by the next caller


def test_step_cache_off_counts_by_one_statement(held: Path, lake: Lake) -> None:
    settings = open_workspace(held).settings
    settings.cohort.step_cache_mb = 0
    root = held
    computed = step_stats().computed
    path = root / "medlake.toml"
    original = path.read_text(encoding="utf-8")
    try:
        write_settings(path, settings)
        result = counted(root, t2d_definition(hba1c=9))
    finally:
        path.write_text(original, encoding="utf-8")
    assert step_stats().computed == computed
    assert observed(result) == pandas_count(lake, hba1c=9)


# ---------------------------------------------------------------------- the engine door


def test_arrow_inputs_are_seen_by_that_query_only(hospital_lake: Any) -> None:
    workspace = open_workspace(hospital_lake.workspace)
    with open_lake(workspace) as engine, open_lake(workspace) as other:
        assert isinstance(engine, SupportsArrowInputs)
        data = pa.table({"v": [1, 2, 3]})
        placeholder = ibis.table({"v": "int64"}, name="medlake_test_input")
        query = engine.ibis.compiler.to_sqlglot(placeholder.v.sum().as_table())  # type: ignore[attr-defined]
        found = engine.query_with_inputs(query, {"medlake_test_input": data})
        assert found.column(0).to_pylist() == [6]
        with pytest.raises(EngineError):  # gone after the query
            engine.query_with_inputs(query, {})
        with pytest.raises(EngineError):  # never on another connection
            other.query_with_inputs(query, {})


# ---------------------------------------------------------------------- other engines


def test_an_in_memory_lake_is_counted_by_the_one_statement() -> None:
    """No data version (nothing can be kept): no steps, the one statement instead."""
    from medlake.engine.backends.duckdb import DuckDBEngine

    with DuckDBEngine() as engine:
        compiler = CohortCompiler(
            parse_definition(t2d_definition()), engine.table, codesets={1: [1], 2: [2], 3: [3]}
        )
        assert count_by_steps(engine, compiler, limit_mb=256) is None


@pytest.mark.spark
@pytest.mark.slow
def test_spark_has_no_step_door_and_is_counted_by_the_one_statement(spark_engine: Any) -> None:
    assert not isinstance(spark_engine, SupportsArrowInputs)
    compiler = CohortCompiler(
        parse_definition(t2d_definition()), spark_engine.table, codesets={1: [1], 2: [2], 3: [3]}
    )
    assert count_by_steps(spark_engine, compiler, limit_mb=256) is None

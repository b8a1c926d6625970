"""The SQL of a count's steps, bound into a template compiled once per step shape.

:mod:`medlake.cohort.templates` splits a step's part of the definition into its shape
and its values; here the template of each shape is compiled (once per shape, engine
kind, way of reading observation periods and data version of the count tables, with a
single flight, kept in a small least-recently-used cache) and each step's values are
bound into it. A shape whose sentinels do not all come back as literals of their own
is remembered as such, and its steps are compiled one by one as before.

Keyed by the data version as the step results are, so a write to the lake (a schema
change included: DDL moves the version of the tables it names) compiles afresh.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import Any

import ibis
import ibis.expr.types as ir
import sqlglot.expressions as sge

from medlake.cohort.compiler import CohortCompiler, Step
from medlake.cohort.model import CriteriaGroup, InclusionRule, PrimaryCriteria
from medlake.cohort.templates import bind, parametrize, template_from
from medlake.engine import Engine
from medlake.service.cohort_query import StepCache, stitched_statement

#: Statement templates kept, one per step shape (a few kB of SQL syntax tree each).
TEMPLATES_KEPT = 256
#: The index step's table name in rule templates, replaced by the real one at binding.
TEMPLATE_INDEX = "medlake_cohort_index_template"


_templates = StepCache()  # step shape -> Template, or None where the shape makes none


def template_stats() -> dict[str, int]:
    """The template cache's counters, and how many shapes made no template (tests)."""
    cache = _templates
    with cache._lock:
        stats = dict(vars(cache.stats))
        stats["untemplated"] = sum(1 for value, _ in cache._entries.values() if value is None)
    return stats


def clear_templates() -> None:
    _templates.clear()


def index_statement(
    engine: Engine, compiler: CohortCompiler, version: Hashable, *, templates: bool = True
) -> sge.Expression:
    """The index step's statement (its rows ordered by ``event_id``); ``templates``
    False compiles it directly (the reference the tests compare with)."""
    definition = compiler.definition
    additional = definition.additional_criteria
    part = {
        "primary": definition.primary_criteria.model_dump(mode="json"),
        "additional": None if additional is None else additional.model_dump(mode="json"),
        "qualified_limit": definition.qualified_limit,
    }

    def compiled(on: CohortCompiler) -> sge.Expression:
        def build(step: Step) -> ir.Table:
            return on.index_events(step).order_by("event_id")

        return stitched_statement(engine, build)

    def twin_compiler(twin: dict[str, Any], codesets: dict[int, list[int]]) -> CohortCompiler:
        extra = twin["additional"]
        group = None if extra is None else CriteriaGroup.model_validate(extra)
        sentinel = definition.model_copy(update={
            "primary_criteria": PrimaryCriteria.model_validate(twin["primary"]),
            "additional_criteria": group,
        })  # fmt: skip
        return compiler.sibling(sentinel, codesets)

    if not templates:
        return compiled(compiler)
    return _templated(engine, compiler, version, "index", part, compiled, twin_compiler)


def rule_statement(
    engine: Engine,
    compiler: CohortCompiler,
    rule: int,
    index_schema: ibis.Schema,
    index_name: str,
    version: Hashable,
    *,
    templates: bool = True,
) -> sge.Expression:
    """The ``event_id``s of the index events (table ``index_name``) rule ``rule`` holds
    for; ``templates`` False compiles it directly."""
    definition = compiler.definition
    part = {
        "rule": definition.inclusion_rules[rule].expression.model_dump(mode="json"),
        "index": str(index_schema),  # what the rule's SQL reads of the index
    }

    def compiled(on: CohortCompiler, name: str = index_name, number: int = rule) -> sge.Expression:
        query = on.rule_query(number, ibis.table(index_schema, name=name))
        return engine.ibis.compiler.to_sqlglot(query)  # type: ignore[attr-defined,no-any-return]

    def twin_compiler(twin: dict[str, Any], codesets: dict[int, list[int]]) -> CohortCompiler:
        expression = CriteriaGroup.model_validate(twin["rule"])
        sentinel = definition.model_copy(
            update={"inclusion_rules": [InclusionRule(name="template", expression=expression)]}
        )
        return compiler.sibling(sentinel, codesets)

    if not templates:
        return compiled(compiler)
    return _templated(
        engine, compiler, version, "rule", part, compiled, twin_compiler,
        tables=(index_name,),
        template_compile=lambda twin: compiled(twin, TEMPLATE_INDEX, 0),
    )  # fmt: skip


def _templated(
    engine: Engine,
    compiler: CohortCompiler,
    version: Hashable,
    kind: str,
    part: dict[str, Any],
    compiled: Callable[[CohortCompiler], sge.Expression],
    twin_compiler: Callable[[dict[str, Any], dict[int, list[int]]], CohortCompiler],
    tables: tuple[str, ...] = (),
    template_compile: Callable[[CohortCompiler], sge.Expression] | None = None,
) -> sge.Expression:
    """The step's statement, bound into the template of its shape, or compiled for it
    where its shape makes no template."""
    parametrized = parametrize(part, compiler.resolved_codesets or {})
    if parametrized is None:
        return compiled(compiler)
    cache = _templates
    key = (engine.name, kind, parametrized.shape, compiler.periods_mode, version)
    state, found = cache.claim(key)
    if state == "wait":
        found = found.result()
    elif state == "mine":
        try:
            twin = twin_compiler(parametrized.sentinel_part, parametrized.sentinel_codesets)
            statement = (template_compile or compiled)(twin)
            found = template_from(statement, parametrized, tuple(TEMPLATE_INDEX for _ in tables))
        except BaseException as error:
            cache.fail(key, error)
            raise
        cache.finish(key, found, 1, TEMPLATES_KEPT)
    if found is None:
        return compiled(compiler)
    return bind(found, parametrized.values, tables)

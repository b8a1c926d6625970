"""Cohort counts from step results shared across definitions, kept in a bounded cache.

A new definition used to cost a whole attrition statement (at 1M persons about 0.8 s of
DuckDB CPU and 0.15 s of compiling), even when it differed from one counted a moment
before in a single rule, as each edit in the web UI's cohort builder does and as the
definitions of one study do. Here a count is split into the steps of its attrition,
each kept under its canonical key (:func:`medlake.cohort.steps.step_plan`: the step's
own part of the definition with its concept sets resolved) and the lake's data version:

* the **index events** (``INDEX_COLUMNS``, ordered by ``event_id``), an Arrow table;
* each **inclusion rule's flag** per index event, a boolean array aligned with that
  index table, kept under the rule's key and the index result it was computed on.

Only the missing steps run, one statement each: a new index (definitions that need it
wait for it), then each missing rule, reading the kept index table
(:class:`~medlake.engine.SupportsArrowInputs`: registered on the engine's connection for
that query). A rule's statement is the rule's CTE of the one-statement count: it returns
the ``event_id``s of the index events the rule holds for, and the flag (``event_id IN
(those)``) is computed here by a binary search over the index's ordered ids (having
DuckDB return the flag per index event, ordered, cost 10-80 ms more per rule at 1M). A
rule is claimed only when its count is about to compute it, so counts arriving together
spread the missing rules among themselves. Each statement is bound into the template of
its step's shape (:mod:`medlake.service.cohort_templates`): definitions that differ in
values only (a threshold, a window, a concept set) compile once. (At 1M persons, 16 new
definitions at once took about the same CPU and wall time, within the noise of shared
cores, with the index and the first definition's rules in one statement, or each
definition's missing rules in one statement.)
:func:`medlake.cohort.steps.attrition_row` then combines index and flags into the
attrition row, equal to what the one statement returns.

Every step has a single flight: a definition that needs a step another is computing
waits for it (after computing its own claimed steps, so two definitions never wait on
each other). Results are kept in a least-recently-used cache bounded in bytes
(``[cohort] step_cache_mb``). A step result stands while the data version of every
table a count can read (:data:`~medlake.cohort.steps.COUNT_TABLES`) does: keyed by the
step's definition rather than its SQL, it cannot name the tables its SQL reads before
compiling, and a write to any clinical table moves them together in practice (an
ingest, a merge). Engines without the Arrow door or a data version (Spark; an in-memory
lake) and definitions with omics criteria are counted by the one statement instead.
Written here rather than taken from a caching library for the same reason as
:func:`~medlake.service.cohort_query.remembered`: the version is read before computing,
and the in-flight table shares the cache's lock.
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass

import ibis
import numpy as np
import pyarrow as pa
import sqlglot.expressions as sge

from medlake.cohort.compiler import CohortCompiler
from medlake.cohort.steps import COUNT_TABLES, StepPlan, attrition_row, step_plan
from medlake.engine import Engine, SupportsArrowInputs
from medlake.errors import EngineError
from medlake.service.cohort_query import StepCache, StepStats, kept_statement, statement_gate
from medlake.service.cohort_templates import clear_templates, index_statement, rule_statement

MEGABYTE = 1 << 20


@dataclass(frozen=True)
class IndexResult:
    """A computed index step: ``token`` names this computation (rule flags are kept
    under it, so flags never meet an index table they were not computed on)."""

    token: int
    table: pa.Table


_steps = StepCache()
_tokens = itertools.count(1)


def step_stats() -> StepStats:
    """A copy of the step cache's counters (tests, benchmarks)."""
    with _steps._lock:
        return StepStats(**vars(_steps.stats))


def step_cache_bytes() -> int:
    return _steps.size()


def clear_steps() -> None:
    """Forget every kept step result and statement template (tests;
    :func:`cohort_query.clear_cache` calls it)."""
    _steps.clear()
    clear_templates()


def count_by_steps(
    engine: Engine,
    compiler: CohortCompiler,
    *,
    limit_mb: int,
    concurrent: int | None = None,
) -> pa.Table | None:
    """The attrition row of ``compiler``'s definition from shared step results, or None
    where steps cannot be kept (no Arrow door or data version, omics criteria, resolved
    concept sets missing, ``limit_mb`` 0): count it by the one statement then."""
    codesets = compiler.resolved_codesets
    if (
        limit_mb <= 0
        or codesets is None
        or compiler.cache_key("count") is None
        or not isinstance(engine, SupportsArrowInputs)
    ):
        return None
    version = engine.data_version(COUNT_TABLES)
    if version is None:
        return None
    plan = step_plan(
        compiler.definition, codesets, compiler.periods_mode, compiler.one_event_per_person
    )
    run = _Runner(engine, compiler, plan, limit_mb * MEGABYTE, concurrent, version)
    index = run.index((engine.name, "index", plan.index_key, version))
    flags = run.rules(index)
    row = attrition_row(index.table, flags, plan.one_event_per_person)
    return pa.Table.from_pylist([row])


class _Runner:
    """One count's way through the steps."""

    def __init__(
        self,
        engine: Engine,
        compiler: CohortCompiler,
        plan: StepPlan,
        limit: int,
        concurrent: int | None,
        version: Hashable,
    ) -> None:
        self.engine = engine
        self.compiler = compiler
        self.plan = plan
        self.limit = limit
        self.concurrent = concurrent
        self.version = version
        self.codesets = compiler.resolved_codesets or {}

    def index(self, key: Hashable) -> IndexResult:
        """The index step: kept, waited for, or computed here (alone, so that counts
        waiting for it start their rules as soon as it is there)."""
        state, found = _steps.claim(key)
        if state == "hit":
            return found  # type: ignore[return-value]
        if state == "wait":
            return found.result()  # type: ignore[union-attr,no-any-return]
        try:
            table = self._run(self._index_statement(), {})
            index = IndexResult(next(_tokens), table)
        except BaseException as error:
            _steps.fail(key, error)
            raise
        _steps.finish(key, index, index.table.nbytes, self.limit)
        return index

    def rules(self, index: IndexResult) -> list[pa.Array]:
        """Every rule's flag: kept, computed here, or waited for.

        A rule is claimed only when this count is about to compute it, one statement per
        rule, so counts arriving together spread the missing rules among themselves and
        each publishes its rule as soon as it is done; a rule another count is computing
        is waited for at the end, holding no claim of our own, so no two counts wait on
        each other.
        """
        flags: list[pa.Array | None] = [None] * len(self.plan.rule_keys)
        waiting: list[tuple[int, Future[object]]] = []
        for i, rule_key in enumerate(self.plan.rule_keys):
            key = ("rule", rule_key, index.token)
            state, found = _steps.claim(key)
            if state == "hit":
                flags[i] = found  # type: ignore[assignment]
            elif state == "wait":
                waiting.append((i, found))  # type: ignore[arg-type]
            else:
                flags[i] = self._compute_rule(index, i, key)
        for i, future in waiting:
            flags[i] = future.result()  # type: ignore[assignment]
        return flags  # type: ignore[return-value]

    def _compute_rule(self, index: IndexResult, rule: int, key: Hashable) -> pa.Array:
        """The rule's flag per index event: the statement returns the ``event_id``s of
        the index events the rule holds for (the rule's CTE of the one statement), and
        the flag is ``event_id IN (those)`` with SQL's semantics, computed here."""
        try:
            statement = self._rule_statement(index, rule)
            hits = self._run(statement, {self.plan.index_name: index.table}).column("event_id")
            flag = _in(index.table.column("event_id"), hits)
        except BaseException as error:
            _steps.fail(key, error)
            raise
        _steps.finish(key, flag, flag.nbytes, self.limit)
        return flag

    # A step's statement is kept under the step's key as the one-statement counts' are
    # (a step computed again after a write, or on a lake opened afresh, is not bound
    # again); a new step is bound into its shape's template.

    def _index_statement(self) -> sge.Expression:
        def make() -> sge.Expression:
            return index_statement(self.engine, self.compiler, self.version)

        key = ("steps: index", self.plan.index_key)
        return kept_statement(self.engine, key, make)[0]

    def _rule_statement(self, index: IndexResult, rule: int) -> sge.Expression:
        schema = ibis.Schema.from_pyarrow(index.table.schema)

        def make() -> sge.Expression:
            return rule_statement(
                self.engine, self.compiler, rule, schema, self.plan.index_name, self.version
            )

        # By the rule's key: another definition with the same rule at another position
        # reuses the statement (the flag is read by position).
        key = ("steps: rule", self.plan.index_key, self.plan.rule_keys[rule], str(schema))
        return kept_statement(self.engine, key, make)[0]

    def _run(self, statement: sge.Expression, inputs: dict[str, pa.Table]) -> pa.Table:
        assert isinstance(self.engine, SupportsArrowInputs)
        _steps.count_statement()
        with statement_gate(self.concurrent):
            return self.engine.query_with_inputs(statement, inputs)


def _in(ordered: pa.ChunkedArray, found: pa.ChunkedArray) -> pa.Array:
    """``ordered IN (found)`` as SQL has it, for ``ordered`` ascending and without nulls
    (the index's ``event_id``, by its ``ORDER BY``): true where found; where not, false,
    or null when ``found`` holds a null. A binary search per found value: the index
    holds 10^5-10^6 events at 1M persons, and hashing them per rule cost more."""
    ids = ordered.to_numpy()
    wanted = found.drop_null().to_numpy()
    if ordered.null_count or (ids.size > 1 and not bool(np.all(ids[1:] >= ids[:-1]))):
        raise EngineError("the index events came back out of event_id order")
    hit = np.zeros(ids.size, dtype=bool)
    if ids.size and ids[-1] - ids[0] == ids.size - 1:  # 0..n-1 (no additional criteria)
        at = wanted - ids[0]
        hit[at[(at >= 0) & (at < ids.size)]] = True
    else:
        at = np.searchsorted(ids, wanted)
        inside = at < ids.size
        hit[at[inside][ids[at[inside]] == wanted[inside]]] = True
    if found.null_count:  # not found but a null among them: unknown, as in SQL
        return pa.array(np.where(hit, True, None), pa.bool_())
    return pa.array(hit)

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
that query; the rule is the same CTE as in the one-statement count, and the statement
returns its flag per index event instead of counts). A rule is claimed only when its
count is about to compute it, so counts arriving together spread the missing rules among
themselves. (At 1M persons, 16 new definitions at once took about the same CPU and wall
time, within the noise of shared cores, with the index and the first definition's rules
in one statement, or each definition's missing rules in one statement.)
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
import threading
from collections import OrderedDict
from collections.abc import Hashable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal

import ibis
import ibis.expr.types as ir
import pyarrow as pa

from medlake.cohort.compiler import CohortCompiler, Step
from medlake.cohort.steps import COUNT_TABLES, StepPlan, attrition_row, step_plan
from medlake.engine import Engine, SupportsArrowInputs
from medlake.errors import EngineError
from medlake.service.cohort_query import cached_statement, statement_gate

MEGABYTE = 1 << 20


@dataclass(frozen=True)
class IndexResult:
    """A computed index step: ``token`` names this computation (rule flags are kept
    under it, so flags never meet an index table they were not computed on)."""

    token: int
    table: pa.Table


@dataclass
class StepStats:
    """What the step cache did since the last :func:`clear_steps`."""

    hits: int = 0  # a step result served from the cache
    computed: int = 0  # a step computed by this caller
    shared: int = 0  # waited for the same step already running
    evicted: int = 0  # results dropped to stay under the byte bound
    statements: int = 0  # statements run for steps


class StepCache:
    """Step results by key, least recently used dropped first beyond a byte bound, with
    one computation per key at a time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[Hashable, tuple[object, int]] = OrderedDict()
        self._bytes = 0
        self._in_flight: dict[Hashable, Future[object]] = {}
        self.stats = StepStats()

    def claim(
        self, key: Hashable
    ) -> tuple[Literal["hit", "wait", "mine"], object | Future[object]]:
        """``("hit", value)``, ``("wait", future)`` of a computation running elsewhere, or
        ``("mine", future)``: the caller computes it and must :meth:`finish` or
        :meth:`fail`."""
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.stats.hits += 1
                return "hit", self._entries[key][0]
            running = self._in_flight.get(key)
            if running is not None:
                self.stats.shared += 1
                return "wait", running
            future: Future[object] = Future()
            self._in_flight[key] = future
            self.stats.computed += 1
            return "mine", future

    def finish(self, key: Hashable, value: object, size: int, limit: int) -> None:
        """Keep ``value`` (``size`` bytes) while the cache stays within ``limit`` bytes."""
        with self._lock:
            future = self._in_flight.pop(key)
            if size <= limit:
                self._entries[key] = (value, size)
                self._bytes += size
                while self._bytes > limit:
                    _, (_, dropped) = self._entries.popitem(last=False)
                    self._bytes -= dropped
                    self.stats.evicted += 1
        future.set_result(value)

    def fail(self, key: Hashable, error: BaseException) -> None:
        with self._lock:
            future = self._in_flight.pop(key)
        future.set_exception(error)

    def count_statement(self) -> None:
        with self._lock:
            self.stats.statements += 1

    def size(self) -> int:
        """Bytes held."""
        with self._lock:
            return self._bytes

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0
            self.stats = StepStats()


_steps = StepCache()
_tokens = itertools.count(1)


def step_stats() -> StepStats:
    """A copy of the step cache's counters (tests, benchmarks)."""
    with _steps._lock:
        return StepStats(**vars(_steps.stats))


def step_cache_bytes() -> int:
    return _steps.size()


def clear_steps() -> None:
    """Forget every kept step result (tests; :func:`cohort_query.clear_cache` calls it)."""
    _steps.clear()


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
    run = _Runner(engine, compiler, plan, limit_mb * MEGABYTE, concurrent)
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
    ) -> None:
        self.engine = engine
        self.compiler = compiler
        self.plan = plan
        self.limit = limit
        self.concurrent = concurrent

    def index(self, key: Hashable) -> IndexResult:
        """The index step: kept, waited for, or computed here (alone, so that counts
        waiting for it start their rules as soon as it is there)."""
        state, found = _steps.claim(key)
        if state == "hit":
            return found  # type: ignore[return-value]
        if state == "wait":
            return found.result()  # type: ignore[union-attr,no-any-return]

        def build(step: Step) -> ir.Table:
            return self.compiler.index_events(step).order_by("event_id")

        try:
            table = self._run(("steps: index", self.plan.index_key), build, {})
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
        name = self.plan.index_name
        schema = ibis.Schema.from_pyarrow(index.table.schema)

        def build(step: Step) -> ir.Table:
            return self.compiler.flags_query(ibis.table(schema, name=name), [rule], step)

        # Kept by the rule's key: another definition with the same rule at another
        # position reuses the statement (the flag is read by position).
        statement_key = ("steps: rule", self.plan.index_key, self.plan.rule_keys[rule])
        try:
            result = self._run(statement_key, build, {name: index.table})
            if not result.column("event_id").equals(index.table.column("event_id")):
                raise EngineError("rule flags came back out of the index's order")
            flag = result.column(1).combine_chunks()
        except BaseException as error:
            _steps.fail(key, error)
            raise
        _steps.finish(key, flag, flag.nbytes, self.limit)
        return flag

    def _run(self, key: Hashable, build: object, inputs: dict[str, pa.Table]) -> pa.Table:
        statement, _ = cached_statement(self.engine, key, build)  # type: ignore[arg-type]
        assert isinstance(self.engine, SupportsArrowInputs)
        _steps.count_statement()
        with statement_gate(self.concurrent):
            return self.engine.query_with_inputs(statement, inputs)

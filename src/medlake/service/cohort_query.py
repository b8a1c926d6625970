"""How a compiled cohort runs: one statement of named steps, its SQL cached per definition.

The cohort compiler (:mod:`medlake.cohort.compiler`) names its intermediate tables
through a :data:`~medlake.cohort.compiler.Step` callable. Here each step becomes a
placeholder table; each step's expression is compiled on its own by the engine's Ibis
compiler, and the results are joined as common table expressions of one statement that
the engine runs (:meth:`medlake.engine.Engine.run_sql`, which speaks the backend's
dialect). Two reasons:

* compiling the whole cohort as one Ibis graph takes time that grows faster than the
  graph (about 1 s for a 5-rule definition), while the steps compile separately in a
  fraction of it;
* one statement lets the engine plan the steps together and stream between them; the
  earlier way (each step computed, copied to Python and sent back as an in-memory
  table) cost a round trip per step.

The assembled statement is kept in a small in-process cache keyed by the definition,
its resolved concept ids, how observation periods are read and the engine kind, so a
definition counted again (the web UI's live attrition, the API) skips building and
compiling altogether. Definitions with omics criteria are neither stitched nor cached:
their events are in-memory tables that Ibis registers only when it runs an expression
itself, so their steps are computed one after another instead.

Concept sets are resolved here as well (:func:`resolve_concept_sets`): the cohort
domain builds the lookups, the engine runs them.

**Results** are cached too, as OHDSI tools cache cohort generation
(:func:`remembered`): a count is kept under its statement's key (definition, resolved
concept ids, periods, engine) and the lake's data version of the tables the statement
reads (:meth:`medlake.engine.Engine.data_version`: it moves after every committed write
to them, and when the lake is opened afresh), so a count after an ingest, a merge or a
retraction is computed again while the audit trail's own appends leave counts cached.
Only the raw attrition row is kept; the policy check, small-cell suppression and audit
of a request all happen after, per request. Identical counts that arrive while one is
running wait for it and share its row (single flight), and at most
``[cohort] concurrent_statements`` statements run at once (default: twice the cores):
one statement alone leaves DuckDB's threads partly idle (serial pipeline phases), while
beyond a few at once each running statement adds its own hash tables to memory for
little more throughput (benchmarks/RESULTS.md, "Cohort counts under load"). Written
here rather than taken from a caching library because the version must be read before
computing and the in-flight table shares the same lock.
"""

from __future__ import annotations

import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Literal, TypeVar

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import sqlglot as sg
import sqlglot.expressions as sge

from medlake.cohort.compiler import Step
from medlake.cohort.concept_sets import ConceptSetResolver
from medlake.cohort.model import CohortDefinition
from medlake.engine import Engine

#: Statements kept (each a few kB of SQL syntax tree).
CACHE_SIZE = 128
#: Results kept (a count is one row; concept sets a few lists of ids).
RESULT_CACHE_SIZE = 1024

#: The vocabulary tables concept sets are resolved from.
VOCABULARY_TABLES = ("concept", "concept_ancestor", "concept_relationship")

T = TypeVar("T")

_cache: OrderedDict[Hashable, tuple[sge.Expression, frozenset[str]]] = OrderedDict()
_cache_lock = threading.Lock()
_results: OrderedDict[Hashable, object] = OrderedDict()
_in_flight: dict[Hashable, Future[object]] = {}
_results_lock = threading.Lock()
_gates: dict[int, threading.BoundedSemaphore] = {}


@dataclass
class CacheStats:
    """What :func:`remembered` did since the last :func:`clear_cache`."""

    hits: int = 0  # served from the cache
    computed: int = 0  # computed by this caller
    shared: int = 0  # waited for an identical computation already running
    uncached: int = 0  # the engine has no data version: computed, not kept


_stats = CacheStats()


def cache_stats() -> CacheStats:
    """A copy of the result cache's counters (tests, benchmarks)."""
    with _results_lock:
        return CacheStats(**vars(_stats))


def remembered(engine: Engine, tables: Iterable[str], key: Hashable, compute: Callable[[], T]) -> T:
    """``compute()``, kept under ``key`` while the data version of ``tables`` stands.

    Concurrent callers with the same key and version share one computation (an error
    is raised to all of them, and nothing is kept). Keep only immutable values.
    """
    version = engine.data_version(tables)
    if version is None:
        with _results_lock:
            _stats.uncached += 1
        return compute()
    full = (key, version)
    with _results_lock:
        if full in _results:
            _results.move_to_end(full)
            _stats.hits += 1
            return _results[full]  # type: ignore[return-value]
        running = _in_flight.get(full)
        if running is None:
            future: Future[object] = Future()
            _in_flight[full] = future
            _stats.computed += 1
        else:
            _stats.shared += 1
    if running is not None:
        return running.result()  # type: ignore[return-value]
    try:
        value = compute()
    except BaseException as error:
        with _results_lock:
            del _in_flight[full]
        future.set_exception(error)
        raise
    with _results_lock:
        _results[full] = value
        while len(_results) > RESULT_CACHE_SIZE:
            _results.popitem(last=False)
        del _in_flight[full]
    future.set_result(value)
    return value


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


def statement_gate(size: int | None) -> threading.BoundedSemaphore:
    """The process's gate for heavy statements: ``size`` at once (None: twice the cores)."""
    size = max(1, size or 2 * (os.cpu_count() or 1))
    with _results_lock:
        return _gates.setdefault(size, threading.BoundedSemaphore(size))


def resolve_concept_sets(engine: Engine, definition: CohortDefinition) -> dict[int, list[int]]:
    """Each concept set's concept ids on the lake's vocabulary (at most three lookups),
    kept while the vocabulary tables are unchanged."""
    key = ("concept sets", engine.name, tuple(c.model_dump_json() for c in definition.concept_sets))
    found = remembered(engine, VOCABULARY_TABLES, key, lambda: _resolve(engine, definition))
    return {k: list(v) for k, v in found.items()}


def _resolve(engine: Engine, definition: CohortDefinition) -> dict[int, tuple[int, ...]]:
    resolver = ConceptSetResolver(definition.concept_sets)
    lookup = resolver.lookup_query(engine.table("concept"))
    rows = [] if lookup is None else engine.execute(lookup).to_pylist()
    named = resolver.named(rows)
    below = resolver.descendants_query(engine.table("concept_ancestor"), named)
    pairs = [] if below is None else _pairs(engine.execute(below))
    found = resolver.with_descendants(named, pairs)
    mapped = resolver.mapped_query(engine.table("concept_relationship"), found)
    resolved = resolver.resolve(found, [] if mapped is None else _pairs(engine.execute(mapped)))
    return {k: tuple(v) for k, v in resolved.items()}


def _pairs(table: pa.Table) -> list[tuple[int, int]]:
    return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


def run_cohort_query(
    engine: Engine,
    build: Callable[[Step], ir.Table],
    key: Hashable | None,
    *,
    keep_result: bool = False,
    concurrent: int | None = None,
) -> pa.Table:
    """Run ``build(step)`` (e.g. ``compiler.count_query``) on ``engine``.

    With a ``key``, the steps become common table expressions of one statement, cached
    under the key, run when the gate for ``concurrent`` statements lets it
    (:func:`statement_gate`); with ``keep_result`` too, its result is
    :func:`remembered` (small results only: counts). Without a key (omics criteria),
    each step is computed in turn and nothing is kept.
    """
    if key is None:

        def computed(name: str, expr: ir.Table) -> ir.Table:
            return ibis.memtable(engine.execute(expr))

        return engine.execute(build(computed))
    full_key = (engine.name, key)
    statement, tables = cached_statement(engine, key, build)

    def run() -> pa.Table:
        with statement_gate(concurrent):
            result = engine.run_sql(statement, dialect=engine.sql_dialect)
        assert result is not None  # a query returns rows
        return result

    if not keep_result:
        return run()
    return remembered(engine, tables, ("result", full_key), run)


def cached_statement(
    engine: Engine, key: Hashable, build: Callable[[Step], ir.Table]
) -> tuple[sge.Expression, frozenset[str]]:
    """``build``'s steps stitched into one statement (:func:`stitched_statement`) and the lake
    tables it reads, from the statement cache under ``key`` and the engine kind."""
    return kept_statement(engine, key, lambda: stitched_statement(engine, build))


def kept_statement(
    engine: Engine, key: Hashable, make: Callable[[], sge.Expression]
) -> tuple[sge.Expression, frozenset[str]]:
    """``make()`` and the lake tables it reads, from the statement cache under ``key``
    and the engine kind."""
    full_key = (engine.name, key)
    with _cache_lock:
        cached = _cache.get(full_key)
        if cached is not None:
            _cache.move_to_end(full_key)
            return cached
    statement = make()
    cached = (statement, _tables_read(statement))
    with _cache_lock:
        _cache[full_key] = cached
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return cached


def clear_cache() -> None:
    """Forget every cached statement and result, shared count steps included (tests; a
    changed compiler in a long-lived process)."""
    with _cache_lock:
        _cache.clear()
    with _results_lock:
        _results.clear()
        global _stats
        _stats = CacheStats()
    from medlake.service.cohort_steps import clear_steps  # it imports this module

    clear_steps()


def _tables_read(statement: sge.Expression) -> frozenset[str]:
    """The lake tables a statement reads: its table references that are not its CTEs."""
    steps = {cte.alias_or_name for cte in statement.find_all(sge.CTE)}
    return frozenset(t.name for t in statement.find_all(sge.Table) if t.name not in steps)


def stitched_statement(engine: Engine, build: Callable[[Step], ir.Table]) -> sge.Expression:
    """``WITH step AS (...), ... <final query>``, each part compiled on its own."""
    steps: list[tuple[str, ir.Table]] = []

    def placeholder(name: str, expr: ir.Table) -> ir.Table:
        steps.append((name, expr))
        return ibis.table(expr.schema(), name=name)

    final = build(placeholder)
    compiler = engine.ibis.compiler  # type: ignore[attr-defined]
    query = compiler.to_sqlglot(final)
    ctes = [
        sge.CTE(
            this=compiler.to_sqlglot(expr),
            alias=sge.TableAlias(this=sg.to_identifier(name, quoted=True)),
        )
        for name, expr in steps
    ]
    key = "with_" if "with_" in type(query).arg_types else "with"  # sqlglot renamed it
    inner = query.args.get(key)
    if inner is not None:  # Ibis's own CTEs of the final query come after the steps
        ctes += inner.expressions
    if ctes:  # (``WITH`` and nothing is not SQL)
        query.set(key, sge.With(expressions=ctes))
    return query

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
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

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

_cache: OrderedDict[Hashable, sge.Expression] = OrderedDict()
_cache_lock = threading.Lock()


def resolve_concept_sets(engine: Engine, definition: CohortDefinition) -> dict[int, list[int]]:
    """Each concept set's concept ids on the lake's vocabulary (at most three lookups)."""
    resolver = ConceptSetResolver(definition.concept_sets)
    lookup = resolver.lookup_query(engine.table("concept"))
    rows = [] if lookup is None else engine.execute(lookup).to_pylist()
    named = resolver.named(rows)
    below = resolver.descendants_query(engine.table("concept_ancestor"), named)
    pairs = [] if below is None else _pairs(engine.execute(below))
    found = resolver.with_descendants(named, pairs)
    mapped = resolver.mapped_query(engine.table("concept_relationship"), found)
    return resolver.resolve(found, [] if mapped is None else _pairs(engine.execute(mapped)))


def _pairs(table: pa.Table) -> list[tuple[int, int]]:
    return list(zip(table.column(0).to_pylist(), table.column(1).to_pylist(), strict=True))


def run_cohort_query(
    engine: Engine, build: Callable[[Step], ir.Table], key: Hashable | None
) -> pa.Table:
    """Run ``build(step)`` (e.g. ``compiler.count_query``) on ``engine``.

    With a ``key``, the steps become common table expressions of one statement, cached
    under the key; without (omics criteria), each step is computed in turn.
    """
    if key is None:

        def computed(name: str, expr: ir.Table) -> ir.Table:
            return ibis.memtable(engine.execute(expr))

        return engine.execute(build(computed))
    full_key = (engine.name, key)
    with _cache_lock:
        statement = _cache.get(full_key)
        if statement is not None:
            _cache.move_to_end(full_key)
    if statement is None:
        statement = _statement(engine, build)
        with _cache_lock:
            _cache[full_key] = statement
            while len(_cache) > CACHE_SIZE:
                _cache.popitem(last=False)
    result = engine.run_sql(statement, dialect=engine.sql_dialect)
    assert result is not None  # a query returns rows
    return result


def clear_cache() -> None:
    """Forget every cached statement (tests; a changed compiler in a long-lived process)."""
    with _cache_lock:
        _cache.clear()


def _statement(engine: Engine, build: Callable[[Step], ir.Table]) -> sge.Expression:
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
    query.set(key, sge.With(expressions=ctes))
    return query

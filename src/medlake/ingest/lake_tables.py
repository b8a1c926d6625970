"""Ibis table handles of the lake, looked up once per engine instead of once per query.

``Engine.table`` asks the backend for the table's schema every time (a few milliseconds
on DuckDB); an ingest of many small files builds hundreds of queries on the same dozen
tables, so the writer keeps the handles here. The lake's schema does not change while
an ingest runs (migrations are explicit and separate).
"""

from __future__ import annotations

import weakref

import ibis

from medlake.engine import Engine

_handles: weakref.WeakKeyDictionary[Engine, dict[str, ibis.Table]] = weakref.WeakKeyDictionary()


def lake_table(engine: Engine, name: str) -> ibis.Table:
    """``engine.table(name)``, cached for the engine's lifetime."""
    tables = _handles.setdefault(engine, {})
    table = tables.get(name)
    if table is None:
        table = tables[name] = engine.table(name)
    return table

"""Engine helpers the ingest modules share: cached table handles, optional atomicity.

Ibis table handles of the lake are looked up once per engine instead of once per query.

``Engine.table`` asks the backend for the table's schema every time (a few milliseconds
on DuckDB); an ingest of many small files builds hundreds of queries on the same dozen
tables, so the writer keeps the handles here. The lake's schema does not change while
an ingest runs (migrations are explicit and separate).
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import ibis

from medlake.engine import Engine, SupportsTransactions

_handles: weakref.WeakKeyDictionary[Engine, dict[str, ibis.Table]] = weakref.WeakKeyDictionary()


def lake_table(engine: Engine, name: str) -> ibis.Table:
    """``engine.table(name)``, cached for the engine's lifetime."""
    tables = _handles.setdefault(engine, {})
    table = tables.get(name)
    if table is None:
        table = tables[name] = engine.table(name)
    return table


@contextlib.contextmanager
def atomically(engine: Engine) -> Iterator[None]:
    """One transaction where the engine has them (DuckDB); plain keyed writes elsewhere.

    Writes made inside are keyed (delete-then-insert of the same rows), so on engines
    without transactions (Spark) running them again converges to the same state.
    """
    if isinstance(engine, SupportsTransactions):
        with engine.transaction():
            yield
    else:
        yield

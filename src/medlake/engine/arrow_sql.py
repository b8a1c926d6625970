"""Local SQL over Arrow tables: the fast path readers take where the backend has one.

Some readers (FHIR bulk NDJSON) do their per-record work far cheaper in a columnar SQL
engine than in Python: DuckDB parses JSON in native, multi-threaded code. This module
is the door to that: :func:`arrow_sql_for` gives a runner for the lake's engine, or
``None`` where the backend has no such local SQL (Spark, TiDB), and the reader then
keeps its Python path. The runner only reads the Arrow tables it is given; it never
sees nor changes the lake, so it may run in a read-ahead thread beside the writer.

The SQL is the backend's own dialect (DuckDB's), written by the reader for that
backend: it is not transpiled.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

import pyarrow as pa

from medlake.engine.base import Engine


class ArrowSQL(Protocol):
    """Runs one SELECT over named Arrow tables; ``close()`` when done."""

    dialect: str

    def __call__(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table: ...

    def close(self) -> None: ...


def arrow_sql_for(engine: Engine) -> ArrowSQL | None:
    """A local SQL runner on ``engine``'s backend, or ``None`` where there is none."""
    if engine.kind != "duckdb":
        return None
    from medlake.engine.backends.duckdb_arrow import DuckDBArrowSQL

    return DuckDBArrowSQL(engine.ibis)

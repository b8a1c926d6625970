"""DuckDB's runner for :mod:`medlake.engine.arrow_sql`: SQL over registered Arrow tables.

It runs on a cursor of the lake's connection (its own DuckDB connection to the same
database, so it shares the thread pool and memory limit, and never joins the lake's
open transaction); the Arrow tables are registered as views on that cursor only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

import duckdb
import pyarrow as pa

from medlake.errors import EngineError


class DuckDBArrowSQL:
    """``runner(sql, {"name": arrow_table})`` -> the query's rows as an Arrow table."""

    dialect = "duckdb"

    def __init__(self, backend: Any) -> None:
        self._cursor: duckdb.DuckDBPyConnection | None = None
        self._connection: duckdb.DuckDBPyConnection = backend.con

    def __call__(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table:
        if self._cursor is None:  # made in the thread that runs the queries
            self._cursor = self._connection.cursor()
        names = {name: f"{name}_{uuid.uuid4().hex[:8]}" for name in inputs}
        for name, view in names.items():
            self._cursor.register(view, inputs[name])
        try:
            for name, view in names.items():
                sql = sql.replace("{" + name + "}", view)
            return self._cursor.sql(sql).to_arrow_table()
        except duckdb.Error as exc:
            raise EngineError(f"local SQL failed: {exc}", statement=sql, engine="duckdb") from exc
        finally:
            for view in names.values():
                self._cursor.unregister(view)

    def close(self) -> None:
        if self._cursor is not None:
            self._cursor.close()
            self._cursor = None

"""Prepared queries: SQL built once, run many times with its parameters bound.

A read that answers many calls a second (patient 360: one person's rows, many persons)
should not build, compile and transpile its SQL on every call: building an Ibis
expression and compiling it costs several times what DuckDB takes to run it when the
filter touches one row group. A :class:`PreparedQuery` holds the query as a SQLGlot
expression with ``?`` placeholders (``sge.Placeholder()``), transpiles it once per
dialect, and :meth:`medlake.engine.Engine.run_prepared` runs it with the values bound
by the backend (DuckDB binds them natively; a backend without binding gets them as
literals put in the placeholders' places by SQLGlot, never by formatting strings).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import sqlglot.expressions as sge
from sqlglot.errors import ErrorLevel


class PreparedQuery:
    """A read-only query with positional ``?`` placeholders, transpiled once per dialect."""

    def __init__(self, statement: sge.Query) -> None:
        if not isinstance(statement, sge.Query):
            raise TypeError(f"a prepared query must be a query, not {type(statement).__name__}")
        self.statement = statement
        #: How many values :meth:`Engine.run_prepared` must be given.
        self.parameter_count = sum(1 for _ in statement.find_all(sge.Placeholder))
        self._sql: dict[str, str] = {}
        self._lock = threading.Lock()

    def sql(self, dialect: str) -> str:
        """The query's text in ``dialect`` (transpiled on first use, then kept)."""
        with self._lock:
            text = self._sql.get(dialect)
        if text is None:
            text = self.statement.sql(dialect=dialect, unsupported_level=ErrorLevel.RAISE)
            with self._lock:
                self._sql[dialect] = text
        return text

    def with_literals(self, parameters: Sequence[Any]) -> sge.Expression:
        """The statement with each placeholder replaced by its value, in order."""
        values = iter(parameters)
        return self.statement.copy().transform(
            lambda node: sge.convert(next(values)) if isinstance(node, sge.Placeholder) else node
        )

    def __repr__(self) -> str:
        return f"<PreparedQuery {self.parameter_count} parameters>"

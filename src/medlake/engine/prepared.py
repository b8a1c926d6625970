"""Prepared queries: SQL built once, run many times with its parameters bound.

A read that answers many calls a second (patient 360: one person's rows, many persons)
should not build, compile and transpile its SQL on every call: building an Ibis
expression and compiling it costs several times what DuckDB takes to run it when the
filter touches one row group. A :class:`PreparedQuery` holds the query as a SQLGlot
expression with ``?`` placeholders (``sge.Placeholder()``), transpiles it once per
dialect, and :meth:`medlake.engine.Engine.run_prepared` runs it with the values bound
by the backend (DuckDB binds them natively; a backend without binding gets them as
literals put in the placeholders' places by SQLGlot, never by formatting strings).

A write made many times a second (the audit trail's appends: one ``INSERT`` and one
conditional ``UPDATE`` of its head per commit) is a :class:`PreparedWrite`, run by
:meth:`medlake.engine.Engine.run_prepared_write`, which returns how many rows changed so
a compare-and-set ``UPDATE ... WHERE`` can tell whether it hit its row.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

import sqlglot.expressions as sge
from sqlglot.errors import ErrorLevel


class _Prepared:
    """A statement with positional ``?`` placeholders, transpiled once per dialect."""

    statement: sge.Expression

    def __init__(self, statement: sge.Expression) -> None:
        self.statement = statement
        #: How many values must be bound when it runs.
        self.parameter_count = sum(1 for _ in statement.find_all(sge.Placeholder))
        self._sql: dict[str, str] = {}
        self._lock = threading.Lock()

    def sql(self, dialect: str) -> str:
        """The statement's text in ``dialect`` (transpiled on first use, then kept)."""
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
        return f"<{type(self).__name__} {self.parameter_count} parameters>"


class PreparedQuery(_Prepared):
    """A read-only query with positional ``?`` placeholders, transpiled once per dialect."""

    statement: sge.Query

    def __init__(self, statement: sge.Query) -> None:
        if not isinstance(statement, sge.Query):
            raise TypeError(f"a prepared query must be a query, not {type(statement).__name__}")
        super().__init__(statement)


#: Statements a :class:`PreparedWrite` may hold: they change rows, never a table's columns.
WRITES = (sge.Insert, sge.Update, sge.Delete)


class PreparedWrite(_Prepared):
    """An ``INSERT``, ``UPDATE`` or ``DELETE`` with positional ``?`` placeholders."""

    statement: sge.Insert | sge.Update | sge.Delete

    def __init__(self, statement: sge.Insert | sge.Update | sge.Delete) -> None:
        if not isinstance(statement, WRITES):
            raise TypeError(
                f"a prepared write must be an INSERT, UPDATE or DELETE, "
                f"not {type(statement).__name__}"
            )
        super().__init__(statement)
        #: The tables the statement names (the data versions it moves).
        self.tables = frozenset(t.name for t in statement.find_all(sge.Table) if t.name)

"""The engine contract: one public API over every backend, with logging, timing and errors.

Following Splink's ``DatabaseAPI``, the public methods of :class:`Engine` are
``@final``: each one times itself (a debug log line with the elapsed milliseconds),
logs, and turns any backend exception into :class:`~medlake.errors.EngineError` carrying
the SQL that failed. A backend implements only the small abstract ``_methods`` below, so
what callers see — messages, types, NOT NULL checks, load semantics — is the same on
DuckDB and on Spark.

Optional capabilities are mixins checked with ``isinstance`` (after Ibis's
``SupportsTemporaryTables`` and friends): an engine that is also
:class:`SupportsTransactions` can run :meth:`Engine.transaction`; on the others it
raises :class:`~medlake.errors.EngineCapabilityError`. Domain code never asks which
backend it has.

Queries are Ibis expressions built on :meth:`Engine.table`; what Ibis cannot say (DDL,
MERGE, DELETE) goes through :meth:`Engine.run_sql` as SQL that SQLGlot transpiles to
the backend's dialect.
"""

from __future__ import annotations

import abc
import contextlib
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self, final

import ibis
import ibis.expr.types as ir
import pyarrow as pa
import sqlglot
import sqlglot.expressions as sge
from sqlglot.errors import ErrorLevel

from medlake.engine.capabilities import SupportsTransactions
from medlake.engine.data_versions import ANY_TABLE, DATA_VERSIONS
from medlake.engine.ddl import create_table_statement, drop_table_statement
from medlake.engine.loading import (
    ArrowData,
    LoadProgress,
    LoadTarget,
    conform_batches,
    iter_record_batches,
)
from medlake.engine.prepared import PreparedQuery, PreparedWrite
from medlake.engine.rewrite_gate import DEFAULT_WAIT_S, GATES
from medlake.engine.spec import TableSpec
from medlake.errors import (
    EngineCapabilityError,
    EngineError,
    MedlakeError,
    WorkspaceFrozenError,
    WriteConflictError,
)
from medlake.log import get_logger

logger = get_logger(__name__)

# A backend's own messages can run to pages (Spark appends the query plan and a JVM stack).
_MAX_CAUSE_CHARS = 600

Statement = str | Callable[[], str | None] | None





@dataclass
class _Step:
    """What a running public operation reports in its timing line (e.g. rows)."""

    detail: str = ""


class Engine(abc.ABC):
    """The one door to the lake's storage: a thin layer over an Ibis backend.

    Use it as a context manager (``with open_workspace_engine(ws) as engine:``) so the
    connection is closed. Every public method may raise
    :class:`~medlake.errors.EngineError`; its ``statement`` holds the SQL that failed
    when there is one.
    """

    #: Name of the engine, as in ``medlake.toml`` (``[engine] kind``).
    kind: ClassVar[str]
    #: SQLGlot dialect the backend speaks; ``run_sql`` transpiles into it.
    sql_dialect: ClassVar[str]

    def __init__(self, backend: ibis.BaseBackend) -> None:
        self._backend = backend
        self._closed = False
        self._specs: dict[str, TableSpec] = {}
        # Reading a table's schema from the backend costs milliseconds; loads of many
        # small batches would spend most of their time on it. Forgotten on any DDL.
        self._load_targets: dict[str, LoadTarget] = {}
        self._tx_depth = 0
        self._tx_failed = False
        # The workspace's freeze (ransomware read-only mode): every write asks it first.
        self._write_guard: Callable[[], str | None] | None = None
        self._exempt = threading.local()
        # Tables written in the open transaction: their versions move when it ends.
        self._tx_written: set[str] = set()
        # Called with whether the outer transaction committed, once it has ended.
        self._tx_after: list[Callable[[bool], None]] = []
        # How long a write waits for a table's rewrite (medlake.engine.rewrite_gate).
        self._write_wait_s = DEFAULT_WAIT_S

    # ------------------------------------------------------------------ identity

    @final
    @property
    def name(self) -> str:
        """``"duckdb"`` or ``"spark"``."""
        return self.kind

    @final
    @property
    def ibis(self) -> ibis.BaseBackend:
        """The raw Ibis backend, for building expressions beyond :meth:`table`."""
        return self._backend

    def __repr__(self) -> str:
        return f"<{type(self).__name__}{' (closed)' if self._closed else ''}>"

    # ------------------------------------------------------------------ data version

    @final
    def data_version(self, tables: Iterable[str]) -> Hashable | None:
        """A value that changes whenever any of ``tables`` may have changed, or None.

        Every write through this process's engines to the same lake moves it once the
        write has committed (a transaction's writes when it ends); so does the lake
        being opened afresh, when another process may have written it. Read it *before*
        computing a result from those tables: the result is then never newer than a
        later version says. None when the backend cannot tell (Spark's warehouse is
        written by other processes at any time; an in-memory lake): cache nothing then.
        """
        lake = self._lake_identity()
        return None if lake is None else DATA_VERSIONS.version(lake, tables)

    def _written(self, tables: Iterable[str]) -> None:
        """Record a write to ``tables`` (:data:`ANY_TABLE`: unknown): now, or when the
        open transaction ends."""
        lake = self._lake_identity()
        if lake is None:
            return
        if self._tx_depth:
            self._tx_written.update(tables)
        else:
            DATA_VERSIONS.bump(lake, tables)

    def _lake_identity(self) -> str | None:
        """The lake this engine reads, the same for every engine on it in this process,
        when all writes to it in this process go through engines; else None."""
        return None

    # ------------------------------------------------------------------ write guard

    @final
    def guard_writes(self, check: Callable[[], str | None]) -> None:
        """Refuse every write while ``check()`` returns a reason (else None).

        ``open_workspace_engine`` installs the workspace's freeze here, so every change
        to the lake — whichever service makes it — passes one check: creating, dropping,
        loading, deleting, and SQL that is not a query. Reads are never refused.
        """
        self._write_guard = check

    @final
    @contextlib.contextmanager
    def writes_while_frozen(self) -> Iterator[None]:
        """Let this thread write while the guard refuses: only for the audit trail, which
        must record the alert, the refusals and the review that lifts the freeze."""
        depth = getattr(self._exempt, "depth", 0)
        self._exempt.depth = depth + 1
        try:
            yield
        finally:
            self._exempt.depth = depth

    @final
    def wait_for_rewrites(self, seconds: float) -> None:
        """How long a write waits while a table it may touch is rewritten (and a rewrite
        for the writes before it) before failing with
        :class:`~medlake.errors.LakeBusyError`; ``open_workspace_engine`` sets
        ``[layout] write_wait_seconds`` here (:mod:`medlake.engine.rewrite_gate`)."""
        self._write_wait_s = seconds

    def _write_hold(self, tables: Iterable[str] | None) -> contextlib.AbstractContextManager[None]:
        """Hold the lake's rewrite gate for one write outside a transaction (a
        transaction holds it from its start)."""
        lake = self._lake_identity()
        if lake is None or self._tx_depth:
            return contextlib.nullcontext()
        return GATES.write(lake, tables, wait_s=self._write_wait_s)

    def _rewrite_hold(self, table: str) -> contextlib.AbstractContextManager[None]:
        """Take ``table`` exclusively from this process's writes for a rewrite."""
        lake = self._lake_identity()
        if lake is None:
            return contextlib.nullcontext()
        return GATES.rewrite(lake, table, wait_s=self._write_wait_s)

    def _refuse_if_guarded(self, action: str) -> None:
        if self._write_guard is None or getattr(self._exempt, "depth", 0):
            return
        reason = self._write_guard()
        if reason is not None:
            raise WorkspaceFrozenError(f"{action} refused: {reason}")

    # ------------------------------------------------------------------ schema

    @final
    def create_schema(self, tables: Sequence[TableSpec]) -> list[str]:
        """Create the tables that do not exist yet; return the names created, in order.

        Existing tables are left as they are (no column is added or changed: that is a
        migration's job). Required columns are ``NOT NULL`` where the backend keeps the
        constraint; :meth:`load_arrow` checks them on every backend.
        """
        with self._step(f"create schema ({len(tables)} tables)") as step:
            existing = set(self._list_tables())
            created: list[str] = []
            for spec in tables:
                self._specs[spec.name] = spec
                self._load_targets.pop(spec.name, None)
                if spec.name in existing:
                    continue
                self._refuse_if_guarded(f"create table {spec.name}")
                statement = create_table_statement(
                    spec,
                    type_mapper=self._backend.compiler.type_mapper,  # type: ignore[attr-defined]
                    dialect=self.sql_dialect,
                    properties=self._table_properties(),
                )
                with self._step(f"create table {spec.name}", statement=statement):
                    try:
                        with self._write_hold([spec.name]):
                            self._run_statement(statement, returns_rows=False)
                        self._table_created(spec.name)
                    finally:
                        self._written([spec.name])
                existing.add(spec.name)
                created.append(spec.name)
            step.detail = f"{len(created)} created"
            if created:
                logger.info("%s: created tables %s", self.name, ", ".join(created))
            return created

    @final
    def list_tables(self) -> list[str]:
        """Names of the lake's tables, sorted."""
        with self._step("list tables"):
            return sorted(self._list_tables())

    @final
    def has_table(self, name: str) -> bool:
        with self._step(f"look up table {name}"):
            return name in self._list_tables()

    @final
    def drop_table(self, name: str, missing_ok: bool = True) -> None:
        """Drop ``name``; a missing table is an error only when ``missing_ok`` is false."""
        with self._step(f"drop table {name}"):
            if name not in self._list_tables():
                if missing_ok:
                    return
                raise EngineError(f"cannot drop table {name!r}: no such table", engine=self.name)
            self._refuse_if_guarded(f"drop table {name}")
            statement = drop_table_statement(name, dialect=self.sql_dialect)
            with self._step(f"drop table {name}", statement=statement):
                try:
                    with self._write_hold([name]):
                        self._drop_table(name, statement)
                finally:
                    self._written([name])
            self._specs.pop(name, None)
            self._load_targets.pop(name, None)

    # ------------------------------------------------------------------ writing

    @final
    def load_arrow(self, table: str, data: ArrowData) -> int:
        """Append Arrow data to ``table``; return the number of rows loaded.

        Columns are matched by name; nullable columns missing from the data are filled
        with nulls; values are cast (safely) to the table's types. A column the table
        lacks, a required column missing or null, or a value that cannot be cast raises
        :class:`EngineError` naming the table and the column. Batches stream through,
        so a :class:`pyarrow.RecordBatchReader` is never read whole into memory.
        """
        self._refuse_if_guarded(f"load into {table}")
        with self._step(f"load into {table}") as step:
            target = self._load_target(table)
            progress = LoadProgress()
            batches = conform_batches(target, iter_record_batches(data), progress)
            try:
                with self._write_hold([table]):
                    self._insert_batches(table, target.schema, batches)
            except Exception:
                # The backend may have wrapped our own error; the original is clearer.
                if progress.error is not None:
                    raise progress.error from None
                raise
            finally:
                self._written([table])
            step.detail = f"{progress.rows} rows"
            return progress.rows

    @final
    def delete_where(self, table: str, predicate: ir.BooleanValue) -> int:
        """Delete the rows of ``table`` where ``predicate`` is true; return how many.

        ``predicate`` is an Ibis boolean expression on ``engine.table(table)``; rows
        where it is null are kept, as with SQL's ``DELETE``.
        """
        if not isinstance(predicate, ir.BooleanValue):
            raise TypeError(f"predicate must be an Ibis boolean expression, not {type(predicate)}")
        self._refuse_if_guarded(f"delete from {table}")
        with self._step(f"delete from {table}") as step:
            try:
                with self._write_hold([table]):
                    deleted = self._delete_where(table, predicate)
            finally:
                self._written([table])
            step.detail = f"{deleted} rows"
            return deleted

    @final
    def run_sql(
        self, statement: sge.Expression | str, *, dialect: str = "duckdb"
    ) -> pa.Table | None:
        """Run SQL that Ibis cannot express (DDL, MERGE, DELETE...) on the backend.

        ``statement`` is a SQLGlot expression, or SQL text in ``dialect`` (several
        statements separated by ``;`` run in order). It is transpiled to the backend's
        dialect; SQL the backend cannot express is an error rather than a guess. Build
        values into the expression with SQLGlot (``sge.convert``), never by formatting
        strings. Returns the rows of the last statement if it is a query, else None.
        """
        original: Statement = (
            statement if isinstance(statement, str) else (lambda: statement.sql(dialect=dialect))
        )
        with self._step("run sql", statement=original):
            if isinstance(statement, str):
                expressions = [e for e in sqlglot.parse(statement, read=dialect) if e is not None]
            else:
                expressions = [statement]
            result: pa.Table | None = None
            if not all(isinstance(e, sge.Query) for e in expressions):
                self._refuse_if_guarded("SQL that changes the lake")
                if not all(isinstance(e, _DATA_CHANGES) for e in expressions):
                    self._load_targets.clear()  # DDL may have changed a table's columns
            for expression in expressions:
                sql = expression.sql(dialect=self.sql_dialect, unsupported_level=ErrorLevel.RAISE)
                query = isinstance(expression, sge.Query)
                with self._step("run statement", statement=sql):
                    hold = contextlib.nullcontext() if query else self._write_hold(
                        _tables_named(expression) - {ANY_TABLE} or None
                    )
                    try:
                        with hold:
                            result = self._run_statement(sql, returns_rows=query)
                    finally:
                        if not query:
                            self._written(_tables_named(expression))
            return result

    # ------------------------------------------------------------------ reading

    @final
    def table(self, name: str) -> ir.Table:
        """The Ibis table ``name``, to build queries on."""
        with self._step(f"open table {name}"):
            return self._backend.table(name)

    @final
    def execute(self, expr: ir.Expr) -> pa.Table:
        """Run an Ibis expression and return its result as an Arrow table.

        A column or scalar expression comes back as a one-column table.
        """
        with self._step("execute", statement=self._compiled(expr)) as step:
            result = self._execute_arrow(expr.as_table())
            step.detail = f"{result.num_rows} rows"
            return result

    @final
    def to_batches(self, expr: ir.Expr, batch_size: int = 65_536) -> pa.RecordBatchReader:
        """Run an Ibis expression and stream its result as record batches.

        Errors met while reading the stream are raised as :class:`EngineError` too.
        """
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        table_expr = expr.as_table()
        statement = self._compiled(table_expr)
        schema = _nullable(table_expr.schema().to_pyarrow())
        with self._step("stream", statement=statement):
            batches = self._stream_batches(table_expr, batch_size)
        return pa.RecordBatchReader.from_batches(
            schema, self._guard_stream(batches, schema, statement)
        )

    @final
    def scalar(self, expr: ir.Scalar) -> Any:
        """Run a scalar expression (``t.count()``, ``t.x.max()``) and return a Python value."""
        if not isinstance(expr, ir.Scalar):
            raise TypeError(f"scalar() needs an Ibis scalar expression, not {type(expr).__name__}")
        with self._step("scalar", statement=self._compiled(expr)):
            result = self._execute_arrow(expr.as_table())
            if result.num_rows != 1:
                raise EngineError(
                    f"a scalar expression returned {result.num_rows} rows", engine=self.name
                )
            return result.column(0)[0].as_py()

    @final
    def count(self, name_or_expr: str | ir.Table) -> int:
        """Rows in a table (by name) or in a table expression."""
        expr = self.table(name_or_expr) if isinstance(name_or_expr, str) else name_or_expr
        return int(self.scalar(expr.count()))

    def _check_parameter_count(
        self, expected: int, parameters: Sequence[Any], *, what: str = "query"
    ) -> None:
        if len(parameters) != expected:
            raise EngineError(
                f"the prepared {what} takes {expected} parameters, not {len(parameters)}",
                engine=self.name,
            )

    @final
    def run_prepared(self, query: PreparedQuery, parameters: Sequence[Any] = ()) -> pa.Table:
        """Run a :class:`~medlake.engine.prepared.PreparedQuery` with its ``?`` placeholders
        bound to ``parameters`` (in order); return its rows.

        For reads made many times a second with different values (one person's rows):
        the SQL is transpiled once, and the backend binds the values.
        """
        result: pa.Table = self._prepared(query, parameters, self._run_prepared)
        return result

    @final
    def run_prepared_rows(
        self, query: PreparedQuery, parameters: Sequence[Any] = ()
    ) -> list[dict[str, Any]]:
        """:meth:`run_prepared`, its rows as dictionaries (column name to Python value).

        For small results read many times a second (one person's rows): the same values
        as ``run_prepared(...).to_pylist()``, without building an Arrow table in between
        where the backend hands out Python rows (DuckDB's DB-API path).
        """
        rows: list[dict[str, Any]] = self._prepared(query, parameters, self._run_prepared_rows)
        return rows

    def _prepared(
        self,
        query: PreparedQuery,
        parameters: Sequence[Any],
        run: Callable[[PreparedQuery, str, Sequence[Any]], Any],
    ) -> Any:
        self._check_parameter_count(query.parameter_count, parameters)
        sql = query.sql(self.sql_dialect)
        with self._step("run prepared", statement=sql) as step:
            result = run(query, sql, parameters)
            step.detail = f"{len(result) if isinstance(result, list) else result.num_rows} rows"
            return result

    @final
    def run_prepared_write(
        self, write: PreparedWrite, parameters: Sequence[Any] = ()
    ) -> int | None:
        """Run a :class:`~medlake.engine.prepared.PreparedWrite` (``INSERT``, ``UPDATE``,
        ``DELETE``) with its ``?`` placeholders bound to ``parameters``; return how many
        rows it changed, or None when the backend does not say.

        For writes made many times a second (the audit trail's appends): transpiled once,
        values bound by the backend, no Arrow conversion; refused while the workspace is
        frozen like every other write.
        """
        self._check_parameter_count(write.parameter_count, parameters, what="write")
        self._refuse_if_guarded(f"write to {', '.join(sorted(write.tables))}")
        sql = write.sql(self.sql_dialect)
        with self._step("run prepared write", statement=sql) as step:
            try:
                with self._write_hold(write.tables or None):
                    changed = self._run_prepared_write(write, sql, parameters)
            finally:
                self._written(write.tables or {ANY_TABLE})
            step.detail = "" if changed is None else f"{changed} rows"
            return changed

    # ------------------------------------------------------------------ transactions

    @final
    @property
    def in_transaction(self) -> bool:
        """Whether a :meth:`transaction` block is open on this engine."""
        return self._tx_depth > 0

    @final
    def after_transaction(self, callback: Callable[[bool], None]) -> None:
        """Call ``callback(committed)`` once the open transaction has ended (committed or
        rolled back); with no transaction open, call ``callback(True)`` now.

        For work that must know a transaction's outcome, e.g. the audit journal's lock,
        held while a caller's transaction holds audit events, until it ends.
        """
        if self._tx_depth:
            self._tx_after.append(callback)
        else:
            callback(True)

    @final
    @contextlib.contextmanager
    def transaction(self, *, tables: Iterable[str] | None = None) -> Iterator[Self]:
        """Run the block atomically: commit at the end, roll back on any exception.

        Only engines that are :class:`SupportsTransactions`; others raise
        :class:`EngineCapabilityError`. A nested ``transaction()`` joins the outer one
        (there are no savepoints); if a nested block fails, the whole transaction is
        rolled back even if the exception is caught in between.

        The transaction holds the lake's rewrite gate from its start: it waits while a
        table is rewritten (:mod:`medlake.engine.rewrite_gate`). ``tables``, when given,
        are the only tables the block writes: it then waits only for their rewrites (the
        audit trail's appends never wait for a CDM table's). A nested block's
        ``tables`` are not checked (the outer one's hold covers it).
        """
        if not isinstance(self, SupportsTransactions):
            raise EngineCapabilityError(
                f"the {self.name} engine has no transactions; run the work without "
                "engine.transaction() or use the duckdb engine",
                engine=self.name,
            )
        if self._tx_depth:
            self._tx_depth += 1
            try:
                yield self
            except BaseException:
                self._tx_failed = True
                raise
            finally:
                self._tx_depth -= 1
            return
        with self._write_hold(tables):
            yield from self._outer_transaction()

    def _outer_transaction(self) -> Iterator[Self]:
        assert isinstance(self, SupportsTransactions)
        with self._step("begin transaction"):
            self._begin()
        self._tx_depth, self._tx_failed = 1, False
        self._tx_written = set()
        committed = False
        try:
            try:
                yield self
            except BaseException:
                self._tx_depth = 0
                self._rollback_quietly(self)
                raise
            self._tx_depth = 0
            if self._tx_failed:
                self._rollback_quietly(self)
                raise EngineError(
                    "transaction rolled back: a nested transaction block failed",
                    engine=self.name,
                )
            with self._step("commit"):
                self._commit()
            committed = True
        finally:
            # After the commit (or rollback): a count that read the version before it
            # and cached what it saw is never served once the new rows are visible.
            written, self._tx_written = self._tx_written, set()
            if written:
                self._written(written)
            after, self._tx_after = self._tx_after, []
            for callback in after:
                callback(committed)

    def _rollback_quietly(self, engine: SupportsTransactions) -> None:
        # A failed rollback must not hide the exception that caused it.
        self._load_targets.clear()  # a rolled-back DDL statement leaves the old schema
        started = time.perf_counter()
        try:
            engine._rollback()
        except Exception:
            logger.exception("%s: rollback failed", self.name)
        else:
            logger.debug("%s: rollback in %.1f ms", self.name, _ms_since(started))

    # ------------------------------------------------------------------ lifecycle

    @final
    def close(self) -> None:
        """Close the connection (idempotent)."""
        if self._closed:
            return
        self._closed = True
        started = time.perf_counter()
        try:
            self._close()
        except Exception as exc:
            raise EngineError(
                f"closing the engine failed: {_cause(exc)}", engine=self.name
            ) from exc
        logger.debug("%s: close in %.1f ms", self.name, _ms_since(started))

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # ------------------------------------------------------------------ shared machinery

    @contextlib.contextmanager
    def _step(self, action: str, *, statement: Statement = None) -> Iterator[_Step]:
        """Time ``action`` and turn any backend exception into an EngineError."""
        if self._closed:
            raise EngineError(f"cannot {action}: the engine is closed", engine=self.name)
        step = _Step()
        started = time.perf_counter()
        try:
            yield step
        except MedlakeError:
            raise  # ours already, with the most precise statement
        except Exception as exc:
            sql = statement() if callable(statement) else statement
            logger.debug("%s: %s failed after %.1f ms", self.name, action, _ms_since(started))
            kind = WriteConflictError if _is_write_conflict(exc) else EngineError
            raise kind(f"{action} failed: {_cause(exc)}", statement=sql, engine=self.name) from exc
        detail = f" ({step.detail})" if step.detail else ""
        logger.debug("%s: %s%s in %.1f ms", self.name, action, detail, _ms_since(started))

    def _compiled(self, expr: ir.Expr) -> Callable[[], str | None]:
        """The SQL of ``expr``, computed only when an error needs it."""

        def compile_() -> str | None:
            try:
                return str(self._backend.compile(expr))
            except Exception:
                return None

        return compile_

    def _guard_stream(
        self, batches: Iterator[pa.RecordBatch], schema: pa.Schema, statement: Statement
    ) -> Iterator[pa.RecordBatch]:
        with self._step("read stream", statement=statement) as step:
            rows = 0
            for batch in batches:
                rows += batch.num_rows
                yield batch if batch.schema.equals(schema) else batch.cast(schema)
            step.detail = f"{rows} rows"

    def _load_target(self, table: str) -> LoadTarget:
        cached = self._load_targets.get(table)
        if cached is not None:
            return cached
        schema = self._backend.get_schema(table)
        spec = self._specs.get(table)
        required = {name for name, dtype in schema.items() if not dtype.nullable}
        if spec is not None:
            required |= {c.name for c in spec.columns if c.required and c.name in schema}
        target = LoadTarget(
            table=table,
            schema=_nullable(schema.to_pyarrow()),
            required=frozenset(required),
            engine=self.name,
        )
        self._load_targets[table] = target
        return target

    # ------------------------------------------------------------------ backend hooks

    def _table_properties(self) -> list[sge.Expression]:
        """Extra ``CREATE TABLE`` properties (Spark: ``USING PARQUET``)."""
        return []

    def _table_created(self, name: str) -> None:  # noqa: B027 - optional hook
        """Called after a table is created; backends that must persist more do it here."""

    def _execute_arrow(self, expr: ir.Table) -> pa.Table:
        """Run a table expression and return all its rows."""
        return self._backend.to_pyarrow(expr)

    def _run_prepared(self, query: PreparedQuery, sql: str, parameters: Sequence[Any]) -> pa.Table:
        """Run a prepared query; by default with the values put in as literals."""
        bound = query.with_literals(parameters).sql(
            dialect=self.sql_dialect, unsupported_level=ErrorLevel.RAISE
        )
        result = self._run_statement(bound, returns_rows=True)
        assert result is not None
        return result

    def _run_prepared_rows(
        self, query: PreparedQuery, sql: str, parameters: Sequence[Any]
    ) -> list[dict[str, Any]]:
        """Run a prepared query for its rows as dictionaries; by default through Arrow."""
        return self._run_prepared(query, sql, parameters).to_pylist()

    def _run_prepared_write(
        self, write: PreparedWrite, sql: str, parameters: Sequence[Any]
    ) -> int | None:
        """Run a prepared write; by default with the values put in as literals."""
        bound = write.with_literals(parameters).sql(
            dialect=self.sql_dialect, unsupported_level=ErrorLevel.RAISE
        )
        self._run_statement(bound, returns_rows=False)
        return None

    def _drop_table(self, name: str, statement: str) -> None:
        self._run_statement(statement, returns_rows=False)

    @abc.abstractmethod
    def _run_statement(self, sql: str, *, returns_rows: bool) -> pa.Table | None:
        """Run one statement in the backend's dialect; return its rows if ``returns_rows``."""

    @abc.abstractmethod
    def _list_tables(self) -> list[str]:
        """Names of the persistent tables (not temporary views)."""

    @abc.abstractmethod
    def _insert_batches(
        self, table: str, schema: pa.Schema, batches: Iterator[pa.RecordBatch]
    ) -> None:
        """Append conformed batches (exactly ``schema``, the table's column order)."""

    @abc.abstractmethod
    def _stream_batches(self, expr: ir.Table, batch_size: int) -> Iterator[pa.RecordBatch]:
        """Start running ``expr`` and return an iterator over its batches."""

    @abc.abstractmethod
    def _delete_where(self, table: str, predicate: ir.BooleanValue) -> int:
        """Delete the rows where ``predicate`` is true; return how many."""

    @abc.abstractmethod
    def _close(self) -> None:
        """Release the connection or session."""


def _tables_named(expression: sge.Expression) -> set[str]:
    """The tables a statement that changes the lake names (read ones too: a superset is
    safe); :data:`ANY_TABLE` when it names none (``SET``, ``CHECKPOINT``, ...)."""
    names = {table.name for table in expression.find_all(sge.Table) if table.name}
    return names or {ANY_TABLE}


#: Statements that change rows but never a table's columns (the load-target cache stays).
_DATA_CHANGES = (sge.Query, sge.Insert, sge.Update, sge.Delete, sge.Merge)


def _nullable(schema: pa.Schema) -> pa.Schema:
    return pa.schema([field.with_nullable(True) for field in schema])


def _ms_since(started: float) -> float:
    return (time.perf_counter() - started) * 1000


def _is_write_conflict(exc: BaseException) -> bool:
    """A write-write conflict between transactions (DuckDB's TransactionException says
    "Conflict on ..."); matched by name and text as drivers are not imported here."""
    return type(exc).__name__ == "TransactionException" and "conflict" in str(exc).lower()


def _cause(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    lines = [line for line in text.splitlines() if line.strip()]
    # Spark and DuckDB put the useful sentence first; plans and stacks follow.
    head = "\n".join(lines[:3])
    if len(head) > _MAX_CAUSE_CHARS:
        head = head[:_MAX_CAUSE_CHARS] + "..."
    return f"{type(exc).__name__}: {head}"

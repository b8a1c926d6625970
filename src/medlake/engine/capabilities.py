"""Optional engine capabilities, as mixins checked with ``isinstance``.

After Ibis's ``SupportsTemporaryTables`` and friends: an engine that is also
:class:`SupportsTransactions` can run :meth:`Engine.transaction`; the others raise
:class:`~medlake.errors.EngineCapabilityError`. Domain code asks for a capability,
never for a backend.
"""

from __future__ import annotations

import abc
import contextlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, final

import pyarrow as pa
import sqlglot.expressions as sge
from sqlglot.errors import ErrorLevel


class SupportsTransactions(abc.ABC):
    """Capability mixin: the engine can run a block of statements atomically."""

    @abc.abstractmethod
    def _begin(self) -> None: ...

    @abc.abstractmethod
    def _commit(self) -> None: ...

    @abc.abstractmethod
    def _rollback(self) -> None: ...


class SupportsScratchSession(abc.ABC):
    """Capability mixin: a scratch SQL session for a library that runs its own SQL.

    Splink (the EMPI's record linkage) generates and runs SQL itself and needs a
    connection of the engine's own kind (a DuckDB connection, a Spark session). A
    scratch session reads the lake's tables but creates its own (Splink's intermediate
    tables) where the lake cannot see them, and they are gone when the block ends.
    """

    @abc.abstractmethod
    def scratch_session(self) -> contextlib.AbstractContextManager[Any]:
        """``with engine.scratch_session() as con:`` the backend's raw connection/session."""


class SupportsSplink(abc.ABC):
    """Capability mixin: Splink (the EMPI's record linkage) runs on the engine's backend.

    :meth:`splink_api` gives a Splink ``DatabaseAPI`` of the engine's own kind
    (``DuckDBAPI``, ``SparkAPI``) on the lake's connection or session, so the domain never
    imports a driver. Splink's intermediate tables live where the lake cannot see them
    and are gone when the block ends. The API's ``sql_dialect`` says which SQL Splink
    speaks there; the caller writes its comparisons in that dialect.
    """

    @abc.abstractmethod
    def splink_api(self) -> contextlib.AbstractContextManager[Any]:
        """``with engine.splink_api() as api:`` a Splink database API for the block."""


class SupportsCheckpoint(abc.ABC):
    """Capability mixin: the engine can make its files a consistent copy of the lake.

    Once :meth:`checkpoint` returns, and while this connection holds the lake (DuckDB
    lets no other process write the file meanwhile), copying the engine's files copies
    the lake as of that moment: what ``medlake backup`` reads.
    """

    @final
    def checkpoint(self) -> None:
        """Write every committed change into the lake's main file (DuckDB: ``CHECKPOINT``)."""
        with self._step("checkpoint", statement="CHECKPOINT"):  # type: ignore[attr-defined]
            self._checkpoint()

    @abc.abstractmethod
    def _checkpoint(self) -> None: ...

    @final
    @contextlib.contextmanager
    def checkpoints_deferred(self, wal_bytes: int) -> Iterator[None]:
        """Within the block, a commit checkpoints only once the write-ahead log holds
        ``wal_bytes`` (DuckDB: ``checkpoint_threshold``, 16 MiB by default).

        For bulk loads: every large batch commit would otherwise write its tables' last,
        partly filled row groups again. The setting belongs to the database, so other
        connections of this process to the lake share it while the block runs (nested
        and concurrent blocks: the first one in sets it, the last one out puts it back).
        Durability is unchanged: a commit is in the log when it returns.
        """
        self._defer_checkpoints(wal_bytes)
        try:
            yield
        finally:
            self._end_deferred_checkpoints()

    @abc.abstractmethod
    def _defer_checkpoints(self, wal_bytes: int) -> None: ...

    @abc.abstractmethod
    def _end_deferred_checkpoints(self) -> None: ...


class SupportsArrowInputs(abc.ABC):
    """Capability mixin: a query may read in-memory Arrow tables by name.

    For results computed once and read again by later queries (a cohort count's shared
    steps, :mod:`medlake.service.cohort_steps`): the tables are visible to that one
    query only, on this engine's own connection, under the names given, and are not
    copied into the lake (DuckDB scans the Arrow buffers where they are).
    """

    @final
    def query_with_inputs(
        self, statement: sge.Expression, inputs: Mapping[str, pa.Table]
    ) -> pa.Table:
        """Run the query ``statement`` (SQLGlot, transpiled to the backend's dialect) with
        ``inputs`` readable as tables of those names; return its rows."""
        sql = statement.sql(
            dialect=self.sql_dialect,  # type: ignore[attr-defined]
            unsupported_level=ErrorLevel.RAISE,
        )
        if not isinstance(statement, sge.Query):
            raise TypeError("query_with_inputs runs queries only")
        with self._step("query with inputs", statement=sql):  # type: ignore[attr-defined]
            return self._query_with_inputs(sql, inputs)

    @abc.abstractmethod
    def _query_with_inputs(self, sql: str, inputs: Mapping[str, pa.Table]) -> pa.Table: ...


class SupportsReordering(abc.ABC):
    """Capability mixin: a table can be rewritten with its rows stored in a given order.

    DuckDB keeps each row group's min/max per column (zone maps) and skips the groups a
    filter cannot match, so ``person_id = ?`` on a table stored in person order reads one
    row group; rows appended batch by batch (an ingest) spread every person over every
    group. :meth:`reorder_table` puts the rows back in order, :meth:`out_of_order_rows`
    says how many have drifted. The content never changes (same rows, same values), so
    data versions do not move: results cached from the table stay right.
    """

    @final
    def out_of_order_rows(self, table: str, column: str) -> tuple[int, int]:
        """(rows stored out of ``column`` order, rows stored), as the zone maps see them
        (rows stored: deleted rows count until a checkpoint drops them).

        Row groups are walked in storage order; a group whose smallest value is below the
        largest of the in-order groups before it is out of order (a lookup by ``column``
        has to read it whatever the value), and so are all its rows.
        """
        with self._step(f"row order of {table}"):  # type: ignore[attr-defined]
            groups = self._row_group_ranges(table, column)
        frontier, late, total = None, 0, 0
        for low, high, rows in groups:
            total += rows
            if low is None or high is None:
                continue  # only nulls: no lookup by value reads it
            if frontier is not None and low < frontier:
                late += rows
            else:
                frontier = high
        return late, total

    @final
    def reorder_table(self, table: str, by: Sequence[str]) -> int:
        """Rewrite ``table`` with its rows in ``by`` order, in one transaction; return the
        row count. Rows, values and the table's definition stay as they were. This
        process's writes that may touch the table wait for it (and it for them), up to
        :meth:`~medlake.engine.base.Engine.wait_for_rewrites`; past that
        :class:`~medlake.errors.LakeBusyError`."""
        if not by:
            raise ValueError("reorder_table needs at least one column to order by")
        self._refuse_if_guarded(f"reorder {table}")  # type: ignore[attr-defined]
        # Writes of this process that may touch the table wait until the rewrite has
        # committed, instead of failing on the conflict (medlake.engine.rewrite_gate).
        with (
            self._rewrite_hold(table),  # type: ignore[attr-defined]
            self._step(f"reorder {table}") as step,  # type: ignore[attr-defined]
        ):
            rows = self._reorder_table(table, tuple(by))
            step.detail = f"{rows} rows"
        return rows

    @abc.abstractmethod
    def _row_group_ranges(
        self, table: str, column: str
    ) -> list[tuple[Any | None, Any | None, int]]:
        """(min, max, rows) of ``column`` per row group, in storage order."""

    @abc.abstractmethod
    def _reorder_table(self, table: str, by: tuple[str, ...]) -> int: ...


class SupportsSideDatabases(abc.ABC):
    """Capability mixin: a database file of its own attached beside the lake, for data
    derived from the lake that is rebuilt from it (patient 360's serving copy).

    The side database is not part of the lake: its tables are not listed with the lake's,
    its file is not the lake's file (backups, the mirror and the schema never see it),
    and it may be deleted at any time. The engine's queries (:meth:`Engine.run_prepared`,
    :meth:`Engine.run_sql` with a query) read its tables as ``<alias>.<table>`` beside
    the lake's, in one statement. Writes to it go through :meth:`side_write`, which
    refuses a statement that writes anything but a side database's table; they are not
    lake writes: they move no data version (a copy built from the lake would otherwise
    make itself stale), wait for no rewrite and are not refused while the workspace is
    frozen read-only.
    """

    @abc.abstractmethod
    def attach_side(self, path: Path, alias: str) -> None:
        """Attach the database file ``path`` (created when missing) as ``alias``, for
        every engine on this lake in this process; nothing if it already is."""

    @abc.abstractmethod
    def detach_side(self, alias: str) -> None:
        """Detach ``alias`` (nothing if it is not attached)."""

    @abc.abstractmethod
    def side_attached(self, alias: str) -> bool:
        """Whether ``alias`` is attached to this lake."""

    @final
    def side_write(self, statement: sge.Expression) -> None:
        """Run one statement that writes only tables of attached side databases."""
        targets = _written_tables(statement)
        if not targets or any(not t.catalog or not self.side_attached(t.catalog) for t in targets):
            raise TypeError(f"side_write writes side databases only, not: {statement.sql()}")
        sql = statement.sql(
            dialect=self.sql_dialect,  # type: ignore[attr-defined]
            unsupported_level=ErrorLevel.RAISE,
        )
        with self._step("side write", statement=sql):  # type: ignore[attr-defined]
            self._side_write(sql)

    @abc.abstractmethod
    def _side_write(self, sql: str) -> None: ...


def _written_tables(statement: sge.Expression) -> list[sge.Table]:
    """The tables a DDL or DML statement writes (empty: not one medlake knows)."""
    if isinstance(statement, (sge.Create, sge.Insert, sge.Delete, sge.Drop, sge.Alter)):
        target = statement.this
        if isinstance(target, sge.Schema):
            target = target.this
        return [target] if isinstance(target, sge.Table) else []
    return []

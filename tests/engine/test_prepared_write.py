"""Prepared writes: INSERT, UPDATE and DELETE with bound values, counted, guarded, versioned.

``Engine.run_prepared_write`` is how the audit trail appends (one multi-row ``INSERT`` and
a compare-and-set ``UPDATE`` of its head per commit), so the count it returns must be the
rows really changed (the compare-and-set relies on it), values must be bound (never
spliced into the text), a frozen workspace must refuse it like every other write, and it
must move the data version of the tables it writes (cached results depend on that).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest
import sqlglot.expressions as sge

from medlake.engine import ColumnSpec, TableSpec
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.engine.prepared import PreparedQuery, PreparedWrite
from medlake.errors import EngineError, WorkspaceFrozenError

NOTES = TableSpec(
    name="notes",
    group="test",
    columns=(
        ColumnSpec("note_id", "integer", required=True),
        ColumnSpec("body", "varchar(200)"),
    ),
)
P = sge.Placeholder

INSERT_TWO = PreparedWrite(
    sge.insert(sge.values([(P(), P()), (P(), P())]), "notes", columns=["note_id", "body"])
)
SET_BODY = PreparedWrite(sge.update("notes", {"body": P()}, where=sge.column("note_id").eq(P())))
DELETE_BELOW = PreparedWrite(
    sge.delete("notes", where=sge.LT(this=sge.column("note_id"), expression=P()))
)


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[DuckDBEngine]:
    with DuckDBEngine(tmp_path / "lake.duckdb") as engine:
        engine.create_schema([NOTES])
        yield engine


def _rows(engine: DuckDBEngine) -> list[tuple[int, str | None]]:
    table = engine.execute(engine.table("notes").order_by("note_id"))
    return list(zip(table.column("note_id").to_pylist(), table.column("body").to_pylist(),
                    strict=True))  # fmt: skip


def test_counts_are_the_rows_changed(engine: DuckDBEngine) -> None:
    quote = "O'Brien; DROP TABLE notes; --"
    assert engine.run_prepared_write(INSERT_TWO, [1, "a", 2, quote]) == 2
    assert engine.run_prepared_write(INSERT_TWO, [3, None, 4, "d"]) == 2
    assert _rows(engine) == [(1, "a"), (2, quote), (3, None), (4, "d")]  # bound, not spliced
    assert engine.run_prepared_write(SET_BODY, ["b", 2]) == 1
    assert engine.run_prepared_write(SET_BODY, ["x", 99]) == 0  # no such row: nothing changed
    assert engine.run_prepared_write(DELETE_BELOW, [3]) == 2
    assert _rows(engine) == [(3, None), (4, "d")]


def _insert_then_fail(engine: DuckDBEngine) -> None:
    with engine.transaction():
        engine.run_prepared_write(INSERT_TWO, [1, "a", 2, "b"])
        raise RuntimeError("the work failed")


def test_a_prepared_write_commits_and_rolls_back_with_the_transaction(
    engine: DuckDBEngine,
) -> None:
    with pytest.raises(RuntimeError, match="work failed"):
        _insert_then_fail(engine)
    assert _rows(engine) == []
    with engine.transaction():
        engine.run_prepared_write(INSERT_TWO, [1, "a", 2, "b"])
    assert _rows(engine) == [(1, "a"), (2, "b")]


def test_a_frozen_lake_refuses_it_unless_exempted(engine: DuckDBEngine) -> None:
    engine.guard_writes(lambda: "frozen for the test")
    with pytest.raises(WorkspaceFrozenError, match="notes"):
        engine.run_prepared_write(INSERT_TWO, [1, "a", 2, "b"])
    assert _rows(engine) == []
    with engine.writes_while_frozen():  # how the audit trail still records the alert
        assert engine.run_prepared_write(INSERT_TWO, [1, "a", 2, "b"]) == 2


def test_it_moves_the_data_version_of_the_tables_it_writes(engine: DuckDBEngine) -> None:
    engine.load_arrow("notes", pa.table({"note_id": [1], "body": ["a"]}))
    before = engine.data_version(["notes"])
    engine.run_prepared_write(SET_BODY, ["b", 1])
    after = engine.data_version(["notes"])
    assert after != before
    with engine.transaction():
        engine.run_prepared_write(SET_BODY, ["c", 1])
        assert engine.data_version(["notes"]) == after  # moves once the transaction ends
    assert engine.data_version(["notes"]) != after


def test_wrong_parameters_and_non_writes_are_refused(engine: DuckDBEngine) -> None:
    with pytest.raises(EngineError, match="takes 4 parameters, not 2"):
        engine.run_prepared_write(INSERT_TWO, [1, "a"])
    with pytest.raises(TypeError, match="INSERT, UPDATE or DELETE"):
        PreparedWrite(sge.select("1"))  # type: ignore[arg-type]
    assert INSERT_TWO.tables == {"notes"}


def test_prepared_rows_are_the_values_the_arrow_path_gives(engine: DuckDBEngine) -> None:
    # patient 360 reads its rows as dictionaries straight from the backend; every type it
    # meets must come out as run_prepared(...).to_pylist() gives it
    engine.run_sql(
        "CREATE TABLE kinds (id BIGINT, d DATE, ts TIMESTAMP, amount DECIMAL(10, 3), "
        "x DOUBLE, s VARCHAR, flag BOOLEAN)"
    )
    engine.run_sql(
        "INSERT INTO kinds VALUES (1, DATE '2024-02-29', TIMESTAMP '2024-02-29 10:11:12.5', "
        "12.345, 1.5, '患者', true), (2, NULL, NULL, NULL, NULL, NULL, NULL)"
    )
    query = PreparedQuery(
        sge.select("*").from_("kinds").where(sge.GTE(this=sge.column("id"), expression=P()))
        .order_by("id")
    )  # fmt: skip
    rows = engine.run_prepared_rows(query, [1])
    assert rows == engine.run_prepared(query, [1]).to_pylist()
    assert [row["id"] for row in rows] == [1, 2]
    assert engine.run_prepared_rows(query, [3]) == []
    with pytest.raises(EngineError, match="takes 1 parameters, not 0"):
        engine.run_prepared_rows(query, [])


def test_a_write_conflict_is_its_own_error_and_a_409_problem(
    engine: DuckDBEngine, tmp_path: Path
) -> None:
    """Two connections to one lake (a request beside the person-order rewrite): the
    second writer of a row another open transaction changed gets WriteConflictError
    (safe to retry, a 409 through the API), not a bare engine failure; other errors are
    not taken for conflicts."""
    from medlake.errors import WriteConflictError
    from medlake.server.problems import status_for

    engine.run_prepared_write(INSERT_TWO, [1, "a", 2, "b"])
    with DuckDBEngine(tmp_path / "lake.duckdb") as other, engine.transaction():
        engine.run_prepared_write(SET_BODY, ["first", 1])
        with pytest.raises(WriteConflictError) as raised:
            other.run_prepared_write(SET_BODY, ["second", 1])
        assert other.run_prepared_write(SET_BODY, ["elsewhere", 2]) == 1  # another row: fine
    assert status_for(raised.value) == 409
    assert raised.value.exit_code == 75
    assert _rows(engine) == [(1, "first"), (2, "elsewhere")]
    with pytest.raises(EngineError) as failed:
        engine.run_sql("SELECT * FROM no_such_table")
    assert not isinstance(failed.value, WriteConflictError)
    assert status_for(failed.value) == 500

"""Prepared queries on DuckDB: integer-valued texts are PREPAREd once per connection and
run with EXECUTE; their rows must stay exactly what the lake holds.

Patient 360 runs its statements this way (a person id, concept ids), so the plan DuckDB
keeps must never outlive the table it reads: rows added, changed, deleted, the table put
in person order, replaced with other rows or other types, altered, dropped. Each check
compares with pandas over the whole table read afresh. Values that are not plain
integers are still bound by DuckDB, never written into the text.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import sqlglot.expressions as sge

from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.engine.prepared import PreparedQuery
from medlake.errors import EngineError

P = sge.Placeholder
# The person's rows, as patient 360 asks for them: one ``?`` per branch of a UNION ALL.
BY_PERSON = PreparedQuery(
    sge.union(
        sge.select(sge.convert(0).as_("branch"), "person_id", "v").from_("a")
        .where(sge.column("person_id").eq(P())),
        sge.select(sge.convert(1).as_("branch"), "person_id", "v").from_("b")
        .where(sge.column("person_id").eq(P())),
        distinct=False,
    )
)  # fmt: skip
BY_LABEL = PreparedQuery(sge.select("person_id", "v").from_("a").where(sge.column("s").eq(P())))


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[DuckDBEngine]:
    with DuckDBEngine(tmp_path / "lake.duckdb") as engine:
        for table, rows in (("a", 3), ("b", 2)):
            engine.run_sql(
                f"CREATE TABLE {table} AS SELECT (i % 50)::BIGINT AS person_id, "
                f"i * 10 + {rows} AS v, 'p' || (i % 50) AS s FROM range(5000) t(i) "
                "ORDER BY random()"
            )
        yield engine


def _expected(engine: DuckDBEngine, person: int) -> list[tuple[int, int, object]]:
    out = []
    for branch, table in enumerate(("a", "b")):
        frame: pd.DataFrame = engine.execute(engine.table(table)).to_pandas()
        frame = frame[frame.person_id == person]
        out += [(branch, int(p), v) for p, v in zip(frame.person_id, frame.v, strict=True)]
    return sorted(out, key=repr)


def _got(engine: DuckDBEngine, person: int) -> list[tuple[int, int, object]]:
    rows = engine.run_prepared_rows(BY_PERSON, [person, person])
    assert rows == engine.run_prepared(BY_PERSON, [person, person]).to_pylist()
    return sorted(((r["branch"], r["person_id"], r["v"]) for r in rows), key=repr)


def test_rows_follow_every_change_to_the_tables(engine: DuckDBEngine) -> None:
    for person in (0, 7, 49, 50):
        assert _got(engine, person) == _expected(engine, person)
    engine.run_sql("INSERT INTO a VALUES (7, -1, 'p7'), (50, -2, 'p50')")
    engine.run_sql("UPDATE b SET person_id = 7 WHERE person_id = 8")  # a merge moves rows
    engine.run_sql("DELETE FROM a WHERE person_id = 49")
    for person in (7, 8, 49, 50):
        assert _got(engine, person) == _expected(engine, person)
    engine.reorder_table("a", ("person_id",))
    assert _got(engine, 7) == _expected(engine, 7)
    with engine.transaction():  # its own uncommitted rows are seen inside it
        engine.run_sql("INSERT INTO b VALUES (7, -3, 'p7')")
        assert _got(engine, 7) == _expected(engine, 7)
    assert (1, 7, -3) in _got(engine, 7)
    engine.run_sql("CREATE OR REPLACE TABLE b AS SELECT 7::BIGINT AS person_id, 2.5 AS v")
    got = _got(engine, 7)  # another type: bound again (the union is now DOUBLE)
    assert got == _expected(engine, 7)
    assert (1, 7, 2.5) in got
    engine.run_sql("ALTER TABLE a ADD COLUMN w INTEGER")
    assert _got(engine, 7) == _expected(engine, 7)


def test_a_dropped_table_is_an_error_until_it_is_back(engine: DuckDBEngine) -> None:
    assert _got(engine, 3) == _expected(engine, 3)
    engine.run_sql("DROP TABLE b")
    with pytest.raises(EngineError, match="run prepared failed"):
        engine.run_prepared_rows(BY_PERSON, [3, 3])
    engine.run_sql("CREATE TABLE b (person_id BIGINT, v BIGINT)")
    engine.run_sql("INSERT INTO b VALUES (3, 30)")
    assert _got(engine, 3) == _expected(engine, 3)


def test_values_that_are_not_integers_are_bound(engine: DuckDBEngine) -> None:
    rows = engine.run_prepared_rows(BY_LABEL, ["p5"])
    frame = engine.execute(engine.table("a")).to_pandas()
    assert sorted(r["v"] for r in rows) == sorted(frame[frame.s == "p5"].v)
    hostile = "p5'); DROP TABLE a; --"
    assert engine.run_prepared_rows(BY_LABEL, [hostile]) == []
    assert engine.has_table("a")
    # a bool is an int to Python but not printed as one: bound, and still right
    flagged = PreparedQuery(sge.select(sge.Not(this=P()).as_("f")))
    assert engine.run_prepared_rows(flagged, [True]) == [{"f": False}]


def test_a_statement_first_prepared_in_a_rolled_back_transaction_still_runs(
    engine: DuckDBEngine,
) -> None:
    seen = []

    def rolled_back() -> None:
        with engine.transaction():
            engine.run_sql("INSERT INTO a VALUES (11, -11, 'p11')")
            seen.extend(_got(engine, 11))  # prepared here, inside the transaction
            raise RuntimeError("roll back")

    with pytest.raises(RuntimeError):
        rolled_back()
    assert (0, 11, -11) in seen
    assert _got(engine, 11) == _expected(engine, 11)
    assert (0, 11, -11) not in _got(engine, 11)

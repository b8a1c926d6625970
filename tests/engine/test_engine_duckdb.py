"""What only the DuckDB engine promises: transactions, a lake file, atomic loads, logs."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.engine import ColumnSpec, SupportsTransactions, TableSpec
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.errors import EngineError

SAMPLE = TableSpec(
    name="sample",
    group="test",
    columns=(
        ColumnSpec("sample_id", "integer", required=True),
        ColumnSpec("tissue", "varchar(20)"),
    ),
)


def rows(n: int, start: int = 0) -> pa.Table:
    return pa.table({"sample_id": list(range(start, start + n)), "tissue": ["blood"] * n})


@pytest.fixture
def engine() -> Iterator[DuckDBEngine]:
    with DuckDBEngine() as engine:
        engine.create_schema([SAMPLE])
        yield engine


def test_duckdb_supports_transactions(engine: DuckDBEngine) -> None:
    assert isinstance(engine, SupportsTransactions)
    assert engine.name == "duckdb"


def test_transaction_commits_its_work(engine: DuckDBEngine) -> None:
    with engine.transaction():
        engine.load_arrow("sample", rows(3))
        engine.run_sql("CREATE TABLE batch_log (batch_id BIGINT)")
        assert engine.count("sample") == 3  # visible inside the transaction
    assert engine.count("sample") == 3
    assert engine.has_table("batch_log")


def ingest_that_fails(engine: DuckDBEngine) -> None:
    with engine.transaction():
        engine.load_arrow("sample", rows(5, start=100))
        engine.delete_where("sample", engine.table("sample").sample_id < 1)
        engine.run_sql("CREATE TABLE batch_log (batch_id BIGINT)")
        raise RuntimeError("mapping failed")


def test_transaction_rolls_back_everything_on_an_exception(engine: DuckDBEngine) -> None:
    engine.load_arrow("sample", rows(2))
    with pytest.raises(RuntimeError, match="mapping failed"):
        ingest_that_fails(engine)
    assert engine.count("sample") == 2
    assert not engine.has_table("batch_log")


def outer_block_catching_a_failed_inner_one(engine: DuckDBEngine) -> None:
    with engine.transaction():
        engine.load_arrow("sample", rows(1))
        with contextlib.suppress(ValueError), engine.transaction():
            engine.load_arrow("sample", rows(1, start=1))
            raise ValueError("inner")


def test_a_failed_nested_block_rolls_back_the_outer_transaction(engine: DuckDBEngine) -> None:
    with pytest.raises(EngineError, match="nested"):
        outer_block_catching_a_failed_inner_one(engine)
    assert engine.count("sample") == 0


def test_a_stream_inside_a_transaction_sees_its_uncommitted_rows(engine: DuckDBEngine) -> None:
    with engine.transaction():
        engine.load_arrow("sample", rows(7))
        streamed = engine.to_batches(engine.table("sample"), batch_size=4).read_all()
        assert streamed.num_rows == 7


def test_a_load_that_fails_midway_loads_nothing(engine: DuckDBEngine) -> None:
    good = rows(1000).to_batches(max_chunksize=100)
    bad = pa.record_batch({"sample_id": pa.array(["not a number"])})
    with pytest.raises(EngineError, match="'sample_id'"):
        engine.load_arrow("sample", iter([*good, bad]))
    assert engine.count("sample") == 0


def test_the_lake_file_keeps_its_tables_across_openings(tmp_path: Path) -> None:
    path = tmp_path / "lake.duckdb"
    with DuckDBEngine(path, threads=1, memory_limit="256MB") as engine:
        engine.create_schema([SAMPLE])
        engine.load_arrow("sample", rows(4))
    with DuckDBEngine(path) as engine:
        assert engine.create_schema([SAMPLE]) == []
        assert engine.count("sample") == 4


def test_a_closed_engine_says_so(engine: DuckDBEngine) -> None:
    engine.close()
    engine.close()  # idempotent
    with pytest.raises(EngineError, match="closed"):
        engine.count("sample")


def test_required_columns_are_not_null_in_the_database(engine: DuckDBEngine) -> None:
    with pytest.raises(EngineError) as caught:
        engine.run_sql("INSERT INTO sample (tissue) VALUES ('blood')")
    assert "NOT NULL" in str(caught.value)
    assert caught.value.statement is not None
    assert caught.value.statement.startswith("INSERT INTO sample")


def test_operations_are_timed_in_debug_logs(
    engine: DuckDBEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG, logger="medlake"):
        engine.load_arrow("sample", rows(3))
    assert any(
        "load into sample (3 rows) in" in record.getMessage() and record.getMessage().endswith("ms")
        for record in caplog.records
    )


def test_a_million_rows_stream_in_without_reading_ahead(engine: DuckDBEngine) -> None:
    n, chunk = 1_000_000, 50_000
    produced = 0

    def batches() -> Iterator[pa.RecordBatch]:
        nonlocal produced
        for start in range(0, n, chunk):
            produced += chunk
            yield pa.record_batch({"sample_id": pa.array(range(start, start + chunk), pa.int64())})

    assert engine.load_arrow("sample", batches()) == n
    assert produced == n
    assert engine.scalar(engine.table("sample").sample_id.sum()) == n * (n - 1) // 2

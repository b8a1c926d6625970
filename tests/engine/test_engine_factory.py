"""Opening engines from settings, lazily, and what Spark cannot do."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.config import EngineSettings, Settings, Workspace
from medlake.engine import (
    ColumnSpec,
    Engine,
    SupportsTransactions,
    TableSpec,
    open_engine,
    open_workspace_engine,
)
from medlake.errors import EngineCapabilityError, EngineError


def test_importing_the_engine_loads_no_driver() -> None:
    code = (
        "import sys, medlake.engine, medlake.engine.base, medlake.engine.factory\n"
        "print(sorted(m for m in ('duckdb', 'pyspark', 'pymysql') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert result.stdout.strip() == "[]"


def test_duckdb_lake_path_is_relative_to_the_workspace(tmp_path: Path) -> None:
    settings = Settings(engine=EngineSettings(path="db/x.duckdb"))
    workspace = Workspace(root=tmp_path, settings=settings)
    (tmp_path / "db").mkdir()
    with open_workspace_engine(workspace) as engine:
        assert engine.name == "duckdb"
        engine.run_sql("CREATE TABLE t (x BIGINT)")
    assert (tmp_path / "db" / "x.duckdb").is_file()


def test_in_memory_duckdb_from_settings(tmp_path: Path) -> None:
    with open_engine(EngineSettings(path=":memory:", threads=1), tmp_path) as engine:
        assert engine.list_tables() == []
    assert list(tmp_path.iterdir()) == []


def test_an_engine_kind_without_a_backend_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EngineCapabilityError, match="mysql"):
        open_engine(EngineSettings(kind="mysql"), tmp_path)


@pytest.mark.spark
def test_spark_has_no_transactions(spark_engine: Engine) -> None:
    assert not isinstance(spark_engine, SupportsTransactions)
    with pytest.raises(EngineCapabilityError, match="spark engine has no transactions"):
        spark_engine.transaction().__enter__()


@pytest.mark.spark
def test_spark_registers_table_directories_already_in_its_warehouse(
    spark_engine: Engine,
) -> None:
    # What a new session sees after a restart: Parquet directories, no catalog entry.
    import pyarrow.parquet as pq

    directory = spark_engine.warehouse_dir / "restored"  # type: ignore[attr-defined]
    directory.mkdir()
    pq.write_table(pa.table({"x": [1, 2, 3]}), directory / "part-0.parquet")
    try:
        spark_engine._attach_warehouse_tables()  # type: ignore[attr-defined]
        assert spark_engine.has_table("restored")
        assert spark_engine.count("restored") == 3
    finally:
        spark_engine.drop_table("restored")
    assert not directory.exists()


@pytest.mark.spark
def test_spark_checks_required_columns_it_cannot_declare(spark_engine: Engine) -> None:
    spec = TableSpec("strict", (ColumnSpec("id", "integer", required=True),), group="test")
    spark_engine.create_schema([spec])
    try:
        with pytest.raises(EngineError, match="required column 'id' has 1 null"):
            spark_engine.load_arrow("strict", pa.table({"id": pa.array([None], pa.int64())}))
    finally:
        spark_engine.drop_table("strict")

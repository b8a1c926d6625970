"""Fixtures every test package may use: ``backend``, one lake engine per installed backend.

A test taking ``backend`` runs once on DuckDB (in memory) and once on Spark (marked
``spark``; deselect with ``-m 'not spark'``). Spark takes ~10 s to start, so one
session serves the whole run; the tables a test creates on it are dropped afterwards.
"""

from __future__ import annotations

import importlib.util
import shutil
from collections.abc import Iterator

import pytest

from medlake.engine import Engine


@pytest.fixture(scope="session")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        pytest.skip("Spark needs the 'spark' extra and Java 17+")
    from medlake.engine.backends.spark import SparkEngine

    engine = SparkEngine("local[2]", warehouse_dir=tmp_path_factory.mktemp("spark-warehouse"))
    yield engine
    engine.close()


@pytest.fixture(params=["duckdb", pytest.param("spark", marks=pytest.mark.spark)])
def backend(request: pytest.FixtureRequest) -> Iterator[Engine]:
    if request.param == "duckdb":
        from medlake.engine.backends.duckdb import DuckDBEngine

        with DuckDBEngine() as engine:
            yield engine
        return
    engine = request.getfixturevalue("spark_engine")
    before = set(engine.list_tables())
    yield engine
    for name in set(engine.list_tables()) - before:
        engine.drop_table(name)

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


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Keep every Spark test on one xdist worker, so one Spark session serves them all."""
    for item in items:
        if item.get_closest_marker("spark"):
            item.add_marker(pytest.mark.xdist_group("spark"))


@pytest.fixture(scope="session")
def spark_engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    if importlib.util.find_spec("pyspark") is None or shutil.which("java") is None:
        # `make test` installs both; a skip here would hide a broken set-up, so fail.
        # Deselect the Spark tests explicitly with -m "not spark" instead.
        pytest.fail("Spark tests need the 'spark' extra and Java 17+ (make test installs both)")
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

"""One run of every check on the shared hospital lake, and its tables as pandas frames."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pandas as pd
import pyarrow as pa
import pytest

from medlake.config import open_workspace
from medlake.engine import Engine
from medlake.quality import CheckResult, run_checks
from medlake.service.quality import checks_for
from medlake.service.workspace import open_lake


@pytest.fixture(scope="module")
def lake_engine(hospital_lake) -> Iterator[Engine]:  # type: ignore[no-untyped-def]
    # Checks only read; the shared lake is not changed.
    with open_lake(open_workspace(hospital_lake.workspace)) as engine:
        yield engine


@pytest.fixture(scope="module")
def results(lake_engine: Engine, hospital_lake) -> dict[str, CheckResult]:  # type: ignore[no-untyped-def]
    checks = checks_for(open_workspace(hospital_lake.workspace))
    return {r.check.check_id: r for r in run_checks(lake_engine, checks)}


@pytest.fixture(scope="module")
def frame(lake_engine: Engine) -> Callable[[str], pd.DataFrame]:
    cache: dict[str, pd.DataFrame] = {}

    def read(table: str) -> pd.DataFrame:
        if table not in cache:
            # Nullable integers: 64-bit ids must not pass through float64 on the way.
            arrow = lake_engine.execute(lake_engine.table(table))
            cache[table] = arrow.to_pandas(types_mapper={pa.int64(): pd.Int64Dtype()}.get)
        return cache[table]

    return read

"""The one door to storage.

Every read and write of the lake goes through an :class:`Engine`, a thin layer over an
Ibis backend that opens the workspace's engine, creates the schema, loads Arrow data,
runs transactions and owns logging, timing and error wrapping. Backend drivers
(DuckDB, PySpark, PyMySQL) are imported only under ``medlake.engine.backends`` and load
lazily, so ``import medlake.engine`` stays cheap.
"""

from medlake.engine.base import Engine
from medlake.engine.capabilities import (
    SupportsArrowInputs,
    SupportsReordering,
    SupportsScratchSession,
    SupportsSideDatabases,
    SupportsSplink,
    SupportsTransactions,
)
from medlake.engine.factory import open_engine, open_workspace_engine
from medlake.engine.spec import ColumnSpec, TableSpec, ibis_type

__all__ = [
    "ColumnSpec",
    "Engine",
    "SupportsArrowInputs",
    "SupportsReordering",
    "SupportsScratchSession",
    "SupportsSideDatabases",
    "SupportsSplink",
    "SupportsTransactions",
    "TableSpec",
    "ibis_type",
    "open_engine",
    "open_workspace_engine",
]

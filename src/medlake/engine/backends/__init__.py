"""Engine backends: the only modules that import a database driver (DuckDB, PySpark).

Each is imported lazily by :func:`medlake.engine.open_engine`, so ``import
medlake.engine`` loads no driver and a missing optional extra fails only when that
engine is asked for.
"""

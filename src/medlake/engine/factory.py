"""Opening the engine a workspace's settings name.

Backends are imported here, inside the functions, so ``import medlake.engine`` loads
neither DuckDB nor PySpark, and a workspace on DuckDB never needs the ``spark`` extra.
"""

from __future__ import annotations

from pathlib import Path

from medlake.config import EngineSettings, Workspace
from medlake.engine.base import Engine
from medlake.errors import EngineCapabilityError


def open_engine(settings: EngineSettings, root: Path) -> Engine:
    """Open the engine ``settings`` describe; relative paths are relative to ``root``."""
    if settings.kind == "duckdb":
        from medlake.engine.backends.duckdb import MEMORY, DuckDBEngine

        path = MEMORY if settings.path == MEMORY else _resolve(root, settings.path)
        return DuckDBEngine(path, threads=settings.threads, memory_limit=settings.memory_limit)
    if settings.kind == "spark":
        from medlake.engine.backends.spark import SparkEngine

        return SparkEngine(
            master=settings.spark_master,
            warehouse_dir=_resolve(root, settings.spark_warehouse),
        )
    raise EngineCapabilityError(
        f"the {settings.kind} engine is not available in this version of medlake; "
        "use kind = 'duckdb' or 'spark' in medlake.toml",
        engine=settings.kind,
    )


def open_workspace_engine(workspace: Workspace) -> Engine:
    """Open the lake of ``workspace`` on the engine its ``medlake.toml`` names.

    Every write through it is refused while the workspace is frozen read-only (the
    ransomware watch): one check that every writer passes, whichever service it is.
    Writes wait for a table's rewrite up to ``[layout] write_wait_seconds``.
    """
    engine = open_engine(workspace.settings.engine, workspace.root)
    engine.guard_writes(workspace.frozen_message)
    # A write that meets a table's person-order rewrite waits for it this long.
    engine.wait_for_rewrites(workspace.settings.layout.write_wait_seconds)
    return engine


def _resolve(root: Path, relative: str) -> Path:
    path = Path(relative).expanduser()
    return path if path.is_absolute() else root / path

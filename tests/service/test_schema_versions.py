"""Opening a lake checks its schema version; upgrades are explicit and recorded."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pyarrow as pa
import pytest

from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.errors import SchemaVersionError
from medlake.schema import SCHEMA_VERSION
from medlake.service.workspace import (
    VERSION_TABLE,
    current_schema_version,
    init_workspace,
    open_lake,
    upgrade_schema,
)


@pytest.fixture
def workspace_dir(tmp_path: Path) -> Path:
    init_workspace(tmp_path / "ws", demo_vocabulary=False)
    return tmp_path / "ws"


def test_new_lake_is_at_current_version(workspace_dir: Path) -> None:
    with open_lake(open_workspace(workspace_dir)) as engine:
        assert current_schema_version(engine) == SCHEMA_VERSION


def test_lake_without_version_is_refused_until_upgraded(workspace_dir: Path) -> None:
    workspace = open_workspace(workspace_dir)
    with open_workspace_engine(workspace) as engine:
        engine.drop_table(VERSION_TABLE)
    with pytest.raises(SchemaVersionError, match="medlake schema upgrade"):
        open_lake(workspace)
    before, after, applied = upgrade_schema(workspace_dir)
    assert before is None
    assert after == SCHEMA_VERSION
    assert [m.version for m in applied] == list(range(1, SCHEMA_VERSION + 1))
    with open_lake(workspace) as engine:
        assert current_schema_version(engine) == SCHEMA_VERSION


def test_lake_from_a_newer_medlake_is_refused(workspace_dir: Path) -> None:
    workspace = open_workspace(workspace_dir)
    with open_workspace_engine(workspace) as engine:
        engine.load_arrow(
            VERSION_TABLE,
            pa.table(
                {
                    "version": [SCHEMA_VERSION + 1],
                    "applied_at": [dt.datetime(2030, 1, 1)],
                    "description": ["from the future"],
                    "medlake_version": ["99.0"],
                }
            ),
        )
    with pytest.raises(SchemaVersionError, match="newer than this"):
        open_lake(workspace)
    with pytest.raises(SchemaVersionError):
        upgrade_schema(workspace_dir)


def test_a_version_1_lake_upgrades_to_the_shape_of_a_new_lake(tmp_path: Path) -> None:
    """Rebuild the v1 shape (tables and columns migration 2 adds removed), upgrade it, and
    compare every table's columns and types with a lake created at the current version."""
    from medlake.engine import TableSpec
    from medlake.schema import ALL_TABLES
    from medlake.schema.migrations import MIGRATIONS, CreateTables

    later = [step for migration in MIGRATIONS[1:] for step in migration.steps]
    added_tables = {t.name for step in later if isinstance(step, CreateTables)
                    for t in step.tables}  # fmt: skip
    added_columns = {(step.this.name, action.this.name) for step in later
                     if not isinstance(step, CreateTables)
                     for action in step.args["actions"]}  # fmt: skip
    assert added_tables
    assert ("audit_event", "outcome") in added_columns
    v1 = [
        TableSpec(name=t.name, group=t.group, description=t.description,
                  restricted=t.restricted,
                  columns=tuple(c for c in t.columns if (t.name, c.name) not in added_columns))
        for t in ALL_TABLES if t.name not in added_tables
    ]  # fmt: skip
    old = tmp_path / "old"
    init_workspace(old, demo_vocabulary=False)
    workspace = open_workspace(old)
    with open_workspace_engine(workspace) as engine:
        for name in engine.list_tables():
            engine.drop_table(name)
        engine.create_schema(v1)
        engine.load_arrow(VERSION_TABLE, pa.table({
            "version": [1], "applied_at": [dt.datetime(2026, 1, 1)],
            "description": ["v1"], "medlake_version": ["0.1.0"]}))  # fmt: skip
    with pytest.raises(SchemaVersionError, match="medlake schema upgrade"):
        open_lake(workspace)
    before, after, applied = upgrade_schema(old)
    assert (before, after, [m.version for m in applied]) == (
        1, SCHEMA_VERSION, list(range(2, SCHEMA_VERSION + 1)))  # fmt: skip
    new = tmp_path / "new"
    init_workspace(new, demo_vocabulary=False)

    def shape(root: Path) -> dict[str, dict[str, str]]:
        with open_lake(open_workspace(root)) as engine:
            return {name: {c: str(t) for c, t in engine.table(name).schema().items()}
                    for name in sorted(engine.list_tables())}  # fmt: skip

    assert shape(old) == shape(new)

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

"""Workspaces: create one, open its lake at the right schema version, upgrade, summarize.

The lake's schema version is recorded in the ``schema_version`` table; opening a lake
whose version differs from this medlake's fails with a clear message, and upgrades are
explicit (:func:`upgrade_schema`, ``medlake schema upgrade``), applying the ordered
migrations of :mod:`medlake.schema.migrations`.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import ibis
import pyarrow as pa
import sqlglot.expressions as sge

from medlake import __version__
from medlake.access import Permission, Role
from medlake.access import store as access_store
from medlake.access.context import login_name
from medlake.audit.journal import drain as drain_journal
from medlake.audit.journal import has_unmoved
from medlake.config import (
    SETTINGS_FILE,
    EngineSettings,
    Settings,
    Workspace,
    WorkspaceSection,
    open_workspace,
    write_settings,
)
from medlake.engine import Engine, TableSpec, open_workspace_engine
from medlake.errors import SchemaVersionError, UsageError, WorkspaceExistsError
from medlake.log import get_logger
from medlake.privacy import read_or_create_key
from medlake.schema import ALL_TABLES, SCHEMA_VERSION, table_spec
from medlake.schema.migrations import Migration, pending_migrations
from medlake.vocab import load_demo_vocabulary

logger = get_logger(__name__)

VERSION_TABLE = "schema_version"


def init_workspace(
    directory: Path,
    *,
    engine_kind: str = "duckdb",
    name: str | None = None,
    language: str = "en",
    demo_vocabulary: bool = True,
) -> Workspace:
    """Create a workspace in ``directory``: settings, folders, the lake at the current schema.

    ``directory`` may exist but must not already be a workspace. With
    ``demo_vocabulary`` the bundled demo vocabulary is loaded, so a new lake can be
    explored before the hospital's Athena vocabularies are loaded.
    """
    directory = directory.expanduser().resolve()
    if (directory / SETTINGS_FILE).exists():
        raise WorkspaceExistsError(f"{directory} is already a medlake workspace")
    if directory.exists() and not directory.is_dir():
        raise UsageError(f"{directory} exists and is not a directory")
    settings = Settings(
        workspace=WorkspaceSection(name=name or directory.name, language=language),  # type: ignore[arg-type]
        engine=EngineSettings(kind=engine_kind),  # type: ignore[arg-type]
    )
    directory.mkdir(parents=True, exist_ok=True)
    workspace = Workspace(root=directory, settings=settings)
    for folder in workspace.data_dirs():
        folder.mkdir(parents=True, exist_ok=True)
    write_settings(workspace.settings_file, settings)
    pseudonym_secret(workspace)
    with open_workspace_engine(workspace) as engine:
        upgrade_schema_on(engine)
        if demo_vocabulary:
            load_demo_vocabulary(engine)
        _first_admin(engine)
    logger.info("initialized workspace %s", directory)
    return workspace


def _first_admin(engine: Engine) -> None:
    """The login that creates a workspace becomes its first admin (medlake user add for more).

    Recorded in ``access_user`` (created by ``system:init``) rather than as an audit
    event, so a new workspace's trail starts empty; every later change is audited.
    """
    access_store.add_user(engine, login_name(), Role.ADMIN, created_by="system:init")


def pseudonym_secret(workspace: Workspace) -> bytes:
    """The workspace's pseudonym secret (``privacy.secret_file``), created with mode 0600
    on first use, so workspaces made before it existed get one too."""
    path = Path(workspace.settings.privacy.secret_file)
    return read_or_create_key(path if path.is_absolute() else workspace.root / path)


def current_schema_version(engine: Engine) -> int | None:
    """The lake's recorded schema version, or None for an empty lake."""
    if not engine.has_table(VERSION_TABLE):
        return None
    latest = engine.scalar(engine.table(VERSION_TABLE).version.max())
    return None if latest is None else int(latest)


def upgrade_schema_on(engine: Engine) -> list[Migration]:
    """Apply every pending migration in order, recording each; return those applied."""
    applied = []
    for migration in pending_migrations(current_schema_version(engine)):
        logger.info("applying schema migration %d: %s", migration.version, migration.description)
        for step in migration.steps:
            _apply_step(engine, step)
        _fill_data(engine, migration.version)
        engine.load_arrow(VERSION_TABLE, _version_row(migration))
        applied.append(migration)
    return applied


def _fill_data(engine: Engine, version: int) -> None:
    """Data a migration's new column needs on rows loaded before it (migrations are DDL)."""
    if version == 5:  # source_record.person_id, from the CDM rows
        from medlake.service.lake_layout import fill_provenance_persons

        fill_provenance_persons(engine)


def _apply_step(engine: Engine, step: object) -> None:
    if isinstance(step, sge.Alter):
        step = _columns_still_missing(engine, step)
        if step is None:
            return
    if isinstance(step, sge.Expression):
        engine.run_sql(step)
        return
    tables = getattr(step, "tables", step)
    if isinstance(tables, TableSpec):
        tables = (tables,)
    engine.create_schema(tuple(tables))  # type: ignore[arg-type]


def _columns_still_missing(engine: Engine, alter: sge.Alter) -> sge.Alter | None:
    """``ALTER TABLE ... ADD COLUMN IF NOT EXISTS`` reduced to the columns the table lacks.

    Not every engine knows ``IF NOT EXISTS`` on columns (Spark does not), and a lake
    created at this version already has them from its table specs: so look, and add only
    what is missing, with a plain ``ADD COLUMN``.
    """
    actions = alter.args.get("actions") or []
    if not all(isinstance(action, sge.ColumnDef) for action in actions):
        return alter
    existing = set(engine.table(alter.this.name).columns)
    missing = [action.copy() for action in actions if action.this.name not in existing]
    if not missing:
        return None
    for action in missing:
        action.set("exists", False)
    reduced = alter.copy()
    reduced.set("actions", missing)
    return reduced


def _version_row(migration: Migration) -> pa.Table:
    return pa.table(
        {
            "version": [migration.version],
            "applied_at": [dt.datetime.now(dt.UTC).replace(tzinfo=None)],
            "description": [migration.description],
            "medlake_version": [__version__],
        }
    )


def open_lake(workspace: Workspace) -> Engine:
    """Open the workspace's engine, refusing a lake at another schema version."""
    engine = open_workspace_engine(workspace)
    version = current_schema_version(engine)
    if version != SCHEMA_VERSION:
        engine.close()
        if version is None or version < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the lake in {workspace.root} is at schema version {version or 0}, this medlake "
                f"needs {SCHEMA_VERSION}: run 'medlake schema upgrade'"
            )
        raise SchemaVersionError(
            f"the lake in {workspace.root} is at schema version {version}, newer than this "
            f"medlake ({SCHEMA_VERSION}); upgrade medlake"
        )
    if has_unmoved(engine):
        # Audit events journaled by this process's server, or by one that died: in the
        # table before anyone reads the lake through this engine.
        try:
            drain_journal(engine)
        except BaseException:
            engine.close()
            raise
    return engine


def schema_versions(workspace_dir: Path | None) -> tuple[int | None, int, list[Migration]]:
    """(the lake's version, the version this medlake expects, migrations pending)."""
    workspace = open_workspace(workspace_dir)
    with open_workspace_engine(workspace) as engine:
        current = current_schema_version(engine)
        pending = [] if current and current > SCHEMA_VERSION else pending_migrations(current)
        return current, SCHEMA_VERSION, pending


def upgrade_schema(workspace_dir: Path | None) -> tuple[int | None, int, list[Migration]]:
    """Upgrade the workspace's lake; return (version before, version after, applied)."""
    workspace = open_workspace(workspace_dir)
    with open_workspace_engine(workspace) as engine:
        before = current_schema_version(engine)
        if before is not None and before > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"the lake is at schema version {before}, "
                f"newer than this medlake ({SCHEMA_VERSION})"
            )
        applied = upgrade_schema_on(engine)
        return before, current_schema_version(engine) or 0, applied


@dataclass(frozen=True)
class TableCount:
    name: str
    group: str
    rows: int


@dataclass(frozen=True)
class LakeSummary:
    """What a workspace holds: where, which engine, schema version and rows per table."""

    root: Path
    engine: str
    schema_version: int | None
    tables: tuple[TableCount, ...]

    @property
    def total_rows(self) -> int:
        return sum(table.rows for table in self.tables)

    def as_dict(self) -> dict[str, object]:
        return {
            "workspace": str(self.root),
            "engine": self.engine,
            "schema_version": self.schema_version,
            "tables": {table.name: table.rows for table in self.tables},
        }


def lake_summary(workspace_dir: Path | None) -> LakeSummary:
    """Row counts of every lake table, in schema order (users who may count)."""
    from medlake.service.policy import require  # the policy opens lakes with this module

    require(workspace_dir, Permission.COUNT)
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        present = set(engine.list_tables())
        counts = []
        for spec in ALL_TABLES:
            if spec.name in present:
                rows = int(engine.scalar(engine.table(spec.name).count()))
                counts.append(TableCount(spec.name, spec.group, rows))
        return LakeSummary(
            root=workspace.root,
            engine=engine.name,
            schema_version=current_schema_version(engine),
            tables=tuple(counts),
        )


def table_preview(workspace_dir: Path | None, name: str, limit: int = 10) -> pa.Table:
    """The first ``limit`` rows of a lake table: raw rows, so stewards; the read is audited."""
    from medlake.service.policy import record_read, require  # see lake_summary

    table_spec(name)
    require(workspace_dir, Permission.READ_IDENTIFIED)
    workspace = open_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        expr: ibis.Table = engine.table(name).limit(limit)
        rows = engine.execute(expr)
        persons = rows.column("person_id").to_pylist() if "person_id" in rows.column_names else []
        record_read(engine, "table", name, person_ids=[p for p in persons if p is not None])
        return rows

"""How a lake moves from one schema version to the next: ordered migrations, as data.

A lake records the migrations it has had in the ``schema_version`` table. This module
only says *what* each version changes; the service layer applies the steps through the
engine (``engine.create_schema(step.tables)`` for :class:`CreateTables`,
``engine.run_sql(step)`` for a SQLGlot expression) and records each version, so there
is no I/O here and the same migration runs on every backend (SQLGlot transpiles it).

Version 1 creates every table from its **current** :class:`~medlake.engine.TableSpec`,
so a new lake starts with the latest shape of every table and then replays the later
migrations. Hence the rules for a migration after 1, checked by
:func:`validate_migrations`:

- it is harmless on a lake that already has its change: ``CREATE ... IF NOT EXISTS``,
  ``DROP ... IF EXISTS``, ``ALTER TABLE t ADD COLUMN IF NOT EXISTS c ...``, or a new
  :class:`CreateTables` (the engine creates only the tables that are missing);
- the table definitions agree with it: a column it adds is in its table's current spec
  (add it there too), a table it drops is no longer in :data:`~medlake.schema.ALL_TABLES`.

Versions start at 1 and go up by one; the last is :data:`medlake.schema.SCHEMA_VERSION`.
The pattern is that of Django's and Alembic's migration lists, kept as plain data.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlglot
import sqlglot.expressions as sge

from medlake.engine import TableSpec
from medlake.errors import SchemaVersionError
from medlake.schema import ALL_TABLES, SCHEMA_VERSION
from medlake.schema.access_tables import ACCESS_TABLES
from medlake.schema.empi_tables import EMPI_TABLES
from medlake.schema.governance_tables import GOVERNANCE_TABLES
from medlake.schema.job_tables import JOB_TABLES


@dataclass(frozen=True)
class CreateTables:
    """Step: create these tables (those already in the lake are left alone)."""

    tables: tuple[TableSpec, ...]

    def __post_init__(self) -> None:
        if not self.tables:
            raise ValueError("CreateTables needs at least one table")

    def __repr__(self) -> str:  # the specs in full would drown a log line
        return f"CreateTables({', '.join(table.name for table in self.tables)})"


#: One step of a migration: create tables from their specs, or one DDL statement.
MigrationStep = CreateTables | sge.Expression

# DDL a migration may run: statements that change structure, never data.
_DDL_TYPES: tuple[type[sge.Expression], ...] = (sge.Create, sge.Alter, sge.Drop)


@dataclass(frozen=True)
class Migration:
    """The change from schema version ``version - 1`` to ``version``."""

    version: int
    description: str
    steps: tuple[MigrationStep, ...]


def ddl(sql: str) -> sge.Expression:
    """A DDL step written as SQL in DuckDB's dialect, parsed once into a SQLGlot expression.

    Only a convenience for writing :data:`MIGRATIONS` readably; the expression, not the
    string, is what the engine transpiles to its own dialect.
    """
    expression = sqlglot.parse_one(sql, read="duckdb")
    if not isinstance(expression, _DDL_TYPES):
        raise ValueError(f"not a DDL statement: {sql!r}")
    return expression


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        version=1,
        description="create the OMOP CDM v5.4 tables and medlake's own tables",
        steps=(CreateTables(ALL_TABLES),),
    ),
    Migration(
        version=2,
        description=(
            "EMPI, data-quality, audit-head and access tables; the source patient of each "
            "source record; outcome and origin of audit events"
        ),
        steps=(
            CreateTables(EMPI_TABLES + GOVERNANCE_TABLES + ACCESS_TABLES),
            # null on rows loaded before: the EMPI falls back to the row's person there
            ddl(
                "ALTER TABLE source_record ADD COLUMN IF NOT EXISTS source_patient_id "
                "VARCHAR(255)"
            ),
            ddl("ALTER TABLE audit_event ADD COLUMN IF NOT EXISTS outcome VARCHAR(20)"),
            ddl("ALTER TABLE audit_event ADD COLUMN IF NOT EXISTS origin VARCHAR(255)"),
        ),
    ),
    Migration(
        version=3,
        description="background jobs of the server (kind, state, progress, result)",
        steps=(CreateTables(JOB_TABLES),),
    ),
    Migration(
        version=4,
        description="the medical record number (MRN) of each source patient record",
        # null on rows loaded before: re-ingesting the source fills it in
        steps=(ddl("ALTER TABLE pii_person ADD COLUMN IF NOT EXISTS mrn VARCHAR(50)"),),
    ),
    Migration(
        version=5,
        description="the person of each source record, so provenance is read by person",
        # null on rows loaded before: the upgrade fills it in from the CDM rows
        # (medlake.service.lake_layout.fill_provenance_persons)
        steps=(ddl("ALTER TABLE source_record ADD COLUMN IF NOT EXISTS person_id BIGINT"),),
    ),
)


def validate_migrations(
    migrations: Sequence[Migration], tables: Iterable[TableSpec] = ALL_TABLES
) -> None:
    """Check a migration list: versions 1, 2, ... with no gap, and each step well formed.

    ``tables`` are the current table definitions that DDL steps are checked against.

    Raises:
        ValueError: the first problem found, naming the migration.
    """
    if not migrations:
        raise ValueError("there must be at least one migration")
    specs = {table.name: table for table in tables}
    for expected, migration in enumerate(migrations, start=1):
        if migration.version != expected:
            raise ValueError(
                f"migration versions must be 1, 2, 3... with no gap: expected {expected}, "
                f"found {migration.version}"
            )
        if not migration.description.strip():
            raise ValueError(f"migration {migration.version} has no description")
        if not migration.steps:
            raise ValueError(f"migration {migration.version} has no steps")
        for step in migration.steps:
            _check_step(migration.version, step, specs)


def _check_step(version: int, step: object, specs: dict[str, TableSpec]) -> None:
    where = f"migration {version}"
    if isinstance(step, CreateTables):
        return
    if not isinstance(step, _DDL_TYPES):
        raise ValueError(
            f"{where}: a step is CreateTables or a SQLGlot DDL expression, not {step!r}"
        )
    if version == 1:
        return
    sql = step.sql()
    if isinstance(step, sge.Create | sge.Drop) and not step.args.get("exists"):
        raise ValueError(f"{where}: use IF [NOT] EXISTS so it is harmless on a new lake: {sql}")
    drops_table = isinstance(step, sge.Drop) and str(step.args.get("kind")).upper() == "TABLE"
    if drops_table and step.this.name in specs:
        raise ValueError(f"{where}: drops {step.this.name}, which is still in the schema")
    if isinstance(step, sge.Alter):
        table = step.this.name
        for action in step.args.get("actions") or []:
            if not isinstance(action, sge.ColumnDef):
                continue
            if not action.args.get("exists"):
                raise ValueError(f"{where}: use ADD COLUMN IF NOT EXISTS: {sql}")
            if table not in specs or action.name not in specs[table].column_names:
                raise ValueError(
                    f"{where}: adds {table}.{action.name}, which the table's spec lacks; "
                    "add the column to the spec too"
                )


def latest_version(migrations: Sequence[Migration] = MIGRATIONS) -> int:
    """The version a lake has once every migration is applied."""
    return migrations[-1].version


def pending_migrations(
    current: int | None, migrations: Sequence[Migration] = MIGRATIONS
) -> list[Migration]:
    """The migrations a lake at version ``current`` still needs, in the order to apply them.

    ``current`` is the lake's recorded version, ``None`` (or 0) for a lake that has none.

    Raises:
        SchemaVersionError: the lake is newer than the last migration this medlake knows.
        ValueError: ``current`` is negative.
    """
    done = current or 0
    if done < 0:
        raise ValueError(f"a schema version is never negative, got {current}")
    latest = latest_version(migrations)
    if done > latest:
        raise SchemaVersionError(
            f"the lake is at schema version {done}, newer than this medlake ({latest}); "
            "upgrade medlake"
        )
    return [migration for migration in migrations if migration.version > done]


validate_migrations(MIGRATIONS)
if latest_version() != SCHEMA_VERSION:
    raise RuntimeError(
        f"SCHEMA_VERSION is {SCHEMA_VERSION} but the last migration is {latest_version()}"
    )

__all__ = [
    "MIGRATIONS",
    "CreateTables",
    "Migration",
    "MigrationStep",
    "ddl",
    "latest_version",
    "pending_migrations",
    "validate_migrations",
]

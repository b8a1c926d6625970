"""Migrations are an ordered, gap-free list; a lake gets exactly the ones it lacks."""

from __future__ import annotations

import pytest
import sqlglot.expressions as sge

from medlake.errors import SchemaVersionError
from medlake.schema import ALL_TABLES, SCHEMA_VERSION, table_spec
from medlake.schema.migrations import (
    MIGRATIONS,
    CreateTables,
    Migration,
    ddl,
    latest_version,
    pending_migrations,
    validate_migrations,
)

FIRST = MIGRATIONS[0]


def _step(version: int, *steps: CreateTables | sge.Expression) -> Migration:
    return Migration(version, f"step {version}", steps or (CreateTables((ALL_TABLES[0],)),))


def test_the_last_migration_is_the_schema_version() -> None:
    assert latest_version() == SCHEMA_VERSION
    assert [m.version for m in MIGRATIONS] == list(range(1, SCHEMA_VERSION + 1))


def test_version_one_creates_every_table() -> None:
    assert FIRST.version == 1
    assert FIRST.steps == (CreateTables(ALL_TABLES),)


def test_shipped_migrations_are_valid() -> None:
    validate_migrations(MIGRATIONS)


def test_new_lake_needs_every_migration() -> None:
    assert pending_migrations(None) == list(MIGRATIONS)
    assert pending_migrations(0) == list(MIGRATIONS)


def test_lake_at_latest_version_needs_none() -> None:
    assert pending_migrations(SCHEMA_VERSION) == []


def test_pending_are_those_after_current_in_order() -> None:
    migrations = [_step(1), _step(2), _step(3)]
    assert [m.version for m in pending_migrations(1, migrations)] == [2, 3]
    assert [m.version for m in pending_migrations(None, migrations)] == [1, 2, 3]


def test_lake_newer_than_medlake_is_refused() -> None:
    with pytest.raises(SchemaVersionError, match="newer than this medlake"):
        pending_migrations(SCHEMA_VERSION + 1)


def test_negative_version_is_refused() -> None:
    with pytest.raises(ValueError, match="never negative"):
        pending_migrations(-1)


@pytest.mark.parametrize(
    "versions", [[2], [1, 3], [1, 2, 2], [2, 1]], ids=["no-1", "gap", "repeat", "unordered"]
)
def test_versions_must_be_contiguous_from_one(versions: list[int]) -> None:
    with pytest.raises(ValueError, match="no gap"):
        validate_migrations([_step(v) for v in versions])


def test_empty_migration_list_is_refused() -> None:
    with pytest.raises(ValueError, match="at least one"):
        validate_migrations([])


def test_migration_without_steps_is_refused() -> None:
    with pytest.raises(ValueError, match="no steps"):
        validate_migrations([FIRST, Migration(2, "nothing", ())])


def test_a_step_is_create_tables_or_ddl() -> None:
    select = sge.select("1")
    with pytest.raises(ValueError, match="DDL"):
        validate_migrations([FIRST, Migration(2, "a query", (select,))])
    with pytest.raises(ValueError, match="not a DDL"):
        ddl("SELECT 1")


def test_adding_a_column_that_the_spec_has_is_valid() -> None:
    column = table_spec("person").columns[-1].name
    add = ddl(f"ALTER TABLE person ADD COLUMN IF NOT EXISTS {column} BIGINT")
    validate_migrations([FIRST, Migration(2, "add", (add,))])


def test_added_column_must_also_be_in_the_spec() -> None:
    add = ddl("ALTER TABLE person ADD COLUMN IF NOT EXISTS shoe_size BIGINT")
    with pytest.raises(ValueError, match="spec lacks"):
        validate_migrations([FIRST, Migration(2, "add", (add,))])


@pytest.mark.parametrize(
    "sql",
    [
        "ALTER TABLE person ADD COLUMN person_id BIGINT",
        "DROP TABLE old_table",
        "CREATE TABLE extra (a BIGINT)",
    ],
)
def test_later_migrations_must_be_harmless_on_a_new_lake(sql: str) -> None:
    with pytest.raises(ValueError, match="EXISTS"):
        validate_migrations([FIRST, Migration(2, "unguarded", (ddl(sql),))])


def test_dropping_a_table_still_in_the_schema_is_refused() -> None:
    drop = ddl("DROP TABLE IF EXISTS person")
    with pytest.raises(ValueError, match="still in the schema"):
        validate_migrations([FIRST, Migration(2, "drop", (drop,))])


def test_create_tables_needs_a_table() -> None:
    with pytest.raises(ValueError, match="at least one table"):
        CreateTables(())


def test_create_tables_repr_names_tables() -> None:
    assert repr(CreateTables((table_spec("person"),))) == "CreateTables(person)"

"""The lake's tables hang together: keys resolve, provenance is carried, identifiers fenced."""

from __future__ import annotations

import ast
from pathlib import Path

import ibis
import pytest

import medlake.schema
from medlake.engine import TableSpec
from medlake.schema import (
    ALL_TABLES,
    GROUPS,
    MEDLAKE_TABLES,
    OMOP_TABLES,
    SCHEMA_VERSION,
    table_spec,
    tables_in_group,
)

# medlake tables that hold what sources sent, and so say which source and batch it was.
SOURCE_DATA_TABLES = ("source_record", "source_patient", "quarantine", "pii_person", "omics_sample")
PROVENANCE_COLUMNS = ("source_system", "batch_id")
IDENTIFIER_COLUMNS = ("name_hanzi", "name_pinyin", "resident_id", "phone", "address", "email")


def _ids(tables: tuple[TableSpec, ...]) -> list[str]:
    return [table.name for table in tables]


def test_schema_version_is_the_last_migrations() -> None:
    from medlake.schema.migrations import MIGRATIONS

    assert MIGRATIONS[-1].version == SCHEMA_VERSION


def test_all_tables_are_omop_then_medlake() -> None:
    # medlake's own tables, then those of the EMPI and governance domains.
    assert ALL_TABLES[: len(OMOP_TABLES) + len(MEDLAKE_TABLES)] == OMOP_TABLES + MEDLAKE_TABLES
    assert len(OMOP_TABLES) == 39
    assert _ids(MEDLAKE_TABLES) == [
        "ingest_batch",
        "source_record",
        "source_patient",
        "quarantine",
        "pii_person",
        "omics_sample",
        "audit_event",
        "schema_version",
    ]


def test_table_names_are_unique() -> None:
    names = _ids(ALL_TABLES)
    assert len(names) == len(set(names))


@pytest.mark.parametrize("table", ALL_TABLES, ids=_ids(ALL_TABLES))
def test_column_names_are_unique_lower_case_identifiers(table: TableSpec) -> None:
    names = table.column_names
    assert len(names) == len(set(names))
    assert all(name.isidentifier() and name == name.lower() for name in names)


@pytest.mark.parametrize("table", ALL_TABLES, ids=_ids(ALL_TABLES))
def test_primary_key_columns_are_required(table: TableSpec) -> None:
    assert all(table.column(name).required for name in table.primary_key)


@pytest.mark.parametrize("table", ALL_TABLES, ids=_ids(ALL_TABLES))
def test_unique_keys_name_existing_columns(table: TableSpec) -> None:
    for key in table.unique:
        assert key
        assert set(key) <= set(table.column_names)


@pytest.mark.parametrize("table", ALL_TABLES, ids=_ids(ALL_TABLES))
def test_every_foreign_key_points_to_an_existing_primary_key(table: TableSpec) -> None:
    for column in table.columns:
        if column.foreign_key is None:
            continue
        target_table, target_column = column.foreign_key
        target = table_spec(target_table)
        assert target.primary_key == (target_column,), f"{table.name}.{column.name}"
        assert target.column(target_column).ibis_type.copy(nullable=True) == (
            column.ibis_type.copy(nullable=True)
        ), f"{table.name}.{column.name} and {target_table}.{target_column} differ in type"


@pytest.mark.parametrize("table", ALL_TABLES, ids=_ids(ALL_TABLES))
def test_ibis_schema_builds_with_nullability_from_required(table: TableSpec) -> None:
    schema = table.ibis_schema()
    assert isinstance(schema, ibis.Schema)
    assert tuple(schema.names) == table.column_names
    for column in table.columns:
        assert schema[column.name].nullable is not column.required


@pytest.mark.parametrize("name", SOURCE_DATA_TABLES)
def test_source_data_tables_carry_provenance(name: str) -> None:
    table = table_spec(name)
    for column in PROVENANCE_COLUMNS:
        assert table.column(column).required, f"{name}.{column}"
    assert table.column("batch_id").foreign_key == ("ingest_batch", "batch_id")


def test_provenance_identifies_each_source_record_version() -> None:
    record = table_spec("source_record")
    key = ("cdm_table", "source_system", "source_record_id", "source_version")
    assert key in record.unique
    for column in (*key, "cdm_row_id", "is_current", "record_sha256", "loaded_at"):
        assert record.column(column).required


def test_a_landed_file_is_one_batch_per_source() -> None:
    assert ("source_system", "landed_sha256") in table_spec("ingest_batch").unique


def test_person_links_start_empty_until_empi_links_them() -> None:
    for name in ("source_patient", "pii_person", "omics_sample"):
        column = table_spec(name).column("person_id")
        assert not column.required
        assert column.foreign_key == ("person", "person_id")


def test_restricted_tables_are_those_with_identifiers_or_secrets() -> None:
    restricted = {table.name for table in ALL_TABLES if table.restricted}
    # identifiers: pii_person, the EMPI's golden record and comparison features;
    # secrets: token hashes
    assert restricted == {"pii_person", "empi_golden", "empi_feature", "access_token"}
    assert tables_in_group("restricted") == tuple(t for t in ALL_TABLES if t.restricted)


def test_direct_identifiers_live_only_in_restricted_tables() -> None:
    for table in ALL_TABLES:
        if table.restricted:
            continue
        assert not set(IDENTIFIER_COLUMNS) & set(table.column_names), table.name
    assert set(IDENTIFIER_COLUMNS) <= set(table_spec("pii_person").column_names)


def test_audit_events_form_a_hash_chain() -> None:
    audit = table_spec("audit_event")
    assert audit.primary_key == ("event_id",)
    assert audit.column("event_id").logical_type == "bigint"
    assert audit.column("prev_hash").required
    assert audit.column("event_hash").required


def test_every_table_is_in_a_known_group() -> None:
    assert {table.group for table in ALL_TABLES} == set(GROUPS)
    assert sum(len(tables_in_group(group)) for group in GROUPS) == len(ALL_TABLES)


def test_table_spec_finds_tables_by_name() -> None:
    assert table_spec("person").primary_key == ("person_id",)
    assert table_spec("ingest_batch").group == "medlake"


def test_table_spec_names_the_missing_table() -> None:
    with pytest.raises(KeyError, match="no table named 'persons'"):
        table_spec("persons")


def test_unknown_group_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown table group 'clinical'"):
        tables_in_group("clinical")


def test_schema_package_does_no_io() -> None:
    """medlake.schema is data: no file, OS or network access in any of its modules."""
    io_modules = {"os", "io", "pathlib", "shutil", "socket", "subprocess", "urllib", "tempfile"}
    for path in Path(medlake.schema.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                imported = {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported = {(node.module or "").split(".")[0]}
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
                assert node.func.id != "open", f"{path.name} calls open()"
                continue
            else:
                continue
            assert not imported & io_modules, f"{path.name} imports {imported & io_modules}"

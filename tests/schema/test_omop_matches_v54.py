"""The OMOP tables in medlake.schema are exactly OHDSI's CDM v5.4, field by field.

``data/OMOP_CDMv5.4_Field_Level.csv`` is OHDSI's official v5.4 field list (from the
OHDSI/CommonDataModel repository, ``inst/csv/OMOP_CDMv5.4_Field_Level.csv``). It is
read here with the csv module, independently of the generator, and compared with the
Python definitions: any drift in a name, order, required flag, type or key fails.
Two normalisations, both the CDM's own intent: the one ``Integer`` is ``integer``, and
note_nlp's ``"offset"`` is written quoted in the CSV (a reserved word) but named
``offset``.
"""

from __future__ import annotations

import csv
import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from types import ModuleType

import pytest

from medlake.schema import OMOP_TABLES, table_spec, tables_in_group

DATA = Path(__file__).parent / "data" / "OMOP_CDMv5.4_Field_Level.csv"
REPO = Path(__file__).resolve().parents[2]
SCHEMA_DIR = REPO / "src" / "medlake" / "schema"

VOCABULARY_TABLES = {
    "concept",
    "vocabulary",
    "domain",
    "concept_class",
    "concept_relationship",
    "relationship",
    "concept_synonym",
    "concept_ancestor",
    "source_to_concept_map",
    "drug_strength",
}
RESULTS_TABLES = {"cohort", "cohort_definition"}


def _rows() -> list[dict[str, str]]:
    with DATA.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


ROWS = _rows()


def _official_tables() -> dict[str, list[dict[str, str]]]:
    tables: dict[str, list[dict[str, str]]] = {}
    for row in ROWS:
        tables.setdefault(row["cdmTableName"], []).append(row)
    return tables


OFFICIAL = _official_tables()


def _column_name(row: dict[str, str]) -> str:
    return row["cdmFieldName"].strip('"')


def _per_table(check: Callable[[dict[str, str]], object]) -> dict[str, list[object]]:
    return {table: [check(row) for row in rows] for table, rows in OFFICIAL.items()}


def _ours(attribute: Callable[..., object]) -> dict[str, list[object]]:
    return {table.name: [attribute(column) for column in table.columns] for table in OMOP_TABLES}


def test_field_list_is_the_v54_one() -> None:
    assert len(ROWS) == 432
    assert len(OFFICIAL) == 39


def test_table_names_and_order_match() -> None:
    assert [table.name for table in OMOP_TABLES] == list(OFFICIAL)


def test_column_names_and_order_match() -> None:
    assert _ours(lambda c: c.name) == _per_table(_column_name)


def test_required_flags_match() -> None:
    assert _ours(lambda c: c.required) == _per_table(lambda r: r["isRequired"] == "Yes")


def test_types_match() -> None:
    def official_type(row: dict[str, str]) -> str:
        datatype = row["cdmDatatype"]
        return "integer" if datatype.lower() == "integer" else datatype

    assert _ours(lambda c: c.logical_type) == _per_table(official_type)


def test_primary_keys_match() -> None:
    assert _ours(lambda c: c.primary_key) == _per_table(lambda r: r["isPrimaryKey"] == "Yes")


def test_foreign_keys_match() -> None:
    def official_fk(row: dict[str, str]) -> tuple[str, str] | None:
        if row["isForeignKey"] != "Yes":
            return None
        return (row["fkTableName"].lower(), row["fkFieldName"].lower())

    assert _ours(lambda c: c.foreign_key) == _per_table(official_fk)


def test_offset_column_is_named_without_sql_quotes() -> None:
    assert "offset" in table_spec("note_nlp").column_names


def test_groups_follow_the_cdm_sections() -> None:
    assert {t.name for t in tables_in_group("vocabulary")} == VOCABULARY_TABLES
    assert {t.name for t in tables_in_group("results")} == RESULTS_TABLES
    clinical = {t.name for t in OMOP_TABLES} - VOCABULARY_TABLES - RESULTS_TABLES
    assert {t.name for t in OMOP_TABLES if t.group == "cdm"} == clinical
    assert {"metadata", "cdm_source", "person", "location"} <= clinical
    assert not any(table.restricted for table in OMOP_TABLES)


def _load_generator() -> ModuleType:
    """scripts/generate_omop_schema.py, imported from its path (scripts/ is no package)."""
    name = "generate_omop_schema"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "scripts" / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it executes
    spec.loader.exec_module(module)
    return module


GENERATED = _load_generator().render_all(DATA)


@pytest.mark.parametrize("name", sorted(GENERATED))
def test_generated_module_is_up_to_date(name: str) -> None:
    expected = GENERATED[name]
    written = (SCHEMA_DIR / name).read_text(encoding="utf-8")
    assert written == expected, (
        f"{name} differs from what scripts/generate_omop_schema.py writes: "
        "run `.venv/bin/python scripts/generate_omop_schema.py`"
    )

"""Loads reuse a table's schema until DDL could have changed it."""

from __future__ import annotations

import pyarrow as pa
import pytest

from medlake.engine import ColumnSpec, TableSpec
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.errors import EngineError

NOTES = TableSpec(
    name="notes",
    group="test",
    columns=(ColumnSpec("note_id", "integer", required=True), ColumnSpec("text", "varchar(50)")),
)


def test_a_column_added_by_ddl_is_seen_by_the_next_load() -> None:
    with DuckDBEngine() as engine:
        engine.create_schema([NOTES])
        engine.load_arrow("notes", pa.table({"note_id": [1], "text": ["a"]}))
        with pytest.raises(EngineError, match="author"):
            engine.load_arrow("notes", pa.table({"note_id": [2], "author": ["x"]}))
        engine.run_sql("ALTER TABLE notes ADD COLUMN author VARCHAR")
        engine.load_arrow("notes", pa.table({"note_id": [3], "author": ["y"]}))
        rows = engine.execute(engine.table("notes").order_by("note_id")).to_pylist()
        assert rows[-1] == {"note_id": 3, "text": None, "author": "y"}


def test_a_dropped_and_recreated_table_is_read_again() -> None:
    with DuckDBEngine() as engine:
        engine.create_schema([NOTES])
        engine.load_arrow("notes", pa.table({"note_id": [1]}))
        engine.drop_table("notes")
        wider = TableSpec(
            name="notes",
            group="test",
            columns=(*NOTES.columns, ColumnSpec("pages", "integer")),
        )
        engine.create_schema([wider])
        assert engine.load_arrow("notes", pa.table({"note_id": [2], "pages": [7]})) == 1

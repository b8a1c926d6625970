"""``SupportsReordering`` on DuckDB: a table rewritten in person order keeps its content
and its definition, its zone maps then prune a person lookup to one row group, and a
rewrite that fails leaves the table as it was.

The table is big enough for several row groups (DuckDB: 122,880 rows a group) and loaded
in a shuffled order, as ingest appends rows; the reference is the same rows in pandas.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from medlake.engine import ColumnSpec, TableSpec
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.errors import EngineError, WorkspaceFrozenError

ROWS = 400_000
SPEC = TableSpec(
    name="measurement_like",
    group="cdm",
    description="a person table",
    columns=(
        ColumnSpec("measurement_id", "integer", required=True, primary_key=True),
        ColumnSpec("person_id", "integer", required=True),
        ColumnSpec("value_as_number", "float"),
        ColumnSpec("unit_source_value", "varchar(50)"),
    ),
)


def _rows(seed: int, count: int = ROWS, start: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    ids = rng.permutation(count) + start
    return pa.table({
        "measurement_id": ids,
        "person_id": (ids * 2654435761) % 20_000,  # hashed-looking person ids
        "value_as_number": np.where(ids % 7 == 0, np.nan, ids / 3.0),
        "unit_source_value": [None if i % 5 == 0 else f"u{i % 13}" for i in ids.tolist()],
    })  # fmt: skip


@pytest.fixture
def engine(tmp_path: Path) -> DuckDBEngine:
    engine = DuckDBEngine(tmp_path / "lake.duckdb")
    engine.create_schema([SPEC])
    engine.load_arrow(SPEC.name, _rows(1))
    engine.checkpoint()
    yield engine
    engine.close()


def _content(engine: DuckDBEngine) -> pd.DataFrame:
    frame = engine.execute(engine.table(SPEC.name)).to_pandas()
    return frame.sort_values("measurement_id").reset_index(drop=True)


def _groups_read(engine: DuckDBEngine, person_id: int) -> int:
    """Row groups whose zone map admits ``person_id`` (what a lookup scans)."""
    ranges = engine._row_group_ranges(SPEC.name, "person_id")
    return sum(1 for low, high, _ in ranges if low <= person_id <= high)


def test_a_shuffled_table_is_out_of_order_and_a_lookup_reads_every_group(engine) -> None:
    late, rows = engine.out_of_order_rows(SPEC.name, "person_id")
    assert rows == ROWS
    groups = len(engine._row_group_ranges(SPEC.name, "person_id"))
    assert groups >= 3
    assert late >= ROWS * (groups - 1) / groups * 0.9  # all but the first group
    assert _groups_read(engine, 12_345) == groups


def test_reorder_keeps_the_content_and_prunes_a_lookup_to_one_group(engine) -> None:
    before = _content(engine)
    version = engine.data_version([SPEC.name])
    assert engine.reorder_table(SPEC.name, ["person_id", "measurement_id"]) == ROWS
    engine.checkpoint()
    pd.testing.assert_frame_equal(_content(engine), before)
    assert engine.out_of_order_rows(SPEC.name, "person_id") == (0, ROWS)
    for person in (0, 7, 12_345, 19_999):
        assert _groups_read(engine, person) <= 2  # one, or two at a group boundary
    # the stored order is person order
    stored = engine.run_sql(f"select person_id from {SPEC.name}")
    persons = stored.column("person_id").to_numpy()
    assert (np.diff(persons) >= 0).all()
    # same content: what was computed from the table stays right
    assert engine.data_version([SPEC.name]) == version
    # the definition is kept: required columns still refuse nulls
    with pytest.raises(EngineError, match="person_id"):
        engine.load_arrow(SPEC.name, pa.table({"measurement_id": [ROWS + 1], "person_id": [None]}))


def test_appended_rows_are_counted_out_of_order_until_the_next_rewrite(engine) -> None:
    engine.reorder_table(SPEC.name, ["person_id"])
    engine.checkpoint()
    engine.load_arrow(SPEC.name, _rows(2, count=130_000, start=ROWS))
    engine.checkpoint()
    late, rows = engine.out_of_order_rows(SPEC.name, "person_id")
    assert rows == ROWS + 130_000
    # the appended rows, and the ordered run's last (partial) group they filled up
    assert 130_000 <= late <= 130_000 + 122_880
    before = _content(engine)
    engine.reorder_table(SPEC.name, ["person_id", "measurement_id"])
    engine.checkpoint()
    assert engine.out_of_order_rows(SPEC.name, "person_id") == (0, rows)
    pd.testing.assert_frame_equal(_content(engine), before)


def test_a_failed_rewrite_leaves_the_table_as_it_was(engine) -> None:
    before = _content(engine)
    ranges = engine._row_group_ranges(SPEC.name, "person_id")
    with pytest.raises(EngineError, match="reorder measurement_like"):
        engine.reorder_table(SPEC.name, ["person_id", "no_such_column"])
    engine.checkpoint()
    pd.testing.assert_frame_equal(_content(engine), before)
    assert engine._row_group_ranges(SPEC.name, "person_id") == ranges
    assert not engine.in_transaction


def test_a_frozen_workspace_refuses_the_rewrite(engine) -> None:
    engine.guard_writes(lambda: "the workspace is frozen")
    with pytest.raises(WorkspaceFrozenError, match="reorder measurement_like"):
        engine.reorder_table(SPEC.name, ["person_id"])


def test_reorder_after_deletes_keeps_exactly_the_rows_left(engine) -> None:
    # Rows deleted in the middle and at the end of storage: the row ids have gaps, and
    # the largest is below the count of rows ever stored (the rewrite appends the rows
    # again and deletes the old ones by row id).
    engine._con.execute(f"DELETE FROM {SPEC.name} WHERE rowid % 5 = 1 OR rowid >= {ROWS - 777}")
    before = _content(engine)
    assert len(before) == ROWS - 777 - (ROWS - 777 + 3) // 5
    assert engine.reorder_table(SPEC.name, ["person_id", "measurement_id"]) == len(before)
    pd.testing.assert_frame_equal(_content(engine), before)
    stored = engine.run_sql(f"select person_id, measurement_id from {SPEC.name}").to_pandas()
    assert stored.equals(stored.sort_values(["person_id", "measurement_id"]).reset_index(drop=True))
    engine.checkpoint()
    assert engine.out_of_order_rows(SPEC.name, "person_id") == (0, len(before))


def test_reorder_inside_a_transaction_takes_its_uncommitted_rows_along(engine) -> None:
    # A transaction's own appended rows (DuckDB: row ids far above the stored ones) are
    # rewritten with the others, and all of it commits or rolls back as one.
    more = _rows(3, count=5_000, start=ROWS)
    with engine.transaction():
        engine.load_arrow(SPEC.name, more)
        before = _content(engine)
        assert engine.reorder_table(SPEC.name, ["person_id", "measurement_id"]) == ROWS + 5_000
        pd.testing.assert_frame_equal(_content(engine), before)
    pd.testing.assert_frame_equal(_content(engine), before)
    stored = engine.run_sql(f"select person_id from {SPEC.name}").column("person_id")
    assert (np.diff(stored.to_numpy()) >= 0).all()

    def reorder_then_fail() -> None:
        with engine.transaction():
            engine.reorder_table(SPEC.name, ["measurement_id"])
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        reorder_then_fail()
    pd.testing.assert_frame_equal(_content(engine), before)
    stored = engine.run_sql(f"select person_id from {SPEC.name}").column("person_id")
    assert (np.diff(stored.to_numpy()) >= 0).all()  # the person order, not the rolled back one

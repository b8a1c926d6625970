"""``SupportsCheckpoint.checkpoints_deferred`` on DuckDB: within the block a commit
leaves its changes in the write-ahead log up to the size given, instead of DuckDB's
16 MiB, and the database's setting is put back after the last block; committed rows
stay durable either way (the lake reopened after a block has every row).
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import pyarrow as pa

from medlake.engine import ColumnSpec, TableSpec
from medlake.engine.backends.duckdb import DuckDBEngine

SPEC = TableSpec(
    name="notes_like",
    group="cdm",
    description="rows with text",
    columns=(
        ColumnSpec("note_id", "integer", required=True, primary_key=True),
        ColumnSpec("note_text", "text"),
    ),
)


def _threshold(engine: DuckDBEngine) -> str:
    ((value,),) = engine._con.execute("SELECT current_setting('checkpoint_threshold')").fetchall()
    return str(value)


def _rows(start: int, count: int) -> pa.Table:
    ids = np.arange(start, start + count)
    # Text that does not compress away: the log holds the rows as written.
    return pa.table({"note_id": ids, "note_text": [f"{i * 2654435761:x}" * 8 for i in ids]})


def _wal(path: Path) -> int:
    wal = path.with_name(path.name + ".wal")
    return wal.stat().st_size if wal.exists() else 0


def test_a_commit_in_the_block_leaves_its_log_and_the_setting_comes_back(tmp_path) -> None:
    path = tmp_path / "lake.duckdb"
    engine = DuckDBEngine(path)
    engine.create_schema([SPEC])
    engine.checkpoint()
    default = _threshold(engine)
    with engine.checkpoints_deferred(1 << 30):
        assert _threshold(engine) == "1.0 GiB"
        for start in range(0, 400_000, 100_000):  # four commits, about 11 MB of log each
            with engine.transaction():
                engine.load_arrow(SPEC.name, _rows(start, 100_000))
        deferred_log = _wal(path)
    assert deferred_log > 32 << 20  # past DuckDB's own threshold, and not checkpointed
    assert _threshold(engine) == default
    with engine.transaction():  # outside the block the next commit checkpoints as before
        engine.load_arrow(SPEC.name, _rows(400_000, 100_000))
    assert _wal(path) < deferred_log
    engine.close()
    reopened = DuckDBEngine(path)
    assert reopened.count(reopened.table(SPEC.name)) == 500_000
    reopened.close()


def test_nested_and_concurrent_blocks_put_the_setting_back_once_all_are_done(tmp_path) -> None:
    path = tmp_path / "lake.duckdb"
    first, second = DuckDBEngine(path), DuckDBEngine(path)
    default = _threshold(first)
    inner_started, outer_may_end = threading.Event(), threading.Event()
    seen: list[str] = []

    def other() -> None:  # a second connection of this process to the same lake
        with second.checkpoints_deferred(512 << 20):
            inner_started.set()
            outer_may_end.wait(10)
            seen.append(_threshold(second))
        seen.append(_threshold(second))

    with first.checkpoints_deferred(256 << 20):
        with first.checkpoints_deferred(128 << 20):
            assert _threshold(first) == "256.0 MiB"  # the first one in sets it
        assert _threshold(first) == "256.0 MiB"
        worker = threading.Thread(target=other)
        worker.start()
        inner_started.wait(10)
    assert _threshold(first) == "256.0 MiB"  # the other block is still open
    outer_may_end.set()
    worker.join(10)
    assert seen == ["256.0 MiB", default]
    assert _threshold(first) == default
    first.close()
    second.close()

"""The writer lock (``medlake.engine.rewrite_gate``): a write beside a table's person-order
rewrite waits for it instead of failing, within ``[layout] write_wait_seconds``; reads and
the audit trail never wait.

Each test runs a real rewrite (:meth:`reorder_table`, a few million rows so it lasts) in a
thread and a real write on another connection of the same process while the rewrite
holds the table. The same scenario without the lock ends in DuckDB's write-write conflict
(the first test), so the others can fail.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from medlake.audit import append_event
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.engine.rewrite_gate import GATES
from medlake.errors import LakeBusyError, WriteConflictError
from medlake.schema import table_spec

ROWS = 3_000_000
pytestmark = pytest.mark.slow


def _rows(n: int, seed: int) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({"id": np.arange(n, dtype=np.int64),
                     "person_id": rng.integers(0, 100_000, n, dtype=np.int64),
                     "value": rng.random(n)})  # fmt: skip


@pytest.fixture
def lake(tmp_path: Path) -> Iterator[tuple[Path, pa.Table]]:
    path = tmp_path / "lake.duckdb"
    rows = _rows(ROWS, 1)
    with DuckDBEngine(path) as engine:
        engine.run_sql("CREATE TABLE m (id BIGINT, person_id BIGINT, value DOUBLE)")
        engine.run_sql("CREATE TABLE other (id BIGINT)")
        engine.create_schema([table_spec("audit_event"), table_spec("audit_head")])
        engine.load_arrow("m", rows)
    return path, rows


class Rewrite:
    """``reorder_table`` of ``m`` in a thread, on its own engine; ``error`` if it failed."""

    def __init__(self, engine: DuckDBEngine) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self.ended: float | None = None
        self.thread = threading.Thread(target=self._run)

    def _run(self) -> None:
        try:
            self.engine.reorder_table("m", ["person_id", "id"])
        except BaseException as error:
            self.error = error
        self.ended = time.monotonic()

    def start(self) -> Rewrite:
        self.thread.start()
        lake = str(Path(str(self.engine.path)).resolve())
        deadline = time.monotonic() + 30
        while "m" not in GATES.rewriting(lake):  # holding the table now
            assert self.thread.is_alive()
            assert time.monotonic() < deadline
            time.sleep(0.001)
        return self

    def join(self) -> None:
        self.thread.join(120)


def _update_row(engine: DuckDBEngine, row_id: int, value: float) -> None:
    """An ingest-like write: replace a row (delete the old version, insert the new)."""
    m = engine.table("m")
    with engine.transaction():
        engine.delete_where("m", m.id == row_id)
        engine.load_arrow("m", pa.table({"id": [row_id], "person_id": [7], "value": [value]}))


def _stored(path: Path) -> pa.Table:
    with DuckDBEngine(path) as engine:
        m = engine.table("m")
        return engine.execute(m.order_by(m.id))


def test_without_the_lock_the_write_or_the_rewrite_fails(
    lake: tuple[Path, pa.Table], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reference: the same scenario with writes not holding the gate meets DuckDB's
    write-write conflict on one side (what a request beside the rewrite used to get)."""
    path, _ = lake
    monkeypatch.setattr(GATES, "write", lambda *a, **k: contextlib.nullcontext())
    with DuckDBEngine(path) as rewriter, DuckDBEngine(path) as writer:
        rewrite = Rewrite(rewriter).start()
        try:
            _update_row(writer, 5, -1.0)
            wrote: BaseException | None = None
        except WriteConflictError as error:
            wrote = error
        rewrite.join()
    assert isinstance(wrote, WriteConflictError) or isinstance(rewrite.error, WriteConflictError)


def test_a_write_beside_a_rewrite_waits_for_it_and_both_land(
    lake: tuple[Path, pa.Table],
) -> None:
    path, rows = lake
    with DuckDBEngine(path) as rewriter, DuckDBEngine(path) as writer:
        rewrite = Rewrite(rewriter).start()
        _update_row(writer, 5, -1.0)  # waits for the rewrite, then succeeds
        wrote_at = time.monotonic()
        rewrite.join()
        assert rewrite.error is None
        assert rewrite.ended is not None
        assert wrote_at >= rewrite.ended
        late, _total = writer.out_of_order_rows("m", "person_id")
    stored = _stored(path)
    expected = rows.to_pandas()
    expected.loc[5, ["person_id", "value"]] = [7, -1.0]
    assert stored.num_rows == ROWS
    assert stored.to_pandas().equals(expected)
    assert late <= 1  # in person order but for the one row appended after the rewrite


def test_reads_and_the_audit_trail_do_not_wait(lake: tuple[Path, pa.Table]) -> None:
    """A read of the rewritten table, a write to another declared table and an audit
    append all finish while the rewrite still holds its table; an undeclared write waits."""
    path, _ = lake
    with DuckDBEngine(path) as rewriter, DuckDBEngine(path) as other:
        rewrite = Rewrite(rewriter).start()
        assert other.count("m") == ROWS  # the old rows, read beside the rewrite
        with other.transaction(tables=["other"]):
            other.load_arrow("other", pa.table({"id": [1]}))
        append_event(other, actor="alice", action="read", object_type="person", object_id="7")
        still_rewriting = rewrite.thread.is_alive()
        with other.transaction():  # may touch any table: waits
            other.load_arrow("other", pa.table({"id": [2]}))
        assert rewrite.ended is not None  # it waited for the rewrite
        rewrite.join()
    assert still_rewriting, "the rewrite ended before the checks: make ROWS larger"
    assert rewrite.error is None


def test_a_write_that_waits_too_long_fails_with_a_clear_error(
    lake: tuple[Path, pa.Table],
) -> None:
    path, _ = lake
    with DuckDBEngine(path) as rewriter, DuckDBEngine(path) as writer:
        writer.wait_for_rewrites(0.05)
        rewrite = Rewrite(rewriter).start()
        with pytest.raises(LakeBusyError) as busy:
            _update_row(writer, 5, -1.0)
        rewrite.join()
    assert rewrite.error is None
    assert isinstance(busy.value, WriteConflictError)  # 409 / exit 75: send it again
    assert "rewrite of table m" in busy.value.message
    assert "write_wait_seconds" in busy.value.message
    assert _stored(path).column("value")[5].as_py() != -1.0  # nothing was written


def test_a_rewrite_waits_for_the_write_under_way(lake: tuple[Path, pa.Table]) -> None:
    """A write transaction open when the rewrite starts is let finish first; the rewrite
    then keeps its change (no conflict, no lost row)."""
    path, _ = lake
    with DuckDBEngine(path) as rewriter, DuckDBEngine(path) as writer:
        rewrite = Rewrite(rewriter)
        m = writer.table("m")
        with writer.transaction():
            writer.delete_where("m", m.id == 9)
            rewrite.thread.start()
            time.sleep(0.3)
            assert rewrite.thread.is_alive()
            assert rewrite.ended is None
            writer.load_arrow("m", pa.table({"id": [9], "person_id": [3], "value": [2.5]}))
        rewrite.join()
        assert rewrite.error is None
    stored = _stored(path).to_pandas()
    assert stored.loc[9, "value"] == 2.5
    assert len(stored) == ROWS

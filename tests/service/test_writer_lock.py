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
import json
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from medlake.audit import append_event
from medlake.config import open_workspace, write_settings
from medlake.engine.backends.duckdb import DuckDBEngine
from medlake.engine.rewrite_gate import GATES
from medlake.errors import LakeBusyError, WriteConflictError
from medlake.schema import table_spec
from medlake.server.problems import status_for
from medlake.service.fhir_transaction import post_bundle
from medlake.service.lake_layout import LayoutReport, keep_person_order
from medlake.service.lake_pool import pooled_lake, serving
from medlake.service.workspace import open_lake

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


# ---------------------------------------------------------------------- through the services


def _newer_observation(hospital: Path) -> tuple[dict, float]:
    """An EMR lab result the lake holds, sent again with another value (a correction):
    ingest replaces the stored row (delete and insert), the write that conflicts."""
    with (hospital / "emr" / "Observation.ndjson").open(encoding="utf-8") as lines:
        observation = next(o for o in map(json.loads, lines) if "valueQuantity" in o)
    value = 98765.4321
    observation["valueQuantity"]["value"] = value
    request = {"method": "PUT", "url": f"Observation/{observation['id']}"}
    bundle = {"resourceType": "Bundle", "type": "transaction",
              "entry": [{"resource": observation, "request": request}]}  # fmt: skip
    return bundle, value


@pytest.fixture(scope="module")
def grown_lake(hospital_lake: Any, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, int]:
    """The test hospital with ``measurement`` grown 40-fold (copies of its rows under new
    ids), so that its rewrite lasts a few seconds; and its row count."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("grown") / "ws")
    with open_lake(open_workspace(root)) as engine:
        before = engine.count("measurement")
        engine.run_sql(
            "INSERT INTO measurement SELECT m.* REPLACE (-(k * 100000000 + row_number() OVER ())"
            " AS measurement_id) FROM measurement AS m, range(1, 40) AS r(k)"
        )
        grown = engine.count("measurement")
    assert grown == 40 * before
    return root, grown


@contextlib.contextmanager
def rewriting_measurement(root: Path) -> Iterator[list[LayoutReport]]:
    """``medlake serve``'s maintenance rewriting ``measurement`` in a thread, on a pooled
    engine, while the block runs (entered once the rewrite holds the table)."""
    workspace = open_workspace(root)
    report: list[LayoutReport] = []
    with serving(workspace), pooled_lake(workspace) as engine:
        rewrite = threading.Thread(target=lambda: report.append(keep_person_order(
            engine, workspace, force=True, tables=["measurement"])))  # fmt: skip
        rewrite.start()
        lake = str(workspace.lake_path.resolve())
        while "measurement" not in GATES.rewriting(lake):
            assert rewrite.is_alive()
            time.sleep(0.001)
        try:
            yield report
        finally:
            rewrite.join(300)


def test_a_bundle_posted_beside_the_person_order_rewrite_waits_and_lands(
    grown_lake: tuple[Path, int], hospital_lake: Any, tmp_path: Path
) -> None:
    """A FHIR Bundle correcting a lab result, POSTed while the server's maintenance rewrites
    ``measurement`` in person order: it waits, then both the rewrite and the correction
    are in the lake (without the lock the Bundle failed on the conflict)."""
    root = shutil.copytree(grown_lake[0], tmp_path / "ws")
    bundle, value = _newer_observation(hospital_lake.hospital)
    with rewriting_measurement(root) as report:
        response = post_bundle(root, bundle, source_system="emr")
        assert report  # answered once the rewrite had committed
    assert response["entry"][0]["response"]["status"] == "201 Created"
    assert report[0].reordered == ["measurement"]
    with open_lake(open_workspace(root)) as engine:
        m = engine.table("measurement")
        assert engine.count("measurement") == grown_lake[1]  # replaced, not added
        assert engine.count(m.filter(m.value_as_number == value)) == 1


def test_a_bundle_that_waits_too_long_is_a_conflict_to_send_again(
    grown_lake: tuple[Path, int], hospital_lake: Any, tmp_path: Path
) -> None:
    """Past ``[layout] write_wait_seconds`` the Bundle is refused as a conflict (409
    through the API, like DuckDB's own), not as a bad Bundle (422), and nothing of it
    was written."""
    root = shutil.copytree(grown_lake[0], tmp_path / "ws")
    settings = open_workspace(root).settings
    settings.layout.write_wait_seconds = 0.05
    write_settings(root / "medlake.toml", settings)
    bundle, value = _newer_observation(hospital_lake.hospital)
    with rewriting_measurement(root) as report, pytest.raises(LakeBusyError) as busy:
        post_bundle(root, bundle, source_system="emr")
    assert status_for(busy.value) == 409
    assert "send it again" in busy.value.message
    assert report[0].reordered == ["measurement"]
    with open_lake(open_workspace(root)) as engine:
        m = engine.table("measurement")
        assert engine.count(m.filter(m.value_as_number == value)) == 0

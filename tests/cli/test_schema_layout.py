"""``medlake schema layout`` and ``medlake schema reorder`` as an operator runs them, on a
private copy of the hospital lake whose ``measurement`` spans several row groups in a
shuffled order (rows appended as batches are)."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest


@pytest.fixture
def shuffled(hospital_lake, tmp_path: Path) -> Path:
    root = hospital_lake.copy(tmp_path / "ws")
    con = duckdb.connect(str(root / "lake.duckdb"))
    try:
        con.execute(
            "insert into measurement select measurement.* replace ("
            "measurement_id + k * 1000000000000 "
            "as measurement_id) from measurement, range(1, 25) t(k) "
            "order by hash(measurement_id, k)"
        )
        con.execute("checkpoint")
        (rows,), = con.execute("select count(*) from measurement").fetchall()
    finally:
        con.close()
    assert rows > 2 * 122_880  # several row groups
    return root


def rows_in(root: Path, table: str) -> int:
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        return con.execute(f"select count(*) from {table}").fetchall()[0][0]
    finally:
        con.close()


def _layout(medlake, root: Path) -> dict[str, dict]:
    result = medlake("schema", "layout", "--json", "--workspace", str(root))
    assert result.returncode == 0, result.stderr
    return {t["table"]: t for t in json.loads(result.stdout)["tables"]}


def test_layout_shows_the_rows_out_of_order_and_reorder_puts_them_back(medlake, shuffled):
    before = _layout(medlake, shuffled)
    assert before["measurement"]["out_of_order"] > before["measurement"]["rows"] / 2
    result = medlake("schema", "reorder", "--all", "--json", "--workspace", str(shuffled))
    assert result.returncode == 0, result.stderr
    done = {t["table"]: t for t in json.loads(result.stdout)["tables"]}
    assert done["measurement"]["reordered"]
    after = _layout(medlake, shuffled)
    assert all(t["out_of_order"] == 0 for t in after.values())
    assert after["measurement"]["rows"] == rows_in(shuffled, "measurement")
    result = medlake("schema", "reorder", "--workspace", str(shuffled))
    assert result.returncode == 0, result.stderr
    assert "Rows out of person order" in result.stdout

"""Keeping the lake in person order: ``reorder_lake`` / ``layout_status`` (``medlake
schema reorder|layout``, tests/cli) and the maintenance that runs it while serving.

A private copy of the hospital lake gets a ``measurement`` table several row groups
long in a shuffled order (copies of its rows under new ids, appended as batches would
be). The rewrite must leave every person table's content exactly as pandas read it
before, and patient 360 answer the same timeline; the zone maps must then be in order.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import duckdb
import pandas as pd
import pytest

from medlake.access import Principal, Role
from medlake.access.context import acting_as
from medlake.audit import EventFilter
from medlake.config import open_workspace
from medlake.service import audit
from medlake.service.ingest import ingest_paths
from medlake.service.lake_layout import (
    PERSON_TABLES,
    LayoutThread,
    layout_status,
    reorder_lake,
)
from medlake.service.patient360 import person_timeline

STEWARD = Principal("test-steward", Role.STEWARD)
AUDITOR = Principal("test-auditor", Role.AUDITOR)
COPIES = 12  # measurement x 13: several 122,880-row groups on the 400-patient lake


@pytest.fixture
def shuffled(hospital_lake, tmp_path: Path) -> Path:
    root = hospital_lake.copy(tmp_path / "ws")
    con = duckdb.connect(str(root / "lake.duckdb"))
    try:
        (rows,), = con.execute("select count(*) from measurement").fetchall()
        copies = max(COPIES, 300_000 // max(rows, 1))
        con.execute(
            "insert into measurement select measurement.* replace ("
            "measurement_id + k * 1000000000000 "
            f"as measurement_id) from measurement, range(1, {copies + 1}) t(k) "
            "order by hash(measurement_id, k)"
        )
        con.execute("checkpoint")
    finally:
        con.close()
    return root


def _tables(root: Path) -> dict[str, pd.DataFrame]:
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        out = {}
        for table in PERSON_TABLES:
            frame = con.execute(f'select * from "{table}"').df()
            out[table] = frame.sort_values(list(frame.columns)).reset_index(drop=True)
        return out
    finally:
        con.close()


def _persons(root: Path) -> list[int]:
    con = duckdb.connect(str(root / "lake.duckdb"), read_only=True)
    try:
        return [r[0] for r in con.execute(
            "select person_id from measurement group by 1 order by count(*) desc, 1 limit 3"
        ).fetchall()]  # fmt: skip
    finally:
        con.close()


def _status(root: Path) -> dict[str, tuple[int, int]]:
    with acting_as(STEWARD):
        return {t.table: (t.out_of_order, t.rows) for t in layout_status(root).tables}


@pytest.mark.slow
def test_reorder_keeps_every_table_and_the_timelines_and_orders_the_zone_maps(shuffled) -> None:
    late, rows = _status(shuffled)["measurement"]
    assert rows > 300_000
    assert late > rows / 2
    before = _tables(shuffled)
    persons = _persons(shuffled)
    with acting_as(AUDITOR):
        audited = len(audit.show_events(shuffled, EventFilter(action="lake.reorder")))
    with acting_as(STEWARD):
        timelines = [person_timeline(shuffled, p).as_dict() for p in persons]
        report = reorder_lake(shuffled)
    assert "measurement" in report.reordered
    after = _tables(shuffled)
    assert after.keys() == before.keys()
    for table, frame in before.items():
        pd.testing.assert_frame_equal(after[table], frame, obj=table)
    assert _status(shuffled)["measurement"] == (0, len(before["measurement"]))
    with acting_as(STEWARD):
        assert [person_timeline(shuffled, p).as_dict() for p in persons] == timelines
    with acting_as(AUDITOR):
        events = audit.show_events(shuffled, EventFilter(action="lake.reorder"))
    assert len(events) == audited + 1
    assert "measurement" in json.dumps(events[0]["detail"])
    # nothing left out of order past the threshold: a second run rewrites nothing
    with acting_as(STEWARD):
        assert reorder_lake(shuffled).reordered == []


def test_the_server_keeps_the_order_in_the_background(shuffled) -> None:
    before = _tables(shuffled)["measurement"]
    thread = LayoutThread(open_workspace(shuffled), interval_s=0.2).start()
    try:
        deadline = time.monotonic() + 60
        while not thread.runs and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        thread.stop()
    assert thread.runs
    assert "measurement" in thread.runs[0].reordered
    assert _status(shuffled)["measurement"][0] == 0
    pd.testing.assert_frame_equal(_tables(shuffled)["measurement"], before)


@pytest.mark.slow
def test_an_ingest_that_loads_rows_puts_the_tables_back_in_order(
    hospital_lake, shuffled, tmp_path: Path
) -> None:
    """New records (observations under new ids) appended to a lake whose measurement is
    out of order: at the end of the run the tables past the threshold are rewritten."""
    lines = (hospital_lake.hospital / "emr" / "Observation.ndjson").read_text().splitlines()
    fresh = []
    for line in lines[:40]:
        resource = json.loads(line)
        resource["id"] = f"{resource['id']}-new"
        fresh.append(json.dumps(resource))
    new = tmp_path / "emr-new" / "Observation.ndjson"
    new.parent.mkdir()
    new.write_text("\n".join(fresh) + "\n")
    before = _tables(shuffled)["measurement"]
    with acting_as(STEWARD):
        report = ingest_paths(shuffled, [new], format="fhir", source_system="emr")
    assert sum(f.summary.loaded for f in report.files if f.summary) > 0
    assert _status(shuffled)["measurement"][0] == 0
    after = _tables(shuffled)["measurement"]
    # the old rows are all there, unchanged, and the new ones beside them
    kept = after[after.measurement_id.isin(before.measurement_id)].reset_index(drop=True)
    pd.testing.assert_frame_equal(kept, before)
    assert len(after) > len(before)


def test_a_fhir_transaction_leaves_the_rewrite_to_the_server(shuffled) -> None:
    """A Bundle POSTed through the API is answered without paying for a table's rewrite
    (minutes on a large lake): the rows are loaded, the order is left to the server's
    maintenance thread, which the ingest CLI/job path would have run at once."""
    from medlake.service.fhir_transaction import post_bundle

    out_of_order = _status(shuffled)["measurement"][0]
    assert out_of_order > 0
    patient = {"resourceType": "Patient", "id": "layout-p1", "gender": "female",
               "birthDate": "1980-01-02"}  # fmt: skip
    observation = {
        "resourceType": "Observation", "id": "layout-o1", "status": "final",
        "subject": {"reference": "Patient/layout-p1"},
        "code": {"coding": [{"system": "http://loinc.org", "code": "4548-4"}]},
        "effectiveDateTime": "2024-05-06T07:08:09Z",
        "valueQuantity": {"value": 7.1, "unit": "%", "system": "http://unitsofmeasure.org",
                          "code": "%"},
    }  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"resource": r, "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"}}
        for r in (patient, observation)
    ]}  # fmt: skip
    rows_before = _status(shuffled)["measurement"][1]
    with acting_as(STEWARD):
        response = post_bundle(shuffled, bundle, source_system="emr")
    assert [e["response"]["status"][:3] for e in response["entry"]] == ["201", "201"]
    out_of_order_after, rows_after = _status(shuffled)["measurement"]
    assert rows_after == rows_before + 1
    assert out_of_order_after >= out_of_order  # not rewritten in the request
    with acting_as(AUDITOR):
        assert not audit.show_events(shuffled, EventFilter(action="lake.reorder"))

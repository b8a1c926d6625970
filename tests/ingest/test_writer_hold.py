"""A batch's rows of person tables are held and loaded in person order at its end.

The reference is the same ingest with nothing held (each chunk's rows loaded as they
come): the synthetic EMR in chunks of 400 resources, with a newer version of an
Observation and a retraction of another in later chunks of the same file (rows of the
batch replaced before it ends), must give the same rows in every table, quarantine
included; and with holding, the tables one batch fills are stored in person order
without the person-order rewrite, which the reference needs (rows held are loaded
before the batch replaces one: then in two runs, each in person order).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.ingest_workspace import ingest_only_workspace

from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace
from medlake.service.ingest import ingest_paths
from medlake.service.workspace import open_lake
from medlake.synth import generate_hospital

CLOCK = "2026-01-02T03:04:05.678000"
NOT_CONTENT = {"qc_run", "qc_result", "audit_event", "audit_head"}
ORDERED = ("measurement", "drug_exposure")


@pytest.fixture(scope="module")
def emr(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hospital")
    generate_hospital(out, patients=120, seed=7, workers=1)
    emr = out / "emr"
    observations = emr / "Observation.ndjson"
    lines = [json.loads(line) for line in observations.read_text().splitlines()]
    first, second = [r for r in lines if "valueQuantity" in r and "component" not in r][:2]
    newer = first | {"meta": {"versionId": "999999999999999"}}
    newer["valueQuantity"] = first["valueQuantity"] | {"value": 123.5}
    retracted = second | {"meta": {"versionId": "999999999999999"}, "status": "entered-in-error"}
    with observations.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(newer) + "\n")
        handle.write(json.dumps(retracted) + "\n")
        handle.write('{"resourceType": "Observation", "id": "broken"\n')  # malformed JSON
    return emr


def lake_state(root: Path) -> tuple[dict[str, object], dict[str, int]]:
    """Every table's rows (sorted), and per ordered table the rows stored right after
    a row of a larger person id."""
    state: dict[str, object] = {}
    late: dict[str, int] = {}
    with open_lake(open_workspace(root)) as engine:
        for table in sorted(set(engine.list_tables()) - NOT_CONTENT):
            rows = engine.execute(engine.table(table)).to_pylist()
            state[table] = sorted((tuple(row.items()) for row in rows), key=repr)
        for table in ORDERED:
            result = engine.run_sql(
                f"SELECT count(*) AS n FROM (SELECT person_id, lag(person_id) OVER "
                f"(ORDER BY rowid) AS before FROM {table}) WHERE before > person_id"
            )
            late[table] = result.column("n")[0].as_py()  # type: ignore[union-attr]
    return state, late


def test_held_rows_give_the_same_lake_in_person_order(
    emr: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from medlake.ingest.formats import reader_for

    monkeypatch.setenv(CLOCK_ENV, CLOCK)
    monkeypatch.setattr(reader_for("fhir"), "chunk_size", 400)
    monkeypatch.setattr("medlake.service.ingest._READ_IN_PROCESS_FROM", 1 << 60)
    monkeypatch.setattr("medlake.service.ingest_groups._GROUP_FILE_BYTES", 0)  # none grouped
    template = ingest_only_workspace(tmp_path / "template")
    held, loaded = tmp_path / "held", tmp_path / "loaded"
    shutil.copytree(template, held)
    shutil.copytree(template, loaded)
    reports = {}
    for root, limit in ((held, 384 << 20), (loaded, -1)):  # -1: every load released at once
        monkeypatch.setattr("medlake.ingest.writer._HOLD_BYTES", limit)
        reports[root] = ingest_paths(root, [emr], source_system="emr", person_order=False)
        assert not reports[root].failed
    summaries = [
        [s.as_dict() | {"seconds": 0, "records_per_second": 0} for s in reports[root].sources]
        for root in (held, loaded)
    ]
    assert summaries[0] == summaries[1]
    assert sum(s["updated"] for s in summaries[0]) >= 1  # rows of the batch replaced
    want, want_late = lake_state(loaded)
    got, got_late = lake_state(held)
    assert len(got["quarantine"]) >= 1  # type: ignore[arg-type]
    assert got == want
    assert all(want_late[table] > 0 for table in ORDERED)  # chunk by chunk: out of order
    assert got_late["drug_exposure"] == 0
    # Measurement rows were loaded (in order) before the newer version replaced one, and
    # the rest at the end: two runs in person order meet at most once out of order.
    assert got_late["measurement"] <= 1

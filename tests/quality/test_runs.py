"""Runs are kept with history; planted changes move exactly the checks they should.

On a private copy of the hospital lake: run, change known rows the way bad data would,
run again, and expect each targeted check's count to rise by the number of rows
changed; then the trend, the report and the commands over both runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from medlake.cli.main import app
from medlake.config import open_workspace
from medlake.service.quality import check_history, qc_summary, run_qc, write_report
from medlake.service.workspace import open_lake

pytestmark = pytest.mark.slow

CHANGES = {
    # check id: (SQL that plants the defect, rows it changes)
    "unknown_concept_record_completeness.person.gender_concept_id": (
        "UPDATE person SET gender_concept_id = 8551 WHERE person_id IN "
        "(SELECT person_id FROM person WHERE gender_concept_id <> 8551 ORDER BY person_id LIMIT 3)",
        3,
    ),
    "plausible_start_before_end.visit_occurrence.visit_start_date": (
        "UPDATE visit_occurrence SET visit_end_date = visit_start_date - INTERVAL 3 DAY "
        "WHERE visit_occurrence_id IN (SELECT visit_occurrence_id FROM visit_occurrence "
        "WHERE visit_end_date >= visit_start_date ORDER BY visit_occurrence_id LIMIT 4)",
        4,
    ),
    "plausible_value_range.measurement.value_as_number.LOINC:718-7": (
        "UPDATE measurement SET value_as_number = 1e6 WHERE measurement_id IN "
        "(SELECT m.measurement_id FROM measurement m JOIN concept c "
        "ON c.concept_id = m.measurement_concept_id WHERE c.concept_code = '718-7' "
        "AND m.value_as_number BETWEEN 20 AND 250 ORDER BY m.measurement_id LIMIT 5)",
        5,
    ),
    "is_primary_key.person.person_id": (
        "INSERT INTO person SELECT * FROM person ORDER BY person_id DESC LIMIT 2",
        2,
    ),
    "fk_domain.condition_occurrence.condition_concept_id": (
        "UPDATE condition_occurrence SET condition_concept_id = "
        "(SELECT concept_id FROM concept WHERE domain_id = 'Drug' ORDER BY concept_id LIMIT 1) "
        "WHERE condition_occurrence_id IN (SELECT condition_occurrence_id FROM "
        "condition_occurrence WHERE condition_concept_id <> 0 "
        "ORDER BY condition_occurrence_id LIMIT 6)",
        6,
    ),
}


@pytest.fixture(scope="module")
def runs(hospital_lake, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    workspace = open_workspace(hospital_lake.copy(tmp_path_factory.mktemp("qc") / "ws"))
    first = run_qc(workspace)
    with open_lake(workspace) as engine:
        for sql, _ in CHANGES.values():
            engine.run_sql(sql)
    second = run_qc(workspace)
    return workspace, first, second


def test_each_planted_change_moves_its_check_by_the_rows_changed(runs) -> None:  # type: ignore[no-untyped-def]
    _, first, second = runs
    before = {r.check.check_id: r for r in first.results}
    after = {r.check.check_id: r for r in second.results}
    moved = {
        check_id: (after[check_id].rows_violating or 0) - (before[check_id].rows_violating or 0)
        for check_id in CHANGES
    }
    assert moved == {check_id: rows for check_id, (_, rows) in CHANGES.items()}
    zero_tolerance = [c for c in CHANGES if after[c].check.threshold_pct == 0]
    assert zero_tolerance
    assert {c: after[c].status for c in zero_tolerance} == dict.fromkeys(zero_tolerance, "fail")


def test_every_check_keeps_a_history(runs) -> None:  # type: ignore[no-untyped-def]
    workspace, first, second = runs
    history = check_history(workspace, "is_primary_key.person.person_id")
    mine = [h for h in history if h["run_id"] in (first.run_id, second.run_id)]
    assert [h["run_id"] for h in mine] == [first.run_id, second.run_id]
    assert mine[1]["rows_violating"] - mine[0]["rows_violating"] == 2
    summary = qc_summary(workspace)
    assert summary["run"]["run_id"] == second.run_id
    assert summary["run"]["checks"] == len(second.results) >= 200
    assert summary["failed_total"] == sum(r.status == "fail" for r in second.results)


def test_ingest_runs_the_checks_of_what_it_loaded(hospital_lake) -> None:  # type: ignore[no-untyped-def]
    workspace = open_workspace(hospital_lake.workspace)
    with open_lake(workspace) as engine:
        runs = engine.execute(engine.table("qc_run")).to_pylist()
        batches = {r["batch_id"] for r in engine.execute(engine.table("ingest_batch")).to_pylist()}
    by_ingest = [r for r in runs if r["trigger"] == "ingest"]
    assert by_ingest
    assert all(r["batch_id"] in batches for r in by_ingest)


def test_report_is_one_offline_html_file(runs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workspace, _, second = runs
    out = write_report(workspace, tmp_path / "qc.html")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert "plotly" in text.lower()
    # plotly.js is inlined: no script is loaded from anywhere.
    assert "<script src" not in text
    assert "function" in text.split("</script>")[0]  # the first script is plotly.js itself
    assert second.run_id in text
    assert "is_primary_key.person.person_id" in text
    assert text.count('class="plotly-graph-div"') >= 3


def test_commands(runs, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    workspace, _, _ = runs
    runner = CliRunner()
    ws = ["-w", str(workspace.root)]
    result = runner.invoke(app, ["qc", "checks", "--type", "is_primary_key", "--json", *ws])
    assert result.exit_code == 0, result.output
    assert all(c["type"] == "is_primary_key" for c in json.loads(result.output))
    result = runner.invoke(app, ["qc", "run", "--table", "person", "--json", *ws])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.output)
    assert 0 < summary["run"]["checks"] < 200
    result = runner.invoke(app, ["qc", "history", "is_primary_key.person.person_id", "--json", *ws])
    assert len(json.loads(result.output)) >= 3
    result = runner.invoke(app, ["qc", "report", "--out", str(tmp_path / "r.html"), *ws])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "r.html").stat().st_size > 1_000_000  # plotly.js is in it

"""``medlake cohort count`` and ``create``: what a researcher sees, and what gets stored."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from medlake.cli.main import app
from medlake.cohort import example_path
from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.privacy import AttritionStep, suppress_attrition
from medlake.service.cohort import cohort_members, count_cohort, load_definition

DEMO = str(example_path("t2d_hba1c_metformin"))


def invoke(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    return result


def test_count_shows_suppressed_counts_by_default(hospital_lake: Any) -> None:
    workspace = str(hospital_lake.workspace)
    exact = count_cohort(hospital_lake.workspace, load_definition(Path(DEMO)), exact=True)
    result = invoke("cohort", "count", DEMO, "--workspace", workspace, "--json")
    assert result.exit_code == 0, result.output
    shown = json.loads(result.output)
    steps = [AttritionStep(r.name, r.remaining, r.excluded_alone) for r in exact.rules]
    assert shown["exact"] is False
    assert {k: v for k, v in shown.items() if k not in ("name", "exact")} == suppress_attrition(
        exact.initial, steps, 5
    ).to_json()
    # a small cell is on screen as <5, never as its number
    small = [r for r in exact.rules if 0 < r.excluded < 5]
    table = invoke("cohort", "count", DEMO, "--workspace", workspace)
    assert table.exit_code == 0, table.output
    assert small, "the demo definition has a rule that excludes fewer than 5"
    assert "<5" in table.output


def test_count_exact_prints_the_attrition_table(hospital_lake: Any, tmp_path: Path) -> None:
    from medlake.service import access

    root = hospital_lake.copy(tmp_path / "ws")
    access.add_user(root, "li", "researcher", as_user=access.login_name())
    refused = invoke("cohort", "count", DEMO, "-w", str(root), "--exact", "--as", "li")
    assert refused.exit_code != 0
    assert "may not see exact small counts" in str(refused.exception)
    access.add_user(root, "wang", "steward", as_user=access.login_name())
    workspace = str(root)
    exact = count_cohort(root, load_definition(Path(DEMO)), exact=True)
    result = invoke("cohort", "count", DEMO, "-w", workspace, "--exact", "--json", "--as", "wang")
    assert result.exit_code == 0, result.output
    printed = json.loads(result.output)
    assert printed["initial"] == exact.initial
    assert [r["remaining"] for r in printed["rules"]] == [r.remaining for r in exact.rules]
    table = invoke("cohort", "count", "t2d_hba1c_metformin", "-w", workspace, "--exact",
                   "--as", "wang")  # fmt: skip
    assert table.exit_code == 0, table.output
    for rule in exact.rules:
        assert rule.name in table.output
    assert f"persons in the cohort: {exact.final}" in table.output


def test_create_stores_the_members_and_replaces_by_name(hospital_lake: Any, tmp_path: Path) -> None:
    workspace = hospital_lake.copy(tmp_path / "workspace")
    members = cohort_members(workspace, load_definition(Path(DEMO))).to_pylist()
    from medlake.service import access

    access.add_user(workspace, "wang", "steward", as_user=access.login_name())
    args = ["cohort", "create", DEMO, "--name", "demo", "-w", str(workspace), "--json"]
    refused = invoke(*args)  # as the login, the workspace's admin: no patient data
    assert "root (admin) may not read de-identified" in str(refused.exception).replace(
        access.login_name(), "root")
    for _ in range(2):  # the second run replaces the first
        result = invoke("--as", "wang", *args)
        assert result.exit_code == 0, result.output
    created = json.loads(result.output)
    assert created["cohort_definition_id"] == 1
    with open_workspace_engine(open_workspace(workspace)) as engine:
        stored = engine.execute(engine.table("cohort")).to_pylist()
        definitions = engine.execute(engine.table("cohort_definition")).to_pylist()
    assert sorted(
        (r["subject_id"], r["cohort_start_date"], r["cohort_end_date"]) for r in stored
    ) == sorted((m["person_id"], m["cohort_start_date"], m["cohort_end_date"]) for m in members)
    assert {r["cohort_definition_id"] for r in stored} == {1}
    assert [d["cohort_definition_name"] for d in definitions] == ["demo"]
    assert json.loads(definitions[0]["cohort_definition_syntax"])["name"].startswith("Type 2")


def test_bad_definitions_fail_with_one_line(hospital_lake: Any, tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"name": "x", "primary_criteria": {"criteria": [
        {"domain": "condition_occurrence", "codeset_id": 9}]}}))  # fmt: skip
    result = invoke("cohort", "count", str(bad), "-w", str(hospital_lake.workspace))
    assert result.exit_code != 0
    assert "codeset_id 9 names no concept set" in str(result.exception)
    circe = tmp_path / "atlas.json"
    circe.write_text(json.dumps({"PrimaryCriteria": {"CriteriaList": [{"PayerPlanPeriod": {}}]}}))
    result = invoke("cohort", "count", "--circe", str(circe), "-w", str(hospital_lake.workspace))
    assert "$.PrimaryCriteria.CriteriaList[0].PayerPlanPeriod" in str(result.exception)

"""Saved cohort definitions: what the builder stores is what the lake's OMOP tables hold.

Each step is checked against the ``cohort_definition`` and ``cohort`` rows read back
from the lake directly (not through the functions under test), on a private copy of
the shared hospital.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from medlake.cohort import example_path
from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.errors import NotFoundError, UsageError
from medlake.service.cohort import count_cohort, create_cohort, load_definition, parse_definition
from medlake.service.cohort_definitions import (
    count_definition,
    delete_definition,
    get_definition,
    list_definitions,
    save_definition,
    update_definition,
)


@pytest.fixture(scope="module")
def workspace(hospital_lake: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return hospital_lake.copy(tmp_path_factory.mktemp("saved-definitions") / "ws")


def lake_rows(workspace: Path, table: str) -> list[dict[str, Any]]:
    with open_workspace_engine(open_workspace(workspace)) as engine:
        return engine.execute(engine.table(table)).to_pylist()


DEMO = load_definition(example_path("t2d_hba1c_metformin"))
ADULTS = parse_definition(
    {
        "name": "adult diabetics",
        "description": "first T2D diagnosis at 18 or over",
        "concept_sets": [
            {"id": 1, "items": [{"vocabulary_id": "ICD10CM", "concept_code": "E11",
                                 "include_descendants": True}]},
        ],
        "primary_criteria": {"criteria": [{"domain": "condition_occurrence", "codeset_id": 1}]},
        "inclusion_rules": [
            {"name": "adult", "expression": {"demographics": [{"age": {"op": "gte", "value": 18}}]}}
        ],
    }
)  # fmt: skip


@pytest.mark.slow
def test_save_list_get_update_delete_round_trip_through_cohort_definition(
    workspace: Path,
) -> None:
    first = save_definition(workspace, "T2D on metformin", DEMO)
    second = save_definition(workspace, "adults", ADULTS.model_dump(mode="json"))
    assert second != first
    rows = {r["cohort_definition_id"]: r for r in lake_rows(workspace, "cohort_definition")}
    assert rows[first]["cohort_definition_name"] == "T2D on metformin"
    stored = parse_definition(json.loads(rows[first]["cohort_definition_syntax"]))
    assert stored == DEMO.model_copy(update={"name": "T2D on metformin"})
    assert rows[second]["cohort_definition_description"] == ADULTS.description

    listed = {d.id: d for d in list_definitions(workspace)}
    assert set(listed) == set(rows)
    assert listed[second].name == "adults"
    assert listed[second].definition is None
    assert not listed[first].has_members

    got = get_definition(workspace, second)
    assert got.definition == ADULTS.model_copy(update={"name": "adults"})
    assert json.loads(json.dumps(got.as_dict()))["definition"]["name"] == "adults"

    with pytest.raises(UsageError, match="exists"):
        save_definition(workspace, "adults", DEMO)

    # materializing under the saved name reuses the saved id; updating drops the members
    created = create_cohort(workspace, DEMO, name="T2D on metformin")
    assert created.cohort_definition_id == first
    assert {r["cohort_definition_id"] for r in lake_rows(workspace, "cohort")} == {first}
    assert get_definition(workspace, first).has_members

    updated = update_definition(workspace, first, ADULTS, name="adults again")
    assert updated.definition == ADULTS.model_copy(update={"name": "adults again"})
    rows = {r["cohort_definition_id"]: r for r in lake_rows(workspace, "cohort_definition")}
    assert rows[first]["cohort_definition_name"] == "adults again"
    assert lake_rows(workspace, "cohort") == []
    with pytest.raises(UsageError, match="exists"):
        update_definition(workspace, first, ADULTS, name="adults")

    create_cohort(workspace, ADULTS, name="adults")
    delete_definition(workspace, second)
    assert second not in {
        r["cohort_definition_id"] for r in lake_rows(workspace, "cohort_definition")
    }
    assert second not in {r["cohort_definition_id"] for r in lake_rows(workspace, "cohort")}
    with pytest.raises(NotFoundError):
        get_definition(workspace, second)
    with pytest.raises(NotFoundError):
        delete_definition(workspace, second)


def test_count_definition_by_id_object_or_json_equals_count_cohort(workspace: Path) -> None:
    saved = save_definition(workspace, "counted", DEMO)
    expected = count_cohort(workspace, DEMO, exact=True).as_dict()
    expected["name"] = "counted"
    assert count_definition(workspace, saved, exact=True) == expected
    by_json = count_definition(workspace, DEMO.model_dump(mode="json"), exact=True)
    assert by_json == count_cohort(workspace, DEMO, exact=True).as_dict()
    shown = count_definition(workspace, DEMO)
    assert shown == json.loads(json.dumps(shown))  # plain JSON
    assert shown["exact"] is False

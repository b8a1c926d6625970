"""The statement cache: a definition counted again is not compiled again, and never stale."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from medlake.cohort import example_path
from medlake.config import open_workspace
from medlake.engine import open_workspace_engine
from medlake.service import cohort_query, cohort_templates
from medlake.service.cohort import count_cohort, load_definition, parse_definition
from medlake.service.cohort_query import clear_cache

T2D = parse_definition(
    {
        "name": "type 2 diabetes",
        "concept_sets": [
            {"id": 1, "items": [{"vocabulary_id": "ICD10CM", "concept_code": "E11",
                                 "include_descendants": True}]},
        ],
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
        },
    }
)  # fmt: skip


def test_a_definition_counted_again_is_not_compiled_again(
    hospital_lake: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = load_definition(example_path("t2d_hba1c_metformin"))
    clear_cache()
    first = count_cohort(hospital_lake.workspace, definition, exact=True)

    def compile_again(*args: object) -> None:
        raise AssertionError("the statement was compiled again")

    monkeypatch.setattr(cohort_query, "stitched_statement", compile_again)
    monkeypatch.setattr(cohort_templates, "stitched_statement", compile_again)
    assert count_cohort(hospital_lake.workspace, definition, exact=True) == first


@pytest.mark.slow
def test_a_changed_vocabulary_gets_a_new_statement(hospital_lake: Any, tmp_path: Path) -> None:
    workspace = hospital_lake.copy(tmp_path / "ws")
    before = count_cohort(workspace, T2D, exact=True)
    with open_workspace_engine(open_workspace(workspace)) as engine:
        concept = engine.table("concept")
        (e11,) = engine.execute(
            concept.filter((concept.vocabulary_id == "ICD10CM") & (concept.concept_code == "E11"))
            .concept_id
        ).column(0).to_pylist()  # fmt: skip
        ancestor = engine.table("concept_ancestor")
        # E11's descendants other than itself leave the hierarchy: the set shrinks to E11.
        engine.delete_where(
            "concept_ancestor",
            (ancestor.ancestor_concept_id == e11) & (ancestor.descendant_concept_id != e11),
        )
    after = count_cohort(workspace, T2D, exact=True)
    clear_cache()
    assert after == count_cohort(workspace, T2D, exact=True)  # compiled afresh
    assert after.initial < before.initial

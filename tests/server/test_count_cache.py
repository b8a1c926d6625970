"""Cohort counts through the API with the result cache on: a count served from the cache is
still checked, small-cell suppressed and its refusals audited, request by request."""

from __future__ import annotations

from typing import Any

import pytest
from tests.server.conftest import Api, is_problem

from medlake.config import open_workspace
from medlake.privacy import is_small
from medlake.service.cohort import count_cohort, parse_definition
from medlake.service.cohort_query import cache_stats
from medlake.service.workspace import open_lake


def t2d_aged(years: int) -> dict[str, Any]:
    return {
        "name": f"t2d aged {years}+",
        "concept_sets": [{"id": 1, "items": [{"vocabulary_id": "ICD10CM", "concept_code": "E11",
                                              "include_descendants": True}]}],
        "primary_criteria": {
            "criteria": [{"domain": "condition_occurrence", "codeset_id": 1, "first": True}]
        },
        "inclusion_rules": [{"name": f"aged {years}+", "expression": {
            "demographics": [{"age": {"op": "gte", "value": years}}]}}],
    }  # fmt: skip


def small_cell_definition(api: Api) -> tuple[dict[str, Any], int]:
    """A definition whose final count is a small cell in this lake (looked up, not assumed);
    counting it here, exactly, fills the cache."""
    for years in range(110, 0, -1):
        definition = t2d_aged(years)
        final = count_cohort(api.root, parse_definition(definition), exact=True).final
        if is_small(final):
            return definition, final
    raise AssertionError("no age bound leaves a small cell")  # pragma: no cover


def denied(api: Api, actor: str) -> int:
    with open_lake(open_workspace(api.root)) as engine:
        events = engine.table("audit_event")
        return engine.count(events.filter((events.outcome == "denied") & (events.actor == actor)))


@pytest.mark.acting_as("steward")
def test_a_cached_count_is_suppressed_and_refused_request_by_request(api: Api) -> None:
    definition, final = small_cell_definition(api)
    computed = cache_stats().computed
    exact = api.ok(api.post("steward", "/cohorts/count?exact=true", json=definition))
    assert (exact["exact"], exact["final"]) == (True, final)
    shown = api.ok(api.post("researcher", "/cohorts/count", json=definition))
    assert shown["exact"] is False
    assert shown["final"] == "<5"  # the cached exact row is never shown to a researcher
    assert final not in [rule["remaining"] for rule in shown["rules"]]
    before = denied(api, "researcher1")
    for _ in range(2):
        is_problem(api.post("researcher", "/cohorts/count?exact=true", json=definition), 403)
    assert denied(api, "researcher1") == before + 2
    assert cache_stats().computed == computed  # every count above came from the cache

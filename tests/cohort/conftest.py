"""Fixtures for the cohort tests: the shared synthetic hospital, read once into pandas."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from tests.cohort.reference import Lake

from medlake.service.cohort import CohortCount, count_cohort, parse_definition


@pytest.fixture(scope="session")
def lake(hospital_lake: Any) -> Lake:
    return Lake(hospital_lake.workspace)


@pytest.fixture(scope="session")
def count(hospital_lake: Any) -> Callable[[dict[str, Any]], CohortCount]:
    def run(definition: dict[str, Any]) -> CohortCount:
        return count_cohort(hospital_lake.workspace, parse_definition(definition), exact=True)

    return run

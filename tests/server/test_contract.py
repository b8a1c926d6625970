"""The API contract, fuzzed by schemathesis from the OpenAPI document: no generated
request (valid or not) makes a 500 (sent as a steward; as a researcher where it
would start background work), and every error is a
problem document. Examples per operation are bounded so it runs in well under a minute.

Operations are driven one by one with their Hypothesis strategy (schemathesis's pytest
plugin does not load under this pytest), all failures reported together."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from tests.server.conftest import Api, make_users

from medlake.server.app import create_app

EXAMPLES = 3
#: Operations that start background work are fuzzed as a researcher outside any project
#: (refused before any work starts, or run nothing): a steward's random but valid QC or
#: GWAS requests would run for minutes.
STARTS_WORK = ("/jobs", "/qc/runs", "/analyses/gwas", "/analyses/de", "/uploads",
               "/cohorts/extract")  # fmt: skip


@pytest.fixture(scope="module")
def api(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """A workspace of its own: schemathesis runs the app's lifespan itself (stopping its
    job workers at the end), which must not touch the other tests' server."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("contract") / "ws")
    tokens = make_users(root)
    with TestClient(create_app(root)) as client:
        yield Api(root, tokens, client)


@pytest.mark.slow
def test_no_generated_request_makes_a_server_error(api: Api) -> None:
    schema = schemathesis.openapi.from_asgi("/api/v1/openapi.json", api.client.app)
    failures: list[str] = []
    operations = 0
    for found in schema.get_all_operations():
        operation = found.ok()
        operations += 1

        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case: Any) -> None:
            starts = case.method == "POST" and case.path.endswith(STARTS_WORK)
            for role in ("researcher",) if starts else ("steward",):
                response = case.call(headers=api.headers(role))
                where = f"{role} {case.method} {case.formatted_path}"
                if response.status_code >= 500:
                    failures.append(f"{where}: {response.status_code} {response.text[:300]}")
                elif response.status_code >= 400 and "problem+json" not in str(
                    response.headers.get("content-type")
                ):
                    failures.append(f"{where}: {response.status_code} is not a problem document")

        check()
    assert operations >= 30
    assert not failures, "\n".join(sorted(set(failures)))

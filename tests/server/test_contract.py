"""The API contract, fuzzed by schemathesis from the OpenAPI document: no generated
request (valid or not) makes a 500 (sent as a steward; as a researcher where it
would start background work), and every error is a
problem document. Examples per operation are bounded so it runs in well under a minute.

Operations are driven one by one with their Hypothesis strategy (schemathesis's pytest
plugin does not load under this pytest), all failures reported together."""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from tests.server.conftest import Api

EXAMPLES = 3
#: Operations that start background work are fuzzed as a researcher outside any project
#: (refused before any work starts, or run nothing): a steward's random but valid QC or
#: GWAS requests would run for minutes.
STARTS_WORK = ("/jobs", "/qc/runs", "/analyses/gwas", "/analyses/de", "/uploads",
               "/cohorts/extract")  # fmt: skip


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

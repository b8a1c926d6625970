"""The HTTP API on a real ingested workspace: sign-in, roles on every route, problem
documents, cohort counts equal to the service's, and a real `medlake serve` process."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from tests.serve_process import medlake_serve

from medlake.cohort import examples
from medlake.config import open_workspace
from medlake.server.app import create_app
from medlake.service import access
from medlake.service.cohort import count_cohort, parse_definition
from medlake.service.workspace import open_lake

EXAMPLE = json.loads((Path(examples.__file__).parent / "t2d_hba1c_metformin.json").read_text())
ROLES = ("steward", "researcher", "auditor")


@pytest.fixture(scope="module")
def served(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """A private copy of the test hospital with one user and token per role."""
    root = hospital_lake.copy(tmp_path_factory.mktemp("api") / "ws")
    tokens = {"admin": access.issue_token(root, access.login_name()).token}
    for role in ROLES:
        access.add_user(root, f"{role}1", role)
        tokens[role] = access.issue_token(root, f"{role}1").token
    return root, tokens


@pytest.fixture(scope="module")
def client(served) -> TestClient:
    return TestClient(create_app(served[0]))


def auth(tokens: dict[str, str], role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {tokens[role]}"}


def is_problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= set(body)
    return body


def test_health_needs_no_sign_in_and_everything_else_does(client, served) -> None:
    assert client.get("/api/v1/health").json()["status"] == "ok"
    body = is_problem(client.get("/api/v1/me"), 401)
    assert "Bearer" in body["detail"]
    is_problem(client.get("/api/v1/me", headers={"Authorization": "Bearer mlk_00000000_x"}), 401)
    me = client.get("/api/v1/me", headers=auth(served[1], "researcher")).json()
    assert me == {"user": "researcher1", "role": "researcher", "projects": []}


def test_openapi_has_stable_unique_operation_ids(client) -> None:
    spec = client.get("/api/v1/openapi.json").json()
    ids = [op["operationId"] for path in spec["paths"].values() for op in path.values()]
    assert len(ids) == len(set(ids))
    assert {"health", "me", "lake", "list_quarantine", "get_quarantine_entry",
            "count_cohort"} <= set(ids)  # fmt: skip


def test_roles_are_enforced_on_every_route_with_audited_refusals(client, served) -> None:
    root, tokens = served
    assert client.get("/api/v1/lake", headers=auth(tokens, "researcher")).status_code == 200
    body = is_problem(client.get("/api/v1/lake", headers=auth(tokens, "auditor")), 403)
    assert body["detail"].startswith("auditor1 (auditor) may not count cohorts")
    listed = client.get("/api/v1/quarantine", headers=auth(tokens, "admin"))
    assert listed.status_code == 200
    entries = listed.json()
    assert entries
    assert all("raw_payload" not in e for e in entries)
    is_problem(client.get("/api/v1/quarantine", headers=auth(tokens, "researcher")), 403)
    one = f"/api/v1/quarantine/{entries[0]['quarantine_id']}"
    assert "raw_payload" in client.get(one, headers=auth(tokens, "steward")).json()
    is_problem(client.get(one, headers=auth(tokens, "admin")), 403)  # admins: no patient data
    with open_lake(open_workspace(root)) as engine:
        events = engine.execute(engine.table("audit_event")).to_pylist()
    denied = {(e["actor"], e["action"]) for e in events if e["outcome"] == "denied"}
    assert {("auditor1", "count"), ("researcher1", "ingest"),
            (access.login_name(), "read_identified")} <= denied  # fmt: skip


@pytest.mark.acting_as("steward")  # the test's own exact count: a steward's
def test_cohort_counts_match_the_service_and_small_cells_stay_hidden(client, served) -> None:
    root, tokens = served
    definition = parse_definition(EXAMPLE)
    response = client.post("/api/v1/cohorts/count", json=EXAMPLE,
                           headers=auth(tokens, "researcher"))  # fmt: skip
    assert response.status_code == 200, response.text
    assert response.json() == json.loads(json.dumps(count_cohort(root, definition).as_dict()))
    is_problem(client.post("/api/v1/cohorts/count?exact=true", json=EXAMPLE,
                           headers=auth(tokens, "researcher")), 403)  # fmt: skip
    exact = client.post("/api/v1/cohorts/count?exact=true", json=EXAMPLE,
                        headers=auth(tokens, "steward")).json()  # fmt: skip
    expected = count_cohort(root, definition, exact=True)
    assert (exact["exact"], exact["initial"], exact["final"]) == (
        True, expected.initial, expected.final)  # fmt: skip


def test_a_bad_definition_is_a_422_problem_naming_the_field(client, served) -> None:
    body = is_problem(client.post("/api/v1/cohorts/count", json={"name": 3},
                                  headers=auth(served[1], "researcher")), 422)  # fmt: skip
    assert body["detail"].startswith("request body: ")


def test_patient_timeline_is_for_stewards_and_every_read_is_audited(client, served) -> None:
    root, tokens = served
    with open_lake(open_workspace(root)) as engine:
        person = engine.scalar(engine.table("measurement").person_id.min())
    is_problem(client.get(f"/api/v1/persons/{person}/timeline",
                          headers=auth(tokens, "researcher")), 403)  # fmt: skip
    response = client.get(f"/api/v1/persons/{person}/timeline", headers=auth(tokens, "steward"))
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["person_id"] == person
    assert body["counts"]["measurement"] >= 1
    assert all(item["source_record_id"] for item in body["items"] if item["kind"] != "death")
    with open_lake(open_workspace(root)) as engine:
        events = engine.execute(engine.table("audit_event")).to_pylist()
    reads = [e for e in events if e["action"] == "read" and e["actor"] == "steward1"]
    assert reads
    assert json.loads(reads[-1]["detail"])["person_ids"] == [person]
    is_problem(client.get("/api/v1/persons/1/timeline", headers=auth(tokens, "steward")), 400)


def test_medlake_serve_answers_over_http(served) -> None:
    root, tokens = served
    with medlake_serve(root, timeout=60) as server:
        assert httpx.get(f"{server.api}/health").json()["status"] == "ok"
        me = httpx.get(f"{server.api}/me", headers=auth(tokens, "steward")).json()
        assert me["role"] == "steward"

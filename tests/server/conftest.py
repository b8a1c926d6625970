"""A served copy of the test hospital for the API tests: one user and token per role, a
project the researcher belongs to, and a client whose app runs its job workers."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from medlake.server.app import create_app
from medlake.service import access

PROJECT = "p1"
ROLES = ("steward", "researcher", "auditor")


@dataclass
class Api:
    root: Path
    tokens: dict[str, str]
    client: TestClient

    def headers(self, role: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[role]}"}

    def get(self, role: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(f"/api/v1{url}", headers=self.headers(role), **kwargs)

    def post(self, role: str, url: str, **kwargs: Any) -> httpx.Response:
        return self.client.post(f"/api/v1{url}", headers=self.headers(role), **kwargs)

    def ok(self, response: httpx.Response, status: int = 200) -> Any:
        assert response.status_code == status, response.text
        return response.json()

    def wait(self, role: str, job_id: str, timeout: float = 120.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.ok(self.get(role, f"/jobs/{job_id}"))
            if job["status"] in ("succeeded", "failed", "cancelled"):
                return job  # type: ignore[no-any-return]
            assert time.monotonic() < deadline, job
            time.sleep(0.1)


def is_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert {"type", "title", "detail", "instance"} <= set(body)
    return body


def make_users(root: Path) -> dict[str, str]:
    tokens = {"admin": access.issue_token(root, access.login_name()).token}
    for role in ROLES:
        access.add_user(root, f"{role}1", role)
        tokens[role] = access.issue_token(root, f"{role}1").token
    access.create_project(root, PROJECT, "Test project")
    access.add_member(root, PROJECT, "researcher1")
    return tokens


@pytest.fixture(scope="session")
def api(hospital_lake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    from medlake.access.context import acting_as
    from medlake.service.empi import link_workspace

    root = hospital_lake.copy(tmp_path_factory.mktemp("api") / "ws")
    tokens = make_users(root)
    # Link with a narrow "certain" band, so the small hospital leaves pairs to review.
    toml = root / "medlake.toml"
    toml.write_text(toml.read_text().replace("link_threshold = 0.99", "link_threshold = 0.99999"))
    with acting_as("steward1"):
        link_workspace(root, full=True)
    with TestClient(create_app(root)) as client:  # runs the app's lifespan: job workers
        yield Api(root, tokens, client)

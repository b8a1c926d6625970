"""Against real `medlake serve` processes: a job submitted over HTTP survives the server
being killed (SIGKILL mid-run): the next server marks it failed with the reason, or it
had finished; it is never left queued or running, never lost."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from tests.serve_process import start_medlake_serve
from tests.server.conftest import make_users

from medlake.service.jobs import INTERRUPTED


@pytest.mark.slow
def test_a_job_outlives_a_killed_server(hospital_lake, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    tokens = make_users(root)
    headers = {"Authorization": f"Bearer {tokens['steward']}"}
    server = start_medlake_serve(root)
    base = server.api
    try:
        job = httpx.post(f"{base}/qc/runs", json={}, headers=headers).json()
        deadline = time.monotonic() + 60
        while (status := httpx.get(f"{base}/jobs/{job['job_id']}",
                                   headers=headers).json()["status"]) == "queued":  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.stop(kill=True)  # SIGKILL: no shutdown hook runs
    server = start_medlake_serve(root)
    base = server.api
    try:
        after = httpx.get(f"{base}/jobs/{job['job_id']}", headers=headers).json()
        assert after["status"] in ("failed", "succeeded"), (status, after)
        if after["status"] == "failed":
            assert after["error"] == INTERRUPTED
        # the restarted server runs new jobs
        again = httpx.post(f"{base}/qc/runs", json={"tables": ["person"]}, headers=headers)
        assert again.status_code == 202
    finally:
        server.stop()

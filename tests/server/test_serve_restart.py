"""Against real `medlake serve` processes: a job submitted over HTTP survives the server
being killed (SIGKILL mid-run): the next server marks it failed with the reason, or it
had finished; it is never left queued or running, never lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.server.conftest import make_users

from medlake.service.jobs import INTERRUPTED


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _serve(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "medlake.cli.main", "serve", "--port", str(port),
         "--workspace", str(root)],
        stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    deadline = time.monotonic() + 90
    while True:
        try:
            httpx.get(f"{base}/health").raise_for_status()
            return server, base
        except httpx.HTTPError:
            assert server.poll() is None, "the server exited"
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.3)


@pytest.mark.slow
def test_a_job_outlives_a_killed_server(hospital_lake, tmp_path: Path) -> None:
    root = hospital_lake.copy(tmp_path / "ws")
    tokens = make_users(root)
    headers = {"Authorization": f"Bearer {tokens['steward']}"}
    server, base = _serve(root)
    try:
        job = httpx.post(f"{base}/qc/runs", json={}, headers=headers).json()
        deadline = time.monotonic() + 60
        while (status := httpx.get(f"{base}/jobs/{job['job_id']}",
                                   headers=headers).json()["status"]) == "queued":  # fmt: skip
            assert time.monotonic() < deadline
            time.sleep(0.05)
    finally:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=30)
    server, base = _serve(root)
    try:
        after = httpx.get(f"{base}/jobs/{job['job_id']}", headers=headers).json()
        assert after["status"] in ("failed", "succeeded"), (status, after)
        if after["status"] == "failed":
            assert after["error"] == INTERRUPTED
        # the restarted server runs new jobs
        again = httpx.post(f"{base}/qc/runs", json={"tables": ["person"]}, headers=headers)
        assert again.status_code == 202
    finally:
        server.terminate()
        server.wait(timeout=30)

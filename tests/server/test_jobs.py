"""Background jobs: run with progress, cancel (queued and running), visibility by role,
and a restarted server that loses none (queued ones run, running ones are marked failed)."""

from __future__ import annotations

import threading
import time

import pytest
from fastapi.testclient import TestClient
from tests.server.conftest import PROJECT, Api, is_problem

from medlake.access import Permission, Principal, Role
from medlake.config import open_workspace
from medlake.server.app import create_app
from medlake.service import jobs as job_service
from medlake.service import quality as quality_service
from medlake.service.jobs import JobContext, JobKind, register_kind
from medlake.service.workspace import open_lake

STEPS = 50
started = threading.Event()


def _wait_until_cancelled(job: JobContext) -> dict[str, object]:
    """A job that reports progress until it is cancelled (or STEPS steps pass)."""
    started.set()
    for step in range(STEPS):
        job.progress(step, STEPS)
        time.sleep(float(job.params.get("sleep", 0.2)))
    job.progress(STEPS, STEPS)
    return {"steps": STEPS}


register_kind(JobKind("test-wait", Permission.RUN_QC, _wait_until_cancelled))


@pytest.mark.acting_as("steward")
def test_a_qc_run_job_reports_progress_and_its_result_is_the_run(api: Api) -> None:
    job = api.ok(api.post("steward", "/qc/runs", json={"tables": ["person", "measurement"]}), 202)
    assert job["status"] == "queued"
    assert job["kind"] == "qc"
    done = api.wait("steward", job["job_id"])
    assert done["status"] == "succeeded", done
    assert done["progress"]["done"] == done["progress"]["total"] > 0
    assert done["progress"]["fraction"] == 1.0
    assert done["result_url"] == f"/api/v1/jobs/{job['job_id']}"
    run_id = done["result"]["run"]["run_id"]
    assert api.ok(api.get("steward", f"/qc?run_id={run_id}")) == done["result"]
    summary = quality_service.qc_summary(api.root, run_id)
    assert done["result"]["counts"] == summary["counts"]
    assert done["progress"]["total"] == summary["run"]["checks"]


def test_jobs_are_listed_to_their_owner_and_to_stewards_only(api: Api) -> None:
    mine = api.ok(api.post("admin", "/qc/runs", json={"tables": ["person"]}), 202)
    api.wait("admin", mine["job_id"])
    admin_jobs = {j["job_id"] for j in api.ok(api.get("admin", "/jobs"))}
    steward_jobs = {j["job_id"] for j in api.ok(api.get("steward", "/jobs?kind=qc"))}
    researcher_jobs = api.ok(api.get("researcher", "/jobs"))
    assert mine["job_id"] in admin_jobs
    assert mine["job_id"] in steward_jobs
    assert all(j["submitted_by"] == "researcher1" for j in researcher_jobs)
    is_problem(api.get("researcher", f"/jobs/{mine['job_id']}"), 404)
    is_problem(api.get("auditor", "/jobs/nope"), 404)
    # the kind's permission is checked at submission (and the refusal audited)
    body = is_problem(api.post("researcher", "/qc/runs", json={}), 403)
    assert "run data-quality checks" in body["detail"]
    is_problem(api.post("researcher", "/jobs", json={"kind": "gwas", "params": {}}), 400)


def test_a_running_job_stops_at_its_next_progress_report_when_cancelled(api: Api) -> None:
    runner = api.client.app.state.jobs  # type: ignore[attr-defined]
    steward = Principal("steward1", Role.STEWARD)
    started.clear()
    job = runner.submit("test-wait", {"sleep": 0.2}, principal=steward)
    assert started.wait(30)
    deadline = time.monotonic() + 20
    while True:  # progress is written at most every half second
        running = api.ok(api.get("steward", f"/jobs/{job['job_id']}"))
        if running["progress"]["done"] or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert running["status"] == "running"
    assert 0 < running["progress"]["done"] < STEPS
    is_problem(api.post("researcher", f"/jobs/{job['job_id']}/cancel"), 404)
    cancelling = api.ok(api.post("steward", f"/jobs/{job['job_id']}/cancel"))
    assert cancelling["cancel_requested"]
    done = api.wait("steward", job["job_id"], timeout=10)
    assert done["status"] == "cancelled"
    assert done["progress"]["done"] < STEPS


def test_a_queued_job_is_cancelled_before_it_runs(api: Api) -> None:
    runner = api.client.app.state.jobs  # type: ignore[attr-defined]
    steward = Principal("steward1", Role.STEWARD)
    # fill both workers, then queue one more and cancel it
    busy = [runner.submit("test-wait", {"sleep": 0.05}, principal=steward) for _ in range(2)]
    waiting = runner.submit("test-wait", {}, principal=steward)
    cancelled = api.ok(api.post("steward", f"/jobs/{waiting['job_id']}/cancel"))
    assert cancelled["status"] == "cancelled"
    assert cancelled["started_at"] is None
    for job in busy:
        api.ok(api.post("steward", f"/jobs/{job['job_id']}/cancel"))
    assert runner.wait_idle(30)
    assert api.ok(api.get("steward", f"/jobs/{waiting['job_id']}"))["started_at"] is None


def test_a_restarted_server_runs_queued_jobs_and_fails_interrupted_ones(api: Api) -> None:
    """Jobs left by a server that stopped: none is lost silently."""
    steward = Principal("steward1", Role.STEWARD)
    queued = job_service.submit_job(api.root, "qc", {"tables": ["person"]}, principal=steward)
    interrupted = job_service.submit_job(api.root, "test-wait", {}, principal=steward)
    workspace = open_workspace(api.root)
    job_service._update(workspace, interrupted["job_id"], status="running")
    with TestClient(create_app(api.root)) as client:
        headers = {"Authorization": f"Bearer {api.tokens['steward']}"}
        failed = client.get(f"/api/v1/jobs/{interrupted['job_id']}", headers=headers).json()
        assert failed["status"] == "failed"
        assert failed["error"] == job_service.INTERRUPTED
        assert client.app.state.jobs.wait_idle(60)  # type: ignore[attr-defined]
        ran = client.get(f"/api/v1/jobs/{queued['job_id']}", headers=headers).json()
        assert ran["status"] == "succeeded", ran
    with open_lake(workspace) as engine:
        statuses = engine.execute(engine.table("job").select("status")).column(0).to_pylist()
    assert "queued" not in statuses
    assert "running" not in statuses


def test_submitting_checks_the_kinds_parameters_at_once(api: Api) -> None:
    body = is_problem(api.post("researcher", "/analyses/gwas",
                               json={"project_id": PROJECT, "name": "x"}), 400)  # fmt: skip
    assert "case cohort or a measurement" in body["detail"]
    is_problem(api.post("researcher", "/analyses/gwas",
                        json={"project_id": PROJECT, "name": "../x", "measurement": 1}),
               422)  # fmt: skip
    is_problem(
        api.post("steward", "/jobs", json={"kind": "ingest", "params": {"paths": ["/etc"]}}), 422
    )
    is_problem(api.post("steward", "/jobs", json={"kind": "qc", "params": {"tables": 3}}), 400)

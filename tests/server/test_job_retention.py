"""Job retention with a controlled clock ($MEDLAKE_CLOCK): past ``[jobs] keep_days`` a
finished job's upload is deleted, a failed or cancelled job's folder is deleted whole, a
succeeded job's results stay, an orphan upload folder goes once it is that old, and
queued or running jobs are never touched; the server cleans at start, and a frozen
workspace is left alone."""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from medlake.access import Permission, Principal, Role
from medlake.clock import CLOCK_ENV
from medlake.config import open_workspace, write_settings
from medlake.errors import UsageError
from medlake.server.app import create_app
from medlake.service import access
from medlake.service import jobs as job_service
from medlake.service.job_retention import clean_job_files
from medlake.service.jobs import JobContext, JobKind, JobRunner, register_kind
from medlake.service.workspace import init_workspace, open_lake

KEEP_DAYS = 3
_running = threading.Event()
_release = threading.Event()


def _work(job: JobContext) -> dict[str, object]:
    """Writes an upload and a result under its folder; then succeeds, fails, or waits."""
    (job.out_dir / "upload").mkdir(exist_ok=True)
    (job.out_dir / "upload" / "data.ndjson").write_text('{"resourceType": "Patient"}\n')
    (job.out_dir / "mapping-his.toml").write_text("source_system = 'his'\n")
    (job.out_dir / "result.parquet").write_bytes(b"PAR1")
    outcome = job.params["outcome"]
    if outcome == "fail":
        raise UsageError("test: the work failed half-way")
    if outcome == "cancel":  # reports progress until cancelled (progress then raises)
        for _ in range(1200):
            job.progress(0, 1)
            time.sleep(0.05)
    if outcome == "wait":
        _running.set()
        _release.wait(60)
    return {"files": {"result": "result.parquet"}}


register_kind(JobKind("test-retention", Permission.RUN_QC, _work))


@pytest.fixture
def workspace(tmp_path: Path):  # type: ignore[no-untyped-def]
    ws = init_workspace(tmp_path / "ws")
    settings = ws.settings.model_copy(deep=True)
    settings.jobs.keep_days = KEEP_DAYS
    write_settings(ws.settings_file, settings)
    workspace = open_workspace(ws.root)
    # Held open as the server holds it: job threads then share one database instance.
    with open_lake(workspace):
        yield workspace


def _admin(root: Path) -> Principal:
    return Principal(access.login_name(), Role.ADMIN)


def _status(workspace, job_id: str) -> str:  # type: ignore[no-untyped-def]
    return str(job_service.get_job(workspace, job_id, principal=_admin(workspace.root))["status"])


def _until(workspace, job_id: str, statuses: set[str]) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + 60
    while _status(workspace, job_id) not in statuses:
        assert time.monotonic() < deadline, (job_id, statuses)
        time.sleep(0.05)


def _jobs(workspace, outcomes: list[str]) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """One job per outcome, run in order by one worker: ``ok`` succeeds, ``fail`` fails,
    ``cancel`` is cancelled while running, ``wait`` is left running, ``queued`` is stored
    but never picked up."""
    runner = JobRunner(workspace, workers=1)
    admin = _admin(workspace.root)
    ids = {outcome: runner.submit("test-retention", {"outcome": outcome}, principal=admin)[
        "job_id"] for outcome in outcomes if outcome != "queued"}  # fmt: skip
    runner.start()
    if "cancel" in ids:
        _until(workspace, ids["cancel"], {job_service.RUNNING})
        runner.cancel(ids["cancel"], principal=admin)
        _until(workspace, ids["cancel"], {job_service.CANCELLED})
    assert _running.wait(60) if "wait" in ids else runner.wait_idle(60)
    if "queued" in outcomes:
        ids["queued"] = job_service.submit_job(workspace, "test-retention", {"outcome": "ok"},
                                               principal=admin)["job_id"]  # fmt: skip
        job_service.job_dir(workspace, ids["queued"]).joinpath("upload").mkdir(parents=True)
    return ids | {"_runner": runner}  # type: ignore[dict-item]


def _finished(workspace, job_id: str) -> dt.datetime:  # type: ignore[no-untyped-def]
    with open_lake(workspace) as engine:
        table = engine.table(job_service.TABLE)
        rows = engine.execute(table.filter(table.job_id == job_id)).to_pylist()
    return rows[0]["finished_at"]  # type: ignore[no-any-return]


def test_finished_jobs_working_files_go_after_keep_days_and_results_stay(
    workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    _release.clear()
    _running.clear()
    ids = _jobs(workspace, ["ok", "fail", "cancel", "wait", "queued"])
    runner = ids.pop("_runner")
    try:
        assert _status(workspace, ids["ok"]) == job_service.SUCCEEDED
        assert _status(workspace, ids["fail"]) == job_service.FAILED
        assert _status(workspace, ids["wait"]) == job_service.RUNNING
        assert _status(workspace, ids["queued"]) == job_service.QUEUED
        folder = {name: job_service.job_dir(workspace, job_id) for name, job_id in ids.items()}
        orphan_old = workspace.root / "jobs" / "orphan-old"
        orphan_new = workspace.root / "jobs" / "orphan-new"
        for orphan in (orphan_old, orphan_new):
            (orphan / "upload").mkdir(parents=True)
            (orphan / "upload" / "x.hl7").write_text("MSH|^~\\&|\r")
        long_ago = time.time() - (KEEP_DAYS + 1) * 86400
        for path in (orphan_old, orphan_old / "upload", orphan_old / "upload" / "x.hl7"):
            os.utime(path, (long_ago, long_ago))
        finished = max(_finished(workspace, ids[k]) for k in ("ok", "fail", "cancel"))

        # Not yet: one day short of keep_days, only the old orphan goes.
        monkeypatch.setenv(CLOCK_ENV, (finished + dt.timedelta(days=KEEP_DAYS - 1)).isoformat())
        early = clean_job_files(workspace)
        assert (early.uploads, early.jobs, early.orphans) == ([], [], ["orphan-old"])
        assert not orphan_old.exists()
        assert (folder["ok"] / "upload" / "data.ndjson").exists()
        assert (folder["fail"] / "result.parquet").exists()

        # Past keep_days: uploads and failed/cancelled jobs' files go; results stay.
        past = finished + dt.timedelta(days=KEEP_DAYS, seconds=1)
        monkeypatch.setenv(CLOCK_ENV, past.isoformat())
        written = past.replace(tzinfo=dt.UTC).timestamp() - 60  # a minute before "now"
        for path in (orphan_new, orphan_new / "upload", orphan_new / "upload" / "x.hl7"):
            os.utime(path, (written, written))
        late = clean_job_files(workspace)
        assert late.uploads == [ids["ok"]]
        assert sorted(late.jobs) == sorted([ids["fail"], ids["cancel"]])
        assert late.orphans == []  # orphan-new was written a minute ago
        assert not (folder["ok"] / "upload").exists()
        assert not (folder["ok"] / "mapping-his.toml").exists()
        assert (folder["ok"] / "result.parquet").read_bytes() == b"PAR1"  # a result stays
        assert not folder["fail"].exists()
        assert not folder["cancel"].exists()
        assert (folder["wait"] / "upload" / "data.ndjson").exists()  # running: untouched
        assert (folder["queued"] / "upload").exists()  # queued: untouched
        assert orphan_new.exists()
        assert late.bytes_freed > 0
        # The job rows stay (the history) and the cleanup is on the audit trail.
        with open_lake(workspace) as engine:
            table = engine.table(job_service.TABLE)
            assert engine.scalar(table.count()) == len(ids)
            events = engine.execute(engine.table("audit_event")).to_pandas()
        cleanups = events[events.action == "jobs.cleanup"]
        assert len(cleanups) == 2
        assert clean_job_files(workspace).deleted is False  # nothing left to delete
    finally:
        _release.set()
        runner.stop()


def test_the_server_cleans_at_start_and_leaves_a_frozen_workspace_alone(
    workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _jobs(workspace, ["ok"])
    ids.pop("_runner").stop()  # type: ignore[attr-defined]
    upload = job_service.job_dir(workspace, ids["ok"]) / "upload"
    later = _finished(workspace, ids["ok"]) + dt.timedelta(days=KEEP_DAYS + 1)
    monkeypatch.setenv(CLOCK_ENV, later.isoformat())
    workspace.freeze_file.parent.mkdir(parents=True, exist_ok=True)
    workspace.freeze_file.write_text('{"reason": "test"}')
    assert clean_job_files(workspace).deleted is False  # under review: nothing changes
    assert upload.exists()
    workspace.freeze_file.unlink()

    app = create_app(workspace.root)
    with TestClient(app):
        retention = app.state.job_retention
        deadline = time.monotonic() + 30
        while not retention.runs:
            assert time.monotonic() < deadline, "no cleanup at start"
            time.sleep(0.05)
        assert retention.runs[0].uploads == [ids["ok"]]
    assert not upload.exists()


def test_keep_days_zero_keeps_everything(workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    settings = workspace.settings.model_copy(deep=True)
    settings.jobs.keep_days = 0
    write_settings(workspace.settings_file, settings)
    ws = open_workspace(workspace.root)
    ids = _jobs(ws, ["fail"])
    ids.pop("_runner").stop()  # type: ignore[attr-defined]
    monkeypatch.setenv(CLOCK_ENV, "2999-01-01T00:00:00")
    assert clean_job_files(ws).deleted is False
    assert job_service.job_dir(ws, ids["fail"]).exists()

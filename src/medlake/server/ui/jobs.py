"""The jobs and uploads page: upload files to ingest (one background job per upload),
follow every job the user may see (state, live progress, result summary) and cancel one.

The upload and the cancel go through the same functions as the API's ``POST /uploads``
and ``POST /jobs/{id}/cancel`` (:func:`medlake.server.routers.ingest.store_upload`, the
job runner's ``cancel``), run as the signed-in user, so the policy and its audit are the
API's: ``ingest`` to upload; to cancel, the job's submitter, an admin or a steward. Which
jobs are listed is the job service's rule (admins and stewards every job, others their own
and their projects' analyses and extractions). The page's script polls the JSON twin
while a job is queued or running and redraws the table from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from fastapi import File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response

from medlake.access import Permission, Principal, is_allowed
from medlake.errors import MedlakeError, UsageError
from medlake.ingest.formats import known_formats
from medlake.server.routers.ingest import store_upload
from medlake.server.ui.pages import _same_origin
from medlake.server.ui.web import (
    JOB_PERMISSIONS,
    Frame,
    error_page,
    frame_for,
    page,
    router,
    running_as,
    to_login,
)
from medlake.service import jobs as job_service
from medlake.service.jobs import JobRunner

ACTIVE = (job_service.QUEUED, job_service.RUNNING)
#: Jobs listed at most (newest first).
LISTED = 200
#: Result values shown in the summary of jobs other than ingest.
SUMMARY_ITEMS = 8


def _inputs(job: dict[str, Any]) -> list[str]:
    """An ingest job's uploaded files, as named under its upload folder."""
    names = []
    for path in job["params"].get("paths") or []:
        parts = Path(path).parts
        names.append("/".join(parts[parts.index("upload") + 1:]) if "upload" in parts
                     else Path(path).name)  # fmt: skip
    return names


def _summary(job: dict[str, Any]) -> list[dict[str, Any]]:
    """The plain values of a non-ingest job's result (counts, names, rates)."""
    result = job.get("result") or {}
    items = [{"key": k, "value": v} for k, v in result.items()
             if isinstance(v, str | int | float | bool) and k != "files"]  # fmt: skip
    if isinstance(result.get("run"), dict):  # a QC run: its id and number of checks
        run = result["run"]
        items = [{"key": k, "value": run.get(k)} for k in ("run_id", "checks")] + items
    return items[:SUMMARY_ITEMS]


def _links(user: Principal, job: dict[str, Any]) -> list[dict[str, str]]:
    """Where a succeeded job's result is shown in the UI (keys of the UI's words)."""
    if job["status"] != job_service.SUCCEEDED:
        return []
    kind = job["kind"]
    if kind in ("gwas", "de") and is_allowed(user, Permission.ANALYZE, job["project_id"]):
        return [{"label": "jobs.open_result", "href": f"/ui/analyses/j{job['job_id']}"}]
    if kind == "qc" and is_allowed(user, Permission.RUN_QC):
        return [{"label": "jobs.open_qc", "href": "/ui/qc"}]
    if kind == "ingest" and is_allowed(user, Permission.INGEST):
        return [{"label": "jobs.open_dashboard", "href": "/ui/dashboard"}]
    return []


def job_view(root: Path, user: Principal, job: dict[str, Any]) -> dict[str, Any]:
    """One job as the page shows it (and its twin carries)."""
    result = job.get("result") or {}
    ingest = job["kind"] == "ingest"
    failed_files = [{"path": f.get("path"), "message": f.get("message")}
                    for f in result.get("files", []) if ingest and isinstance(f, dict)
                    and f.get("status") == "failed"]  # fmt: skip
    return {
        "job_id": job["job_id"],
        "kind": job["kind"],
        "status": job["status"],
        "submitted_by": job["submitted_by"],
        "project_id": job["project_id"],
        "created_at": job["created_at"],
        "started_at": job["started_at"],
        "finished_at": job["finished_at"],
        "progress": job["progress"],
        "cancel_requested": job["cancel_requested"],
        "error": job["error"],
        "inputs": _inputs(job) if ingest else [],
        "sources": result.get("sources") if ingest else None,
        "failed_files": failed_files,
        "summary": [] if ingest else _summary(job),
        "files": sorted((result.get("files") or {}).keys()) if not ingest else [],
        "links": _links(user, job),
        "may_cancel": job["status"] in ACTIVE and job_service.may_cancel(user, job),
    }


@page("/jobs", "jobs.html", JOB_PERMISSIONS)
def jobs(frame: Frame) -> dict[str, Any]:
    """The jobs the user may see, newest first (``?status=``, ``?kind=`` filter), and
    whether they may upload."""
    user = frame.user
    assert user is not None
    params = frame.request.query_params
    status = params.get("status") or None
    kind = params.get("kind") or None
    if kind is not None and kind not in job_service.kinds():
        raise UsageError(f"unknown job kind {kind!r}")
    found = job_service.list_jobs(frame.root, principal=user, status=status, kind=kind,
                                  limit=LISTED)  # fmt: skip
    shown = [job_view(frame.root, user, job) for job in found]
    return {
        "jobs": shown,
        "active": sum(job["status"] in ACTIVE for job in shown),
        "status": status,
        "kind": kind,
        "statuses": list(job_service.STATUSES),
        "kinds": sorted(job_service.kinds()),
        "may_upload": is_allowed(user, Permission.INGEST),
        "formats": known_formats(),
        "submitted": params.get("submitted"),
    }


def _runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


@router.post("/jobs/upload", name="ui_upload_files")
def ui_upload_files(
    request: Request,
    files: Annotated[list[UploadFile], File()],
    format: Annotated[str, Form()] = "",
    source_system: Annotated[str, Form(max_length=50)] = "",
    mapping: Annotated[UploadFile | None, File()] = None,
) -> Response:
    """Store the files and queue their ingest job (the API's upload), then show the jobs."""
    frame = frame_for(request)
    if frame.user is None or not _same_origin(request):
        return to_login(request)
    try:
        with running_as(frame.user):
            job = store_upload(frame.root, frame.user, _runner(request), files,
                               format=format.strip() or None,
                               source_system=source_system.strip().lower() or None,
                               mapping=mapping)  # fmt: skip
    except MedlakeError as error:
        return error_page(frame, error)
    return RedirectResponse(f"/ui/jobs?submitted={job['job_id']}", status_code=303)


@router.post("/jobs/{job_id}/cancel", name="ui_cancel_job")
def ui_cancel_job(request: Request, job_id: str) -> Response:
    """Cancel a job (the API's cancel: a queued job at once, a running one at its next
    progress report), then show the jobs."""
    frame = frame_for(request)
    if frame.user is None or not _same_origin(request):
        return to_login(request)
    try:
        with running_as(frame.user):
            _runner(request).cancel(job_id, principal=frame.user)
    except MedlakeError as error:
        return error_page(frame, error)
    return RedirectResponse("/ui/jobs", status_code=303)

"""Background jobs: submit, list, look at (status, progress, result), cancel, and fetch
the files a finished job wrote. Analyses, uploads, extraction and QC runs submit here
too, through their own routes with typed bodies."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from fastapi.responses import FileResponse
from pydantic import BaseModel, ConfigDict, Field

from medlake.server.deps import CurrentUser, Jobs, WorkspaceDir
from medlake.service import jobs as job_service

router = APIRouter(prefix="/jobs", tags=["jobs"])

Kind = Literal["ingest", "gwas", "de", "extract", "qc", "empi_link"]
#: Kinds submitted here with free parameters; ingest only through /uploads, which decides
#: the files' paths (a client must never name files on the server).
SubmitKind = Literal["gwas", "de", "extract", "qc"]
Status = Literal["queued", "running", "succeeded", "failed", "cancelled"]


class Progress(BaseModel):
    done: int | None
    total: int | None
    fraction: float | None


class Job(BaseModel):
    """A background job as it stands; ``result`` once it succeeded, ``error`` otherwise."""

    job_id: str
    kind: str
    status: Status
    submitted_by: str
    project_id: str | None
    params: dict[str, Any]
    created_at: str
    started_at: str | None
    finished_at: str | None
    progress: Progress
    cancel_requested: bool
    result: dict[str, Any] | None
    error: str | None
    result_url: str | None = None


class JobRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: SubmitKind
    params: dict[str, Any] = Field(default_factory=dict, description="the kind's parameters")
    project_id: str | None = Field(None, max_length=64, description="the project it runs in")


def present(job: dict[str, Any]) -> Job:
    url = f"/api/v1/jobs/{job['job_id']}" if job["status"] == "succeeded" else None
    return Job(**job, result_url=url)


@router.post("", status_code=202, response_model=Job)
def submit_job(user: CurrentUser, jobs: Jobs, request: JobRequest) -> Job:
    """Queue a job; its kind's permission is checked now (in ``project_id`` for analyses
    and extraction). Answers 202 with the job; poll it for progress."""
    return present(jobs.submit(request.kind, request.params, principal=user,
                               project_id=request.project_id))  # fmt: skip


@router.get("", response_model=list[Job])
def list_jobs(
    root: WorkspaceDir,
    user: CurrentUser,
    status: Annotated[Status | None, Query(description="Only jobs in this state.")] = None,
    kind: Annotated[Kind | None, Query(description="Only jobs of this kind.")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[Job]:
    """Jobs newest first: your own, or everyone's for admins and stewards."""
    found = job_service.list_jobs(root, principal=user, status=status, kind=kind, limit=limit)
    return [present(job) for job in found]


@router.get("/{job_id}", response_model=Job)
def get_job(root: WorkspaceDir, user: CurrentUser, job_id: str) -> Job:
    """One job: status, progress (done of total), result or error."""
    return present(job_service.get_job(root, job_id, principal=user))


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(user: CurrentUser, jobs: Jobs, job_id: str) -> Job:
    """Cancel a job: a queued one at once, a running one at its next progress report."""
    return present(jobs.cancel(job_id, principal=user))


@router.get("/{job_id}/files/{name}", response_class=FileResponse)
def get_job_file(root: WorkspaceDir, user: CurrentUser, job_id: str, name: str) -> FileResponse:
    """A file the job wrote, by its name in the result's ``files``."""
    path = job_service.job_file(root, job_id, name, principal=user)
    return FileResponse(path, filename=path.name)

"""Data-quality results (the latest run or one by id, a check's history) and QC runs as
background jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from medlake.access import Permission
from medlake.server.deps import CurrentUser, Jobs, WorkspaceDir, require
from medlake.server.routers.jobs import Job, present
from medlake.service import quality as quality_service

router = APIRouter(prefix="/qc", tags=["quality"])

RunId = Annotated[str | None, Query(max_length=64, description="A run id (else the latest).")]


class QcRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tables: list[Annotated[str, Field(max_length=64)]] | None = Field(
        None, description="only these tables' checks"
    )


@router.get("")
def get_qc_summary(root: WorkspaceDir, user: CurrentUser, run_id: RunId = None) -> dict[str, Any]:
    """The run's counts by category and status, and its worst failed checks."""
    require(root, user, Permission.RUN_QC)
    return quality_service.qc_summary(root, run_id)


@router.get("/results")
def list_qc_results(
    root: WorkspaceDir, user: CurrentUser, run_id: RunId = None
) -> list[dict[str, Any]]:
    """Every check's result in the run."""
    require(root, user, Permission.RUN_QC)
    return quality_service.check_results(root, run_id)


@router.get("/checks/{check_id}/history")
def get_qc_check_history(root: WorkspaceDir, user: CurrentUser, check_id: str
                         ) -> list[dict[str, Any]]:  # fmt: skip
    """One check's result in every run, oldest first (its trend)."""
    require(root, user, Permission.RUN_QC)
    return quality_service.check_history(root, check_id)


@router.post("/runs", status_code=202, response_model=Job)
def submit_qc_run(user: CurrentUser, jobs: Jobs, request: QcRequest) -> Job:
    """Queue a QC run (all checks, or those of ``tables``)."""
    return present(jobs.submit("qc", request.model_dump(exclude_none=True), principal=user))

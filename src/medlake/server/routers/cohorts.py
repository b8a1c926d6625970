"""Cohort feasibility counts with attrition (small cells suppressed unless allowed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query
from pydantic import BaseModel, ConfigDict, Field

from medlake.access import Permission, is_allowed
from medlake.cohort.circe import circe_to_definition
from medlake.errors import AccessDeniedError
from medlake.server.deps import CurrentUser, Jobs, WorkspaceDir, require
from medlake.server.routers.jobs import Job, present
from medlake.service import cohort as cohort_service

router = APIRouter(prefix="/cohorts", tags=["cohorts"])


@router.post("/count")
def count_cohort(
    root: WorkspaceDir,
    user: CurrentUser,
    definition: Annotated[dict[str, Any], Body(description="A medlake cohort definition (JSON).")],
    circe: Annotated[bool, Query(description="The body is an ATLAS/Circe export.")] = False,
    exact: Annotated[bool, Query(description="Exact small counts (stewards).")] = False,
) -> dict[str, Any]:
    """Count a cohort and its attrition; cells under the threshold show as "<N"."""
    require(root, user, Permission.COUNT)
    if exact and not is_allowed(user, Permission.COUNT_EXACT):
        require(root, user, Permission.COUNT_EXACT)  # audits the refusal, then raises
        raise AccessDeniedError("exact counts are not allowed")  # pragma: no cover
    if circe:
        parsed = circe_to_definition(definition, name="circe cohort", source="request body")
    else:
        parsed = cohort_service.parse_definition(definition, source="request body")
    return cohort_service.count_cohort(root, parsed, exact=exact).as_dict()


class ExtractRequest(BaseModel):
    """A cohort and the features to extract for it, de-identified, in a project."""

    model_config = ConfigDict(extra="forbid")

    project_id: str = Field(max_length=64)
    definition: dict[str, Any] = Field(description="a medlake cohort definition (JSON)")
    features: dict[str, Any] = Field(description="a feature spec (docs/extract.md)")


@router.post("/extract", status_code=202, response_model=Job)
def submit_extract(user: CurrentUser, jobs: Jobs, request: ExtractRequest) -> Job:
    """Queue an extraction (Parquet files and a manifest under the job's folder)."""
    params = request.model_dump(exclude={"project_id"})
    return present(jobs.submit("extract", params, principal=user, project_id=request.project_id))

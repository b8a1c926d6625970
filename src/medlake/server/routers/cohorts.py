"""Cohort feasibility counts with attrition (small cells suppressed unless allowed)."""

from __future__ import annotations

from pathlib import Path as PathType
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field

from medlake.access import Permission, is_allowed
from medlake.cohort.circe import circe_to_definition
from medlake.config import Workspace
from medlake.errors import AccessDeniedError
from medlake.server.deps import CurrentUser, Jobs, WorkspaceDir, require
from medlake.server.routers.jobs import Job, present
from medlake.server.routers.persons import open_workspace_of
from medlake.service import cohort as cohort_service
from medlake.service import cohort_definitions as definitions
from medlake.service import concept_search

router = APIRouter(prefix="/cohorts", tags=["cohorts"])
#: The workspace the app opened at start: the services then neither read ``medlake.toml``
#: again nor open the lake afresh (they borrow the serving pool's engines).
OpenedWorkspace = Annotated[Workspace | PathType, Depends(open_workspace_of)]


@router.post("/count")
def count_cohort(
    # The workspace opened at start: a count read medlake.toml twice otherwise (the policy
    # check and the service, 0.6 ms each, a tenth of a cached count's CPU).
    root: OpenedWorkspace,
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


# ---------------------------------------------------------------------- saved definitions

DefinitionId = Annotated[int, Path(ge=1, lt=2**63, description="A saved definition's id.")]


class SaveRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=255)
    definition: dict[str, Any] = Field(description="a medlake cohort definition (JSON)")


class UpdateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, min_length=1, max_length=255, description="rename it")
    definition: dict[str, Any]


@router.get("/definitions")
def list_cohort_definitions(root: OpenedWorkspace, user: CurrentUser) -> list[dict[str, Any]]:
    """Saved definitions (without their JSON), by id."""
    require(root, user, Permission.COUNT)
    return [d.as_dict() for d in definitions.list_definitions(root)]


@router.post("/definitions", status_code=201)
def save_cohort_definition(root: OpenedWorkspace, user: CurrentUser, body: SaveRequest
                           ) -> dict[str, Any]:  # fmt: skip
    """Save a definition under a unique name; answers it with its id."""
    require(root, user, Permission.COUNT)
    parsed = cohort_service.parse_definition(body.definition, source="definition")
    definition_id = definitions.save_definition(root, body.name, parsed)
    return definitions.get_definition(root, definition_id).as_dict()


@router.get("/definitions/{definition_id}")
def get_cohort_definition(root: OpenedWorkspace, user: CurrentUser, definition_id: DefinitionId
                          ) -> dict[str, Any]:  # fmt: skip
    """One saved definition with its JSON."""
    require(root, user, Permission.COUNT)
    return definitions.get_definition(root, definition_id).as_dict()


@router.put("/definitions/{definition_id}")
def update_cohort_definition(
    root: OpenedWorkspace, user: CurrentUser, definition_id: DefinitionId, body: UpdateRequest
) -> dict[str, Any]:
    """Replace a saved definition (its generated cohort rows are dropped)."""
    require(root, user, Permission.COUNT)
    parsed = cohort_service.parse_definition(body.definition, source="definition")
    return definitions.update_definition(root, definition_id, parsed, name=body.name).as_dict()


@router.delete("/definitions/{definition_id}", status_code=204)
def delete_cohort_definition(root: OpenedWorkspace, user: CurrentUser, definition_id: DefinitionId
                             ) -> None:  # fmt: skip
    """Delete a saved definition and the cohort rows generated from it."""
    require(root, user, Permission.COUNT)
    definitions.delete_definition(root, definition_id)


@router.post("/definitions/{definition_id}/count")
def count_cohort_definition(
    root: OpenedWorkspace,
    user: CurrentUser,
    definition_id: DefinitionId,
    exact: Annotated[bool, Query(description="Exact small counts (stewards).")] = False,
) -> dict[str, Any]:
    """Count a saved definition with its attrition (small cells suppressed)."""
    require(root, user, Permission.COUNT_EXACT if exact else Permission.COUNT)
    return definitions.count_definition(root, definition_id, exact=exact)


concepts_router = APIRouter(prefix="/concepts", tags=["cohorts"])


@concepts_router.get("")
def search_concepts(
    root: WorkspaceDir,
    user: CurrentUser,
    q: Annotated[str, Query(min_length=1, max_length=255, description="name, code or id")],
    domain: Annotated[
        str | None, Query(max_length=50, description="e.g. drug_exposure or Drug")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> list[dict[str, Any]]:
    """Concepts for a criterion, best first (standard concepts are what codesets use)."""
    require(root, user, Permission.COUNT)
    return [m.as_dict() for m in concept_search.search_concepts(root, q, domain, limit)]

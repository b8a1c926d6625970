"""Cohort feasibility counts with attrition (small cells suppressed unless allowed)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query

from medlake.access import Permission, is_allowed
from medlake.cohort.circe import circe_to_definition
from medlake.errors import AccessDeniedError
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service import cohort as cohort_service

router = APIRouter(prefix="/cohorts", tags=["cohorts"])


@router.post("/count")
def count_cohort(
    root: WorkspaceDir,
    user: CurrentUser,
    definition: Annotated[
        dict[str, Any], Body(description="A medlake cohort definition (JSON).")
    ],
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

"""EMPI stewardship: the queue of uncertain pairs, side by side with field evidence, and
a steward's decision on one (match merges the persons, no_match keeps them apart)."""

from __future__ import annotations

import dataclasses
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from medlake.access import Permission
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service import empi as empi_service

router = APIRouter(prefix="/empi", tags=["EMPI"])


class Decision(BaseModel):
    model_config = ConfigDict(extra="forbid")

    decision: Literal["match", "no_match"]
    note: str | None = Field(None, max_length=1000)


@router.get("/review")
def get_review_queue(
    root: WorkspaceDir,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=500)] = 20,
) -> dict[str, Any]:
    """The queue's size and its first pairs, most uncertain first (identified data)."""
    require(root, user, Permission.REVIEW_LINKS)
    total, items = empi_service.review_queue(root, limit=limit)
    return {"total": total, "items": [dataclasses.asdict(item) for item in items]}


@router.post("/review/{pair_id}/decision")
def decide_review_pair(
    root: WorkspaceDir, user: CurrentUser, pair_id: str, body: Decision
) -> dict[str, Any]:
    """Record the decision and apply it; later automatic runs never override it."""
    require(root, user, Permission.REVIEW_LINKS)
    report = empi_service.decide_pair(root, pair_id, body.decision, steward=user.user_name,
                                      note=body.note)  # fmt: skip
    return dataclasses.asdict(report)

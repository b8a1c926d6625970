"""The audit trail: search events, and verify the hash chain against its anchors."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from medlake.access import Permission
from medlake.audit.query import EventFilter
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service import audit as audit_service

router = APIRouter(prefix="/audit", tags=["audit"])

Text = Annotated[str | None, Query(max_length=255)]


@router.get("/events")
def search_audit_events(
    root: WorkspaceDir,
    user: CurrentUser,
    actor: Text = None,
    action: Annotated[
        str | None, Query(max_length=255, description="'export' also finds 'export.dataset'")
    ] = None,
    object_type: Text = None,
    object_id: Text = None,
    person_id: Annotated[int | None, Query(ge=-(2**63), lt=2**63)] = None,
    outcome: Literal["allowed", "denied"] | None = None,
    since: dt.datetime | None = None,
    until: dt.datetime | None = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[dict[str, Any]]:
    """Events newest first, filtered by who, what, which person, outcome and time."""
    require(root, user, Permission.READ_AUDIT)
    where = EventFilter(
        actor=actor,
        person_id=person_id,
        action=action,
        object_type=object_type,
        object_id=object_id,
        outcome=outcome,
        since=since,
        until=until,
        limit=limit,
    )
    return audit_service.show_events(root, where)


@router.get("/verify")
def verify_audit_trail(root: WorkspaceDir, user: CurrentUser) -> dict[str, Any]:
    """Check the chain of every event against itself, its head and its anchors."""
    require(root, user, Permission.READ_AUDIT)
    return audit_service.verify_summary(audit_service.verify_trail(root, anchor=False))

"""Records that could not be parsed or mapped."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from medlake.access import Permission
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service import ingest as ingest_service

router = APIRouter(prefix="/quarantine", tags=["quarantine"])


@router.get("")
def list_quarantine(
    root: WorkspaceDir,
    user: CurrentUser,
    batch: Annotated[str | None, Query(description="Only this batch id.")] = None,
    include_resolved: Annotated[bool, Query(description="Resolved entries too.")] = False,
) -> list[dict[str, Any]]:
    """Open quarantine entries without their raw payloads (those may hold identifiers)."""
    require(root, user, Permission.INGEST)
    entries = ingest_service.quarantine_entries(root, batch_id=batch,
                                                include_resolved=include_resolved)  # fmt: skip
    return [{k: v for k, v in e.items() if k != "raw_payload"} for e in entries]


@router.get("/{quarantine_id}")
def get_quarantine_entry(root: WorkspaceDir, user: CurrentUser, quarantine_id: str
                         ) -> dict[str, Any]:  # fmt: skip
    """One entry with its raw payload: identified data, so stewards only."""
    require(root, user, Permission.READ_IDENTIFIED)
    return ingest_service.quarantine_entry(root, quarantine_id)

"""Patient 360: one person's timeline across every linked source system."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from medlake.access import Permission
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service.patient360 import person_timeline

router = APIRouter(prefix="/persons", tags=["patient 360"])


@router.get("/{person_id}/timeline")
def get_person_timeline(
    root: WorkspaceDir,
    user: CurrentUser,
    person_id: int,
    notes: Annotated[bool, Query(description="Include each note's full text.")] = False,
) -> dict[str, Any]:
    """Every item of the person's record, oldest first, each with its source system and
    record id. Identified data (real dates, source ids): stewards; the read is audited."""
    require(root, user, Permission.READ_IDENTIFIED)
    timeline = person_timeline(root, person_id, with_note_text=notes)  # audits the read
    return timeline.as_dict()

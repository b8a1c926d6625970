"""Data protection through the running server: the ransomware watch's freeze, seen and
cleared by an admin without stopping ``medlake serve`` (DuckDB lets one process hold the
lake, so ``medlake watch clear`` cannot run beside the server)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body
from pydantic import BaseModel, ConfigDict, Field

from medlake.errors import UsageError
from medlake.server.deps import CurrentUser, WorkspaceDir
from medlake.service import watch as watch_service

router = APIRouter(prefix="/protect", tags=["protect"])


class FreezeStatus(BaseModel):
    """Whether the workspace is frozen read-only, and the freeze file's record if so."""

    frozen: bool
    since: str | None = None
    frozen_at: str | None = None
    reason: str | None = None
    file_count: int | None = None
    files: list[dict[str, Any]] = Field(default_factory=list)


class ClearRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    note: str = Field(min_length=1, max_length=2000,
                      description="What was reviewed (goes to the audit trail).")  # fmt: skip


def _status(record: dict[str, Any] | None) -> FreezeStatus:
    if record is None:
        return FreezeStatus(frozen=False)
    return FreezeStatus(frozen=True, **{k: record.get(k) for k in
                                        ("since", "frozen_at", "reason", "file_count")},
                        files=list(record.get("files") or []))  # fmt: skip


@router.get("/watch", response_model=FreezeStatus)
def get_watch_status(root: WorkspaceDir, user: CurrentUser) -> FreezeStatus:
    """Whether the ransomware watch has frozen the workspace: since when, why, which
    files (admins: ``protect``)."""
    return _status(watch_service.freeze_status(root))


@router.post("/watch/clear", response_model=FreezeStatus)
def clear_watch_freeze(
    root: WorkspaceDir,
    user: CurrentUser,
    request: Annotated[ClearRequest, Body()],
) -> FreezeStatus:
    """Lift the read-only freeze after review, as ``medlake watch clear`` does (admins:
    ``protect``; audited as ``watch.clear`` with the note). Answers the freeze that was
    lifted; 400 when the workspace is not frozen. The watch starts again from the reviewed
    state."""
    if not request.note.strip():
        raise UsageError("note: say what was reviewed")
    return _status(watch_service.clear(root, note=request.note.strip()))

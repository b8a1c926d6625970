"""Health, the signed-in user, and what the lake holds."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel

from medlake import __version__
from medlake.access import Permission
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service.workspace import lake_summary

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str
    version: str


class Me(BaseModel):
    user: str
    role: str
    projects: list[str]


@router.get("/health", response_model=Health)
def health() -> Health:
    """Liveness: no sign-in needed."""
    return Health(status="ok", version=__version__)


@router.get("/me", response_model=Me)
def me(user: CurrentUser) -> Me:
    """Who the token belongs to, with role and projects."""
    return Me(user=user.user_name, role=user.role.value, projects=sorted(user.projects))


@router.get("/lake")
def lake(root: WorkspaceDir, user: CurrentUser) -> dict[str, Any]:
    """Rows per table, engine and schema version (aggregate counts only)."""
    require(root, user, Permission.COUNT)
    return lake_summary(root).as_dict()

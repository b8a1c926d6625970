"""Users, tokens and projects for a workspace (who may use it, and how).

The policy itself (who a call runs as, the check every service entry point makes, read
auditing) is :mod:`medlake.service.policy`; its names are re-exported here for the edges.
Changes of users, roles, tokens and projects write audit events.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from medlake.access import Permission, Principal, Role, parse_role, store
from medlake.access.tokens import NewToken
from medlake.audit import append_event
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import AccessDeniedError
from medlake.service.policy import (
    USER_ENV,
    acting_as,
    acting_user_name,
    audit_read,
    authorized,
    current_project,
    login_name,
    permission_of,
    principal_for,
    record_read,
    require,
    require_on,
)
from medlake.service.workspace import open_lake

__all__ = [
    "USER_ENV",
    "acting_as",
    "acting_user_name",
    "audit_read",
    "authorized",
    "current_project",
    "login_name",
    "permission_of",
    "principal_for",
    "record_read",
    "require",
    "require_on",
]


@contextmanager
def _lake(workspace_dir: Path | Workspace | None) -> Iterator[tuple[Workspace, Engine]]:
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        yield workspace, engine


def whoami(workspace_dir: Path | Workspace | None, *, user: str | None = None) -> Principal:
    with _lake(workspace_dir) as (_, engine):
        return principal_for(engine, user=user)


def add_user(
    workspace_dir: Path | Workspace | None,
    name: str,
    role: str,
    *,
    display_name: str | None = None,
    as_user: str | None = None,
) -> dict[str, Any]:
    """Add a user (admins; the first user of a workspace without any must be an admin)."""
    parsed = parse_role(role)
    with _lake(workspace_dir) as (_, engine):
        if store.list_users(engine):
            actor = require_on(engine, Permission.MANAGE_USERS, user=as_user).user_name
        else:
            if parsed is not Role.ADMIN:
                raise AccessDeniedError("this workspace has no users yet: add an admin first")
            actor = f"os:{login_name()}"
        row = store.add_user(engine, name, parsed, created_by=actor, display_name=display_name)
        append_event(
            engine,
            actor=actor,
            action="user.add",
            object_type="user",
            object_id=name,
            detail={"role": parsed.value},
        )
        return row


def list_users(
    workspace_dir: Path | Workspace | None, *, as_user: str | None = None
) -> list[dict[str, Any]]:
    with _lake(workspace_dir) as (_, engine):
        require_on(engine, Permission.MANAGE_USERS, user=as_user)
        return store.list_users(engine)


def set_role(
    workspace_dir: Path | Workspace | None, name: str, role: str, *, as_user: str | None = None
) -> dict[str, Any]:
    parsed = parse_role(role)
    with _lake(workspace_dir) as (_, engine):
        actor = require_on(engine, Permission.MANAGE_USERS, user=as_user).user_name
        before = store.get_user(engine, name)
        row = store.set_role(engine, name, parsed)
        append_event(
            engine,
            actor=actor,
            action="user.role",
            object_type="user",
            object_id=name,
            detail={"from": before["role"] if before else None, "to": parsed.value},
        )
        return row


def disable_user(
    workspace_dir: Path | Workspace | None, name: str, *, as_user: str | None = None
) -> dict[str, Any]:
    with _lake(workspace_dir) as (_, engine):
        actor = require_on(engine, Permission.MANAGE_USERS, user=as_user).user_name
        if name == actor:
            raise AccessDeniedError("you cannot disable yourself; ask another admin")
        row = store.disable_user(engine, name)
        append_event(engine, actor=actor, action="user.disable", object_type="user", object_id=name)
        return row


def issue_token(
    workspace_dir: Path | Workspace | None,
    name: str,
    *,
    valid_days: int | None = None,
    as_user: str | None = None,
) -> NewToken:
    """A new API token for ``name`` (admins for anyone; every user for themself)."""
    with _lake(workspace_dir) as (_, engine):
        acting = principal_for(engine, user=as_user)
        if acting.user_name != name:
            require_on(engine, Permission.MANAGE_USERS, user=as_user)
        token = store.issue_token(engine, name, valid_days=valid_days)
        append_event(
            engine,
            actor=acting.user_name,
            action="token.issue",
            object_type="user",
            object_id=name,
            detail={"token_id": token.token_id},
        )
        return token


def revoke_token(
    workspace_dir: Path | Workspace | None, token_id: str, *, as_user: str | None = None
) -> None:
    with _lake(workspace_dir) as (_, engine):
        actor = require_on(engine, Permission.MANAGE_USERS, user=as_user).user_name
        store.revoke_token(engine, token_id)
        append_event(
            engine, actor=actor, action="token.revoke", object_type="token", object_id=token_id
        )


def authenticate(workspace_dir: Path | Workspace | None, token: str) -> Principal:
    with _lake(workspace_dir) as (_, engine):
        return principal_for(engine, token=token)


def create_project(
    workspace_dir: Path | Workspace | None,
    project_id: str,
    title: str,
    *,
    description: str | None = None,
    as_user: str | None = None,
) -> dict[str, Any]:
    with _lake(workspace_dir) as (_, engine):
        actor = require_on(engine, Permission.MANAGE_PROJECTS, user=as_user).user_name
        row = store.create_project(
            engine, project_id, title, created_by=actor, description=description
        )
        append_event(
            engine,
            actor=actor,
            action="project.create",
            object_type="project",
            object_id=project_id,
            project_id=project_id,
        )
        return row


def list_projects(
    workspace_dir: Path | Workspace | None, *, as_user: str | None = None
) -> list[dict[str, Any]]:
    """Every project for admins and stewards; a researcher's own projects otherwise."""
    with _lake(workspace_dir) as (_, engine):
        acting = principal_for(engine, user=as_user)
        projects = store.list_projects(engine)
        if acting.role in (Role.ADMIN, Role.STEWARD):
            return projects
        return [p for p in projects if p["project_id"] in acting.projects]


def add_member(
    workspace_dir: Path | Workspace | None,
    project_id: str,
    name: str,
    *,
    as_user: str | None = None,
) -> None:
    with _lake(workspace_dir) as (_, engine):
        actor = require_on(engine, Permission.MANAGE_PROJECTS, user=as_user).user_name
        store.add_member(engine, project_id, name, added_by=actor)
        append_event(
            engine,
            actor=actor,
            action="project.member.add",
            object_type="user",
            object_id=name,
            project_id=project_id,
        )


def remove_member(
    workspace_dir: Path | Workspace | None,
    project_id: str,
    name: str,
    *,
    as_user: str | None = None,
) -> bool:
    with _lake(workspace_dir) as (_, engine):
        actor = require_on(engine, Permission.MANAGE_PROJECTS, user=as_user).user_name
        removed = store.remove_member(engine, project_id, name)
        append_event(
            engine,
            actor=actor,
            action="project.member.remove",
            object_type="user",
            object_id=name,
            project_id=project_id,
        )
        return removed

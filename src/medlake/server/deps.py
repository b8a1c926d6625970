"""Dependencies the routes declare: the workspace, the signed-in user, the job runner."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from medlake.access import Permission, Principal
from medlake.access.context import enter_request
from medlake.errors import AuthenticationError
from medlake.service import access
from medlake.service.jobs import JobRunner

_bearer = HTTPBearer(auto_error=False, description="An API token from `medlake user token`.")


def workspace_dir(request: Request) -> Path:
    root: Path = request.app.state.workspace_dir
    return root


WorkspaceDir = Annotated[Path, Depends(workspace_dir)]


def current_principal(
    root: WorkspaceDir,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("sign in: send an API token as 'Authorization: Bearer <token>'")
    return access.authenticate(root, credentials.credentials)


async def acting_principal(
    principal: Annotated[Principal, Depends(current_principal)],
) -> Principal:
    """The signed-in user, also put in the request's context: the services the route calls
    check the policy as them (async, so it runs in the request's own task, whose context
    the route's thread inherits)."""
    enter_request(principal)
    return principal


CurrentUser = Annotated[Principal, Depends(acting_principal)]


def require(root: Path, user: Principal, permission: Permission,
            project_id: str | None = None) -> Principal:  # fmt: skip
    """Authorize ``permission`` for the signed-in user (refusals are audited)."""
    return access.require(root, permission, user=user.user_name, project_id=project_id)


def job_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


Jobs = Annotated[JobRunner, Depends(job_runner)]

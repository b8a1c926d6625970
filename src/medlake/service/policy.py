"""The policy every service call passes: who a call runs as, and one check per entry point.

The edges say *who*; the services say *what*:

* the CLI puts the acting user's name in context (``medlake --as USER``, a command's own
  ``--as``, else ``$MEDLAKE_USER``, else the login name) with :func:`acting_as`; the API
  puts the :class:`~medlake.access.Principal` its bearer token authenticated;
* every public service entry point carries ``@authorized(Permission.X)``, or calls
  :func:`require` / :func:`require_on` as its first line where the permission depends on
  an argument. The check resolves the acting user against the workspace's users (a name
  that is not an enabled user is refused), authorizes with
  :func:`medlake.access.authorize`, writes a ``denied`` audit event when refused, and runs
  the function with the resolved principal in context, so nested service calls reuse it
  without another lookup and inherit the project.

The project a project-scoped permission is checked in comes from the function's
``project_id`` argument when it has one, else from the context (``medlake --project P``,
:func:`acting_as`'s ``project``). Context variables (:mod:`contextvars`) are used rather
than a parameter on every function because they follow a call through threads started
with a copied context (the API's thread pool) and reset when the scope ends, so one
request's user never leaks into the next.

Reads of patient-level data write a ``read`` event naming the persons or the cohort
(:func:`record_read`); exports, merges and changes of users, projects and settings write
their own events where they happen.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from medlake.access import Permission, Principal, authorize, is_allowed, store
from medlake.access.context import (
    USER_ENV,
    acting_as,
    acting_user_name,
    current_principal,
    current_project,
    login_name,
    resolved_principals,
)
from medlake.audit import append_event
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import AccessDeniedError, AuthenticationError
from medlake.service.workspace import open_lake

__all__ = [
    "USER_ENV",
    "acting_as",
    "acting_user_name",
    "audit_read",
    "authorized",
    "current_principal",
    "current_project",
    "login_name",
    "may",
    "permission_of",
    "principal_for",
    "record_read",
    "require",
    "require_on",
]

P = ParamSpec("P")
R = TypeVar("R")


def principal_for(
    engine: Engine, *, user: str | None = None, token: str | None = None
) -> Principal:
    """The principal a call runs as: ``token``, else ``user``, else the context's."""
    if token:
        return store.principal(engine, store.user_for_token(engine, token))
    if user is None and (principal := current_principal()) is not None:
        return principal
    return store.principal(engine, acting_user_name(user))


def _audit_denied(engine: Engine, principal: Principal, permission: Permission,
                  project_id: str | None, error: AccessDeniedError) -> None:  # fmt: skip
    append_event(engine, actor=principal.user_name, role=principal.role.value,
                 action=permission.value, project_id=project_id, outcome="denied",
                 detail={"reason": error.message})  # fmt: skip


def require_on(
    engine: Engine,
    permission: Permission,
    *,
    user: str | None = None,
    token: str | None = None,
    project_id: str | None = None,
) -> Principal:
    """Authorize ``permission`` for the acting user on an open engine; audit a refusal.

    Raises:
        AuthenticationError: the acting user is not an enabled user of this workspace.
        AccessDeniedError: the role (or the project membership) does not allow it.
    """
    project_id = project_id or current_project()
    try:
        principal = principal_for(engine, user=user, token=token)
    except AuthenticationError as error:
        append_event(engine, actor=user or acting_user_name(None), action=permission.value,
                     outcome="denied", detail={"reason": error.message})  # fmt: skip
        raise
    try:
        authorize(principal, permission, project_id)
    except AccessDeniedError as error:
        _audit_denied(engine, principal, permission, project_id, error)
        raise
    return principal


def require(
    workspace_dir: Path | Workspace | None,
    permission: Permission,
    *,
    user: str | None = None,
    project_id: str | None = None,
) -> Principal:
    """:func:`require_on` for a workspace folder.

    An allowed principal already in context is checked without opening the lake; a
    refusal or a name still to resolve opens it (the refusal is written to the trail).
    """
    workspace = as_workspace(workspace_dir)
    project_id = project_id or current_project()
    known = None if user is not None else current_principal()
    cache = resolved_principals()
    if known is None and user is None and cache is not None:
        known = cache.get(workspace.root)
    if known is not None and is_allowed(known, permission, project_id):
        return known
    with open_lake(workspace) as engine:
        if known is not None:
            try:
                authorize(known, permission, project_id)
            except AccessDeniedError as error:
                _audit_denied(engine, known, permission, project_id, error)
                raise
            return known  # pragma: no cover - is_allowed and authorize agree
        principal = require_on(engine, permission, user=user, project_id=project_id)
    if user is None and cache is not None:
        cache[workspace.root] = principal
    return principal


def authorized(
    permission: Permission, *, workspace: str = "workspace_dir"
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a service entry point: check ``permission`` before it runs, then run it
    with the resolved principal (and project) in context.

    ``workspace`` names the function's workspace argument; a ``project_id`` argument,
    when the function has one, is the project the check is made in.
    """

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        signature = inspect.signature(function)
        if workspace not in signature.parameters:
            raise TypeError(f"{function.__qualname__} has no {workspace!r} argument")

        @functools.wraps(function)
        def checked(*args: P.args, **kwargs: P.kwargs) -> R:
            arguments = signature.bind(*args, **kwargs).arguments
            project_id = arguments.get("project_id") or current_project()
            principal = require(arguments.get(workspace), permission, project_id=project_id)
            with acting_as(principal, project=project_id):
                return function(*args, **kwargs)

        checked.__medlake_permission__ = permission  # type: ignore[attr-defined]
        return checked

    return decorate


def permission_of(function: Callable[..., Any]) -> Permission | None:
    """The permission ``@authorized`` checks for ``function`` (None when undecorated)."""
    return getattr(function, "__medlake_permission__", None)


def record_read(
    engine: Engine,
    object_type: str,
    object_id: str,
    *,
    person_ids: Sequence[int] | None = None,
    detail: dict[str, Any] | None = None,
) -> int:
    """Audit a read of patient-level data by the acting user (who, what, which persons)."""
    principal = current_principal()
    extra = dict(detail or {})
    if person_ids is not None:
        extra["person_ids"] = sorted({int(p) for p in person_ids})
    return append_event(
        engine,
        actor=acting_user_name(None),
        role=principal.role.value if principal else None,
        action="read",
        object_type=object_type,
        object_id=object_id[:255],
        project_id=current_project(),
        detail=extra,
    )


def audit_read(workspace_dir: Path | Workspace | None, object_type: str, object_id: str, *,
               person_ids: Sequence[int] | None = None,
               detail: dict[str, Any] | None = None) -> int:  # fmt: skip
    """:func:`record_read` for a workspace folder (opens and closes the lake)."""
    with open_lake(as_workspace(workspace_dir)) as engine:
        return record_read(engine, object_type, object_id, person_ids=person_ids, detail=detail)


def may(permission: Permission, project_id: str | None = None) -> bool:
    """Whether the principal in context (set by ``@authorized``) holds ``permission``: for
    output that depends on the role, e.g. raw payloads shown only to stewards."""
    principal = current_principal()
    return principal is not None and is_allowed(principal, permission,
                                                project_id or current_project())  # fmt: skip

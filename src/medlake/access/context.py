"""Who the current call runs as: context variables the edges set and the policy reads.

The CLI sets a user *name* (resolved against the workspace at the first check); the API
sets the :class:`Principal` its bearer token authenticated. :mod:`contextvars` rather
than a parameter on every service function: the value follows a call into threads
started with a copied context (the API's thread pool) and is reset when the scope ends,
so one request's user never leaks into the next. Kept free of the lake so the CLI can
set it at start-up without importing the engine.
"""

from __future__ import annotations

import getpass
import os
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from medlake.access.policy import Principal

USER_ENV = "MEDLAKE_USER"

_principal: ContextVar[Principal | None] = ContextVar("medlake_principal", default=None)
_user_name: ContextVar[str | None] = ContextVar("medlake_user_name", default=None)
_project: ContextVar[str | None] = ContextVar("medlake_project", default=None)
#: Principals resolved by name in the current :func:`acting_as` scope, per workspace root
#: (one CLI command looks its user up once, however many checks it passes).
_resolved: ContextVar[dict[Path, Principal] | None] = ContextVar("medlake_resolved", default=None)


def login_name() -> str:
    """The operating-system login (``uid<N>`` where there is no passwd entry)."""
    try:
        return getpass.getuser()
    except (OSError, KeyError):  # no passwd entry (some containers)
        return f"uid{os.getuid()}"


def current_principal() -> Principal | None:
    """The authenticated principal in context (None when only a name is)."""
    return _principal.get()


def current_project() -> str | None:
    return _project.get()


def resolved_principals() -> dict[Path, Principal] | None:
    """The current scope's cache of principals resolved by name (None outside a scope)."""
    return _resolved.get()


def acting_user_name(explicit: str | None = None) -> str:
    """``explicit``, else the context's principal or name, else ``$MEDLAKE_USER``, else
    the login name."""
    if explicit:
        return explicit
    principal = _principal.get()
    if principal is not None:
        return principal.user_name
    return _user_name.get() or os.environ.get(USER_ENV) or login_name()


@contextmanager
def acting_as(who: Principal | str | None, *, project: str | None = None) -> Iterator[None]:
    """Run the block as ``who``: an authenticated principal (the API), or a user name the
    checks resolve against the workspace (the CLI; None: ``$MEDLAKE_USER``, else login).

    ``project`` is the project that project-scoped permissions are checked in (kept from
    the enclosing scope when None).
    """
    if isinstance(who, Principal):
        tokens = [_principal.set(who), _user_name.set(None), _resolved.set(None)]
    else:
        tokens = [_principal.set(None), _user_name.set(who), _resolved.set({})]
    project_token = _project.set(project) if project is not None else None
    try:
        yield
    finally:
        if project_token is not None:
            _project.reset(project_token)
        for token in reversed(tokens):
            token.var.reset(token)  # type: ignore[attr-defined]


def enter_request(principal: Principal, *, project: str | None = None) -> None:
    """Set ``principal`` for the rest of the current context, without a scope to end:
    for a server request, which runs in its own task whose context ends with it."""
    _principal.set(principal)
    _user_name.set(None)
    _resolved.set(None)
    if project is not None:
        _project.set(project)

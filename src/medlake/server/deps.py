"""Dependencies the routes declare: the workspace, the signed-in user, the job runner.

FastAPI runs a plain ``def`` dependency in a worker thread; the cheap ones here are
``async def`` so that a request does not hop threads once per dependency before its route
(three hops per request, each a wake-up of a worker thread and a trip back to the event
loop). Only what may block (a token not verified recently: a deliberate scrypt hash) is
sent to a worker thread.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from medlake.access import Permission, Principal
from medlake.access.context import acting_as, enter_request
from medlake.errors import AuthenticationError
from medlake.service import access
from medlake.service.jobs import JobRunner
from medlake.service.live_link import LiveLinks

_bearer = HTTPBearer(auto_error=False, description="An API token from `medlake user token`.")


async def workspace_dir(request: Request) -> Path:
    root: Path = request.app.state.workspace_dir
    return root


WorkspaceDir = Annotated[Path, Depends(workspace_dir)]


#: How long a verified token's principal is reused without checking the lake again.
#: Verifying is a deliberate scrypt hash (~50 ms of CPU), too slow for every request;
#: a revoked token, a disabled user or a changed role takes effect within this time.
AUTH_CACHE_SECONDS = 10.0
_AUTH_CACHE_SIZE = 10_000
_auth_cache: dict[tuple[Path, str], tuple[float, Principal]] = {}
_auth_lock = threading.Lock()
_auth_flights: dict[tuple[Path, str], threading.Lock] = {}


async def current_principal(
    root: WorkspaceDir,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    if credentials is None or not credentials.credentials:
        raise AuthenticationError("sign in: send an API token as 'Authorization: Bearer <token>'")
    # keyed by a hash: the cache never holds a usable token
    key = (root, hashlib.sha256(credentials.credentials.encode()).hexdigest())
    with _auth_lock:
        cached = _auth_cache.get(key)
    if cached is not None and time.monotonic() - cached[0] < AUTH_CACHE_SECONDS:
        return cached[1]  # on the event loop: nothing here blocks
    return await run_in_threadpool(_verify, root, credentials.credentials, key)


def _verify(root: Path, token: str, key: tuple[Path, str]) -> Principal:
    """Verify ``token`` (scrypt, in a worker thread) unless another request just did."""
    with _auth_lock:
        cached = _auth_cache.get(key)
        flight = _auth_flights.setdefault(key, threading.Lock())
    if cached is not None and time.monotonic() - cached[0] < AUTH_CACHE_SECONDS:
        return cached[1]
    # One verification per token at a time: when the entry expires under load, the
    # token's other requests wait for it instead of each paying the scrypt hash.
    with flight:
        with _auth_lock:
            cached = _auth_cache.get(key)
        if cached is not None and time.monotonic() - cached[0] < AUTH_CACHE_SECONDS:
            return cached[1]
        now = time.monotonic()
        principal = access.authenticate(root, token)
        with _auth_lock:
            if len(_auth_cache) >= _AUTH_CACHE_SIZE:
                _auth_cache.clear()
                _auth_flights.clear()
            _auth_cache[key] = (now, principal)
    return principal


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
    """Authorize ``permission`` for the signed-in user (refusals are audited).

    Checked on the principal the token gave (no lake is opened when it is allowed): looking
    the user up by name again cost a connection per request.
    """
    with acting_as(user):
        return access.require(root, permission, project_id=project_id)


async def job_runner(request: Request) -> JobRunner:
    runner: JobRunner = request.app.state.jobs
    return runner


Jobs = Annotated[JobRunner, Depends(job_runner)]


async def live_links(request: Request) -> LiveLinks:
    links: LiveLinks = request.app.state.live_links
    return links


LiveLinksDep = Annotated[LiveLinks, Depends(live_links)]

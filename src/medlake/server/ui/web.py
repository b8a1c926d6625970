"""How a page is served: the signed-in user, the language, the policy check, and one
context object rendered either as HTML or as its JSON twin.

A page is a function that returns its context (plain JSON-ready data). :func:`page`
registers it at ``/ui/<path>`` (HTML) and ``/ui/<path>.json`` (the same context as JSON;
``Accept: application/json`` on the first does the same), after checking the page's
permission with the same policy call as the API (:func:`medlake.service.access.require`,
refusals audited). The template gets the context as ``page`` and the frame (user,
navigation, language) as ``ui``; the frame is not part of the twin.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from markupsafe import Markup

from medlake import __version__
from medlake.access import Permission, Principal, is_allowed
from medlake.access.context import acting_as
from medlake.config import Workspace, open_workspace
from medlake.errors import AuthenticationError, MedlakeError
from medlake.server import problems
from medlake.server.ui import i18n, session
from medlake.service import access, webui

HERE = Path(__file__).parent
templates = Jinja2Templates(directory=HERE / "templates")
router = APIRouter(prefix="/ui", include_in_schema=False)

#: What a page needs: one permission, any one of several, or None (any signed-in user).
Needs = Permission | tuple[Permission, ...] | None

#: The permissions of the kinds of background job (ingest, GWAS/DE, extraction, QC): a user
#: holding none of them has no job to see.
JOB_PERMISSIONS = (Permission.INGEST, Permission.ANALYZE, Permission.EXPORT, Permission.RUN_QC)

#: The navigation, in order: translation key, path, permission needed (None: any user).
NAVIGATION: tuple[tuple[str, str, Needs], ...] = (
    ("nav.dashboard", "/ui/dashboard", None),
    ("nav.cohorts", "/ui/cohorts", Permission.COUNT),
    ("nav.person", "/ui/persons", Permission.READ_IDENTIFIED),
    ("nav.empi", "/ui/empi", Permission.REVIEW_LINKS),
    ("nav.analyses", "/ui/analyses", Permission.ANALYZE),
    ("nav.qc", "/ui/qc", Permission.RUN_QC),
    ("nav.jobs", "/ui/jobs", JOB_PERMISSIONS),
    ("nav.audit", "/ui/audit", Permission.READ_AUDIT),
)


def may(user: Principal, permission: Needs) -> bool:
    """Whether ``user`` may open a page needing ``permission`` (anywhere, or in one of
    their projects for project-scoped permissions; any one of a tuple)."""
    if permission is None:
        return True
    if isinstance(permission, tuple):
        return any(may(user, one) for one in permission)
    return any(is_allowed(user, permission, p) for p in (None, *sorted(user.projects)))


@dataclass
class Frame:
    """What every page shows around its content."""

    request: Request
    root: Path
    language: str
    user: Principal | None = None
    workspace_name: str = "medlake"
    nav: list[dict[str, Any]] = field(default_factory=list)

    def t(self, key: str) -> str:
        return i18n.translate(key, self.language)


def workspace_root(request: Request) -> Path:
    root: Path = request.app.state.workspace_dir
    return root


def opened_workspace(request: Request) -> Workspace | None:
    """The workspace the application opened at start (None on an app built without one)."""
    workspace: Workspace | None = getattr(request.app.state, "workspace", None)
    return workspace


def frame_for(request: Request) -> Frame:
    """The frame of ``request``: language from its cookie (else the workspace's default),
    the user from the signed session cookie (None when not signed in)."""
    root = workspace_root(request)
    # The workspace the application opened at start: reading medlake.toml again per page
    # (and per live count as the builder is edited) cost about 0.6 ms each time.
    workspace = opened_workspace(request) or open_workspace(root)
    default = workspace.settings.workspace.language
    language = i18n.pick(request.cookies.get(session.LANGUAGE_COOKIE), default)
    frame = Frame(request, root, language, workspace_name=workspace.settings.workspace.name)
    opened = session.decode(session.secret(root), request.cookies.get(session.COOKIE))
    if opened is not None:
        try:
            frame.user = webui.session_principal(workspace, opened.user_name, opened.token_id)
        except AuthenticationError:
            frame.user = None
    if frame.user is not None:
        here = request.url.path.removesuffix(".json")
        frame.nav = [
            {"label": frame.t(key), "href": href, "active": here.startswith(href)}
            for key, href, permission in NAVIGATION
            if may(frame.user, permission)
        ]
    return frame


@contextlib.contextmanager
def running_as(user: Principal) -> Iterator[None]:
    """Run service calls as ``user``, so each service's own policy check sees the
    signed-in user, not the server's login."""
    with acting_as(user):
        yield


def jsonable(value: Any) -> Any:
    """``value`` as plain JSON data: dates as ISO strings, NaN as None, tuples as lists."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v) for v in value]
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, (dt.date, dt.datetime, dt.time)):
        return value.isoformat()
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, (str, int, bool)):
        return value
    if hasattr(value, "item"):  # NumPy scalars
        return jsonable(value.item())
    return str(value)


def wants_json(request: Request) -> bool:
    if request.url.path.endswith(".json"):
        return True
    accept = request.headers.get("accept", "")
    return "application/json" in accept and "text/html" not in accept


def render(frame: Frame, template: str, context: dict[str, Any], status: int = 200) -> Response:
    """The page's context as HTML through ``template``, or as its JSON twin."""
    if wants_json(frame.request):
        return JSONResponse(context, status_code=status)
    data = Markup(json.dumps(context, ensure_ascii=False).replace("</", "<\\/"))
    return templates.TemplateResponse(
        frame.request,
        template,
        {"page": context, "ui": frame, "t": frame.t, "page_json": data, "version": __version__},
        status_code=status,
    )


def error_page(frame: Frame, error: MedlakeError) -> Response:
    status = problems.status_for(error)
    kind = type(error).__name__
    if wants_json(frame.request):
        return problems.problem(status, kind, error.message, kind, frame.request.url.path)
    context = {"status": status, "kind": kind, "detail": error.message}
    return render(frame, "error.html", context, status=status)


def to_login(request: Request) -> Response:
    if wants_json(request):
        return problems.problem(401, "Authentication", "sign in first (POST /ui/login)",
                                "AuthenticationError", request.url.path)  # fmt: skip
    target = quote(request.url.path + (f"?{request.url.query}" if request.url.query else ""))
    return RedirectResponse(f"/ui/login?next={target}", status_code=303)


PageBuilder = Callable[[Frame], dict[str, Any]]


def page(path: str, template: str, permission: Needs = None,
         project_arg: str | None = None) -> Callable[[PageBuilder], PageBuilder]:  # fmt: skip
    """Register a page at ``path`` and ``path.json``, checked with ``permission``.

    ``project_arg`` names a query parameter holding the project the check is made in
    (researchers' project-scoped permissions). A tuple of permissions lets in a user
    holding any one of them (a refusal names, and audits, the first).
    """

    def decorate(build: PageBuilder) -> PageBuilder:
        def endpoint(request: Request) -> Response:
            frame = frame_for(request)
            if frame.user is None:
                return to_login(request)
            try:
                if isinstance(permission, tuple):
                    if not may(frame.user, permission):
                        access.require(frame.root, permission[0], user=frame.user.user_name)
                elif permission is not None:
                    project = request.query_params.get(project_arg) if project_arg else None
                    access.require(frame.root, permission, user=frame.user.user_name,
                                   project_id=project or None)  # fmt: skip
                with running_as(frame.user):
                    context = jsonable(build(frame))
            except MedlakeError as error:
                return error_page(frame, error)
            return render(frame, template, context)

        endpoint.__name__ = f"ui_{build.__name__}"
        # The twin first: ``/x/{id}`` would otherwise take ``/x/abc.json`` as id "abc.json".
        router.add_api_route(f"{path}.json", endpoint, methods=["GET"],
                             name=f"ui_{build.__name__}_json")  # fmt: skip
        router.add_api_route(path, endpoint, methods=["GET"], name=f"ui_{build.__name__}")
        return build

    return decorate

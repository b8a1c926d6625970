"""Errors as RFC 9457 problem documents, from one place.

Every :class:`~medlake.errors.MedlakeError` a service raises becomes
``application/problem+json`` with a status chosen by its class, the one-line message as
``detail`` and a ``type`` URI naming the class, so clients can branch on it.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from medlake import errors

PROBLEM_JSON = "application/problem+json"
TYPE_BASE = "https://medlake.example.org/problems/"

#: Most specific class first.
STATUS_BY_ERROR: tuple[tuple[type[errors.MedlakeError], int], ...] = (
    (errors.AuthenticationError, 401),
    (errors.AccessDeniedError, 403),
    (errors.NotFoundError, 404),
    (errors.WorkspaceFrozenError, 423),
    (errors.SchemaVersionError, 409),
    (errors.WriteConflictError, 409),
    (errors.InputError, 422),
    (errors.UsageError, 400),
    (errors.NotAWorkspaceError, 503),
    (errors.MissingDependencyError, 501),
)


def status_for(error: errors.MedlakeError) -> int:
    return next((status for kind, status in STATUS_BY_ERROR if isinstance(error, kind)), 500)


def problem(status: int, title: str, detail: str, kind: str, instance: str) -> JSONResponse:
    body = {"type": TYPE_BASE + kind, "title": title, "status": status, "detail": detail,
            "instance": instance}  # fmt: skip
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def install(app: FastAPI) -> None:
    """Register the handlers that turn every error into a problem document."""

    @app.exception_handler(errors.MedlakeError)
    async def medlake_error(request: Request, error: errors.MedlakeError) -> JSONResponse:
        status = status_for(error)
        kind = type(error).__name__
        return problem(status, _title(kind), error.message, kind, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, error: RequestValidationError) -> JSONResponse:
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        detail = f"{where}: {first.get('msg', 'invalid request')}"
        return problem(422, "Invalid request", detail, "InvalidRequest", request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        return problem(error.status_code, str(error.detail), str(error.detail),
                       f"Http{error.status_code}", request.url.path)  # fmt: skip


def _title(kind: str) -> str:
    words = []
    for char in kind.removesuffix("Error"):
        if char.isupper() and words:
            words.append(" ")
        words.append(char.lower() if words else char)
    return "".join(words)

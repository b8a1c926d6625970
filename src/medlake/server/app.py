"""The FastAPI application for one workspace: routers under ``/api/v1``, problem documents
for every error, stable operation ids (the route function's name) for generated clients."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute

from medlake import __version__
from medlake.config import open_workspace
from medlake.server import problems
from medlake.server.routers import cohorts, persons, quarantine, system
from medlake.server.ui import install as install_ui

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    return route.name


def create_app(workspace_dir: Path | None) -> FastAPI:
    """The application serving ``workspace_dir`` (checked to be a workspace now)."""
    workspace = open_workspace(workspace_dir)
    app = FastAPI(
        title="medlake",
        version=__version__,
        description="Research data platform for hospitals: OMOP CDM lake, cohorts, omics.",
        generate_unique_id_function=_operation_id,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.workspace_dir = workspace.root
    problems.install(app)
    for router in (system.router, quarantine.router, cohorts.router, persons.router):
        app.include_router(router, prefix=API_PREFIX)
    install_ui(app)  # the web pages under /ui (docs/ui.md)
    return app

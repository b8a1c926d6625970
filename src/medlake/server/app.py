"""The FastAPI application for one workspace: routers under ``/api/v1``, problem documents
for every error, stable operation ids (the route function's name) for generated clients."""

from __future__ import annotations

import gc
import socket
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.routing import APIRoute

from medlake import __version__
from medlake.config import open_workspace
from medlake.server import problems
from medlake.server.routers import (
    analyses,
    audit,
    cohorts,
    empi,
    ingest,
    jobs,
    listener,
    persons,
    protect,
    quality,
    quarantine,
    system,
)
from medlake.server.ui import install as install_ui
from medlake.service.audit import audit_journal
from medlake.service.jobs import JobRunner
from medlake.service.lake_pool import serving
from medlake.service.listen import ServedListener
from medlake.service.live_link import LiveLinks

API_PREFIX = "/api/v1"


def _operation_id(route: APIRoute) -> str:
    return route.name


#: Seconds after start when what the warm-up made (pooled engines, prepared statements)
#: is frozen too.
FREEZE_AGAIN_S = 30.0


def _freeze_long_lived() -> None:
    """Take what exists at start (modules, the app, settings) out of the collector's full
    passes, and again what the warm-up made once it is done: those objects live as long as
    the server, and a full (generation 2) pass over them stalled every request in flight
    for 60-75 ms. Later garbage is collected as before."""
    gc.collect()
    gc.freeze()
    timer = threading.Timer(FREEZE_AGAIN_S, gc.freeze)
    timer.daemon = True
    timer.start()


def create_app(
    workspace_dir: Path | None,
    *,
    job_workers: int = 2,
    mllp_port: int | None = None,
    mllp_socket: socket.socket | None = None,
) -> FastAPI:
    """The application serving ``workspace_dir`` (checked to be a workspace now).

    Its background-job runner starts with the application (recovering the jobs a
    previous server left) and stops with it, and so does the HL7 v2 listener when
    ``[listen] port`` is set (``mllp_port`` instead; ``mllp_socket``: a socket already
    bound for it, as ``medlake serve`` binds it before starting).
    """
    workspace = open_workspace(workspace_dir)
    listen = workspace.settings.listen
    if mllp_port is not None:
        listen = listen.model_copy(update={"port": mllp_port})
    import medlake.service.job_kinds  # noqa: F401  (registers the kinds of job)

    runner = JobRunner(workspace, workers=job_workers)
    # Live ingests (a Bundle POSTed) link in one background job after a quiet period.
    links = LiveLinks(workspace, runner.enqueue)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # One connection held while serving keeps DuckDB's database instance open, so
        # each request's connection is a cheap cursor on it rather than a re-open of the
        # file (and threads never race to re-attach it as the last one closes); services
        # that read per request borrow open engines from the pool (lake_pool.pooled_lake).
        # Audited reads are journaled while serving (medlake.audit.journal).
        with serving(workspace), audit_journal(workspace):
            runner.start()
            hl7_listener = None
            try:
                if listen.port is not None:
                    hl7_listener = ServedListener(
                        workspace, links, host=listen.host, port=listen.port,
                        source_system=listen.source_system,
                        ingest_every=listen.ingest_every_seconds, sock=mllp_socket,
                    )  # fmt: skip
                    await hl7_listener.start()
                    app.state.listener = hl7_listener
                _freeze_long_lived()
                yield
            finally:
                if hl7_listener is not None:  # first: its last flush may queue a link job
                    app.state.listener = None
                    await hl7_listener.stop()
                # A link job still waiting stays queued in the job table: the next start
                # runs it (JobRunner.recover).
                links.close(run_now=False)
                runner.stop()

    app = FastAPI(
        lifespan=lifespan,
        title="medlake",
        version=__version__,
        description="Research data platform for hospitals: OMOP CDM lake, cohorts, omics.",
        generate_unique_id_function=_operation_id,
        openapi_url=f"{API_PREFIX}/openapi.json",
        docs_url=f"{API_PREFIX}/docs",
        redoc_url=None,
    )
    app.state.workspace_dir = workspace.root
    # The open workspace, for routes on the hot path (patient 360): reading medlake.toml
    # again on each call cost 1.4 ms of CPU.
    app.state.workspace = workspace
    app.state.jobs = runner
    app.state.live_links = links
    app.state.listener = None  # the ServedListener while it runs
    # The ransomware watch runs with the server ([watch] in_serve; docs/protection.md).
    from medlake.service.watch import with_background_watch

    app.router.lifespan_context = with_background_watch(app.router.lifespan_context, workspace)
    # Finished jobs' working files are cleaned at start and then periodically ([jobs]).
    from medlake.service.job_retention import with_job_retention

    app.router.lifespan_context = with_job_retention(app.router.lifespan_context, workspace)
    # The person tables are kept in person order while serving ([layout]).
    from medlake.service.lake_layout import with_layout_maintenance

    app.router.lifespan_context = with_layout_maintenance(app.router.lifespan_context, workspace)
    # Patient 360's serving copy is verified or built in the background ([patient360]).
    from medlake.service.patient360_copy import with_serving_copy

    app.router.lifespan_context = with_serving_copy(app.router.lifespan_context, workspace)
    problems.install(app)
    routers = (
        system.router,
        jobs.router,
        ingest.router,
        listener.router,
        quarantine.router,
        empi.router,
        cohorts.router,
        cohorts.concepts_router,
        persons.router,
        quality.router,
        analyses.router,
        audit.router,
        protect.router,
    )
    for router in routers:
        app.include_router(router, prefix=API_PREFIX)
    install_ui(app)  # the web pages under /ui (docs/ui.md)
    return app

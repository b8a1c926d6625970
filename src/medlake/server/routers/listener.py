"""The HL7 v2 (MLLP) listener the server runs beside the API (``[listen] port``): whether
it listens, where, and how many messages it landed and has still to ingest."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from medlake.access import Permission
from medlake.server.deps import CurrentUser, WorkspaceDir, require
from medlake.service.listen import ServedListener

router = APIRouter(tags=["ingest"])


class ListenerStatus(BaseModel):
    listening: bool
    host: str | None = None
    port: int | None = None
    source_system: str | None = None
    ingest_every_seconds: float | None = None
    landed: int = 0  # since the server started
    pending: int = 0  # landed, not ingested yet


@router.get("/listener", response_model=ListenerStatus)
def listener_status(request: Request, root: WorkspaceDir, user: CurrentUser) -> ListenerStatus:
    """The server's HL7 v2 listener: its address, the messages it landed since the start
    and those waiting for the next ingest (``listening`` false when none runs)."""
    require(root, user, Permission.INGEST)
    listener: ServedListener | None = request.app.state.listener
    if listener is None or listener.service is None:
        return ListenerStatus(listening=False)
    return ListenerStatus(listening=True, host=listener.host, port=listener.bound_port,
                          source_system=listener.source_system,
                          ingest_every_seconds=listener.ingest_every,
                          landed=listener.service.landed,
                          pending=listener.service.pending())  # fmt: skip

"""Patient 360: one person's timeline across every linked source system.

The route answers many calls a second, so it does the least around the service call: the
access check is the service's own (``@authorized``, with the signed-in user already in
context; a refusal is audited once, there), and the timeline is serialised straight to
JSON bytes (orjson) rather than validated and re-encoded field by field as FastAPI does
for a returned dict, which cost more than reading the timeline for a busy patient.
"""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Request, Response

from medlake.access import Principal
from medlake.config import Workspace
from medlake.server.deps import CurrentUser
from medlake.service.patient360 import person_timeline

router = APIRouter(prefix="/persons", tags=["patient 360"])

_TIMELINE_SCHEMA = {
    "type": "object",
    "additionalProperties": True,
    "description": "person_id, year_of_birth, gender, death_date, source_patients, items "
    "(kind, start, end, concept, source value, values, visit, source system, source record "
    "id, batch), omics_samples and counts per kind.",
}


async def open_workspace_of(request: Request) -> Workspace | Path:
    """The workspace the application opened at start (its folder on an app without it):
    the service then neither reads ``medlake.toml`` again nor resolves the folder."""
    state = request.app.state
    return getattr(state, "workspace", None) or state.workspace_dir


def get_person_timeline(
    root: Any, user: Principal, person_id: int, notes: bool = False
) -> dict[str, Any]:
    """The timeline as a dict (the web UI's person page reads it through here). The
    service checks the policy as the user in context and audits the read."""
    return person_timeline(root, person_id, with_note_text=notes).as_dict()


def _encode(value: object) -> object:
    if isinstance(value, decimal.Decimal):
        return float(value)
    if isinstance(value, dt.time | dt.timedelta):
        return str(value)
    raise TypeError(f"cannot encode {type(value).__name__} as JSON")


@router.get(
    "/{person_id}/timeline",
    name="get_person_timeline",
    response_class=Response,
    responses={200: {"content": {"application/json": {"schema": _TIMELINE_SCHEMA}},
                     "description": "The person's timeline."}},
)  # fmt: skip
def person_timeline_route(
    root: Annotated[Workspace | Path, Depends(open_workspace_of)],
    user: CurrentUser,
    person_id: int,
    notes: Annotated[bool, Query(description="Include each note's full text.")] = False,
) -> Response:
    """Every item of the person's record, oldest first, each with its source system and
    record id. Identified data (real dates, source ids): stewards; the read is audited."""
    timeline = get_person_timeline(root, user, person_id, notes=notes)
    body = orjson.dumps(timeline, default=_encode, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, media_type="application/json")

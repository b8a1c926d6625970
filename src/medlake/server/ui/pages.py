"""The pages: sign in, dashboard, cohort builder, patient timeline, EMPI review, QC
report and audit search (analyses: :mod:`medlake.server.ui.analyses`).

Each page function returns its context; :func:`~medlake.server.ui.web.page` checks the
permission, renders it and serves its JSON twin. Reads go through the same service
functions (and, where the API has the route, the same route function) as the API.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import Body, Form, Request
from fastapi.responses import JSONResponse, RedirectResponse, Response

from medlake.access import Permission, is_allowed
from medlake.audit.query import EventFilter
from medlake.cohort import example_path
from medlake.config import open_workspace
from medlake.errors import AuthenticationError, MedlakeError, UsageError
from medlake.server.routers.cohorts import (
    SaveRequest,
    count_cohort,
    get_cohort_definition,
    list_cohort_definitions,
    save_cohort_definition,
    search_concepts,
)
from medlake.server.routers.persons import get_person_timeline
from medlake.server.ui import session
from medlake.server.ui.web import (
    Frame,
    error_page,
    frame_for,
    jsonable,
    opened_workspace,
    page,
    render,
    router,
    running_as,
    to_login,
)
from medlake.service import access, webui
from medlake.service import audit as audit_service
from medlake.service import quality as quality_service
from medlake.service import watch as watch_service
from medlake.service.empi import decide_pair, review_queue
from medlake.service.workspace import lake_summary

#: Domains an entry event or a rule may use in the builder (the cohort model's names).
BUILDER_DOMAINS = ("condition_occurrence", "drug_exposure", "measurement",
                   "procedure_occurrence", "observation", "visit_occurrence")  # fmt: skip
#: Audit events the dashboard lists for those who read the trail.
RECENT_EVENTS = 8
#: EMPI fields shown side by side, with the evidence key that judges each.
EMPI_FIELDS: tuple[tuple[str, str], ...] = (
    ("source_system", ""), ("source_patient_id", ""), ("name_hanzi", "name"),
    ("name_pinyin", "name"), ("family_name", "name"), ("given_name", "name"),
    ("name_latin", "name"), ("resident_id", "resident_id"), ("birth_date", "birth_date"),
    ("sex", "sex"), ("phone", "phone"), ("address", "address"), ("postcode", "postcode"),
    ("email", "email"), ("person_id", ""),
)  # fmt: skip


def _safe_next(target: str | None) -> str:
    """Only redirect within the UI (never to another site)."""
    if target and target.startswith("/ui/") and not target.startswith("//"):
        return target
    return "/ui/dashboard"


def _same_origin(request: Request) -> bool:
    """A state-changing request must come from our own pages (the cookie is SameSite=Strict
    too; this also refuses a cross-site form where a browser sends no SameSite)."""
    origin = request.headers.get("origin") or request.headers.get("referer")
    if not origin:
        return True  # non-browser clients; the cookie still has to be valid
    return urlsplit(origin).netloc == request.url.netloc


# ---------------------------------------------------------------------- sign in


@router.get("/", name="ui_home")
def home() -> Response:
    return RedirectResponse("/ui/dashboard", status_code=303)


def _login_page(frame: Frame, next_: str, error: str | None, status: int = 200) -> Response:
    return render(frame, "login.html", {"next": _safe_next(next_), "error": error}, status)


@router.get("/login", name="ui_login")
@router.get("/login.json", name="ui_login_json")
def login_form(request: Request, next: str = "/ui/dashboard") -> Response:
    frame = frame_for(request)
    if frame.user is not None and not request.url.path.endswith(".json"):
        return RedirectResponse(_safe_next(next), status_code=303)  # signed in already
    return _login_page(frame, next, None)


@router.post("/login", name="ui_sign_in")
def sign_in(
    request: Request,
    user: Annotated[str, Form()],
    token: Annotated[str, Form()],
    next: Annotated[str, Form()] = "/ui/dashboard",
) -> Response:
    """Check the token (it must be ``user``'s), then open a signed session cookie."""
    frame = frame_for(request)
    try:
        principal = access.authenticate(frame.root, token.strip())
        if principal.user_name != user.strip():
            raise AuthenticationError("the token does not belong to that user")
    except AuthenticationError as error:
        return _login_page(frame, next, error.message, status=401)
    value = session.encode(session.secret(frame.root), principal.user_name, token.strip())
    response = RedirectResponse(_safe_next(next), status_code=303)
    response.set_cookie(session.COOKIE, value, max_age=session.LIFETIME_S, httponly=True,
                        samesite="strict", secure=request.url.scheme == "https",
                        path="/")  # fmt: skip
    return response


@router.post("/logout", name="ui_sign_out")
def sign_out() -> Response:
    response = RedirectResponse("/ui/login", status_code=303)
    response.delete_cookie(session.COOKIE, path="/")
    return response


@router.get("/lang/{language}", name="ui_language")
def set_language(language: str, next: str = "/ui/dashboard") -> Response:
    response = RedirectResponse(_safe_next(next), status_code=303)
    if language in ("en", "zh"):
        response.set_cookie(session.LANGUAGE_COOKIE, language, max_age=365 * 86400,
                            samesite="lax", path="/")  # fmt: skip
    return response


# ---------------------------------------------------------------------- dashboard


@page("/dashboard", "dashboard.html")
def dashboard(frame: Frame) -> dict[str, Any]:
    """What the signed-in user's role may see of the lake's state; sections they may not
    see are None."""
    user = frame.user
    assert user is not None
    counts = is_allowed(user, Permission.COUNT)
    ingest = is_allowed(user, Permission.INGEST)
    lake = lake_summary(frame.root).as_dict() if counts else None
    if lake is not None:
        tables = lake["tables"]
        lake = {"engine": lake["engine"], "schema_version": lake["schema_version"],
                "persons": tables.get("person", 0),
                "tables": {k: v for k, v in tables.items() if v}}  # fmt: skip
    return {
        "user": user.user_name,
        "role": user.role.value,
        "lake": lake,
        "records_by_source": webui.records_by_source(frame.root) if counts else None,
        "batches": webui.recent_batches(frame.root) if ingest else None,
        "quarantine": webui.quarantine_by_source(frame.root) if ingest else None,
        "qc": quality_service.qc_summary(frame.root)
        if is_allowed(user, Permission.RUN_QC) else None,
        "recent_events": audit_service.show_events(frame.root, EventFilter(limit=RECENT_EVENTS))
        if is_allowed(user, Permission.READ_AUDIT) else None,
        "watch": _watch(frame) if is_allowed(user, Permission.PROTECT) else None,
    }  # fmt: skip


def _watch(frame: Frame) -> dict[str, Any]:
    """The ransomware watch's freeze as admins see it (``protect``): frozen or not, and
    the freeze record; ``?cleared=1`` after the freeze was lifted here."""
    record = watch_service.freeze_status(frame.root)
    cleared = frame.request.query_params.get("cleared") == "1"
    return {"frozen": record is not None, "record": record, "cleared": cleared}


@router.post("/watch/clear", name="ui_clear_watch_freeze")
def ui_clear_watch_freeze(request: Request, note: Annotated[str, Form()] = "") -> Response:
    """Lift the ransomware watch's freeze through the running server (the API's
    ``POST /protect/watch/clear``: admins, audited with the note)."""
    frame = frame_for(request)
    if frame.user is None or not _same_origin(request):
        return to_login(request)
    try:
        access.require(frame.root, Permission.PROTECT, user=frame.user.user_name)
        if not note.strip():
            raise UsageError("note: say what was reviewed")
        with running_as(frame.user):
            watch_service.clear(frame.root, note=note.strip())
    except MedlakeError as error:
        return error_page(frame, error)
    return RedirectResponse("/ui/dashboard?cleared=1", status_code=303)


# ---------------------------------------------------------------------- cohorts


@page("/cohorts", "cohorts.html", Permission.COUNT)
def cohorts(frame: Frame) -> dict[str, Any]:
    assert frame.user is not None
    workspace = open_workspace(frame.root)
    example = json.loads(example_path("t2d_hba1c_metformin").read_text("utf-8"))
    return {
        "domains": list(BUILDER_DOMAINS),
        "threshold": workspace.settings.privacy.small_cell_threshold,
        "exact_allowed": is_allowed(frame.user, Permission.COUNT_EXACT),
        "example": example,
        "saved": list_cohort_definitions(frame.root, frame.user),
    }


@router.post("/cohorts/count.json", name="ui_count_cohort")
def ui_count_cohort(
    request: Request,
    definition: Annotated[dict[str, Any], Body()],
    exact: bool = False,
) -> Response:
    """The builder's live count: the API's own count route, run as the signed-in user."""
    return _api_call(
        request,
        lambda f: count_cohort(
            opened_workspace(request) or f.root, f.user, definition, circe=False, exact=exact
        ),
        post=True,
    )


def _api_call(request: Request, call: Callable[[Frame], Any], *, post: bool = False) -> Response:
    """Run one of the API's own route functions as the signed-in user; its answer as JSON
    (errors as problem documents)."""
    frame = frame_for(request)
    if frame.user is None or (post and not _same_origin(request)):
        return to_login(request)
    try:
        with running_as(frame.user):
            result = call(frame)
    except MedlakeError as error:
        return error_page(frame, error)
    return JSONResponse(jsonable(result))


@router.get("/concepts.json", name="ui_search_concepts")
def ui_search_concepts(request: Request, q: str = "", domain: str | None = None) -> Response:
    """Concepts for the builder's search box: the API's concept search, best first."""
    query = q.strip()[:255]

    def found(frame: Frame) -> dict[str, Any]:
        assert frame.user is not None
        concepts = search_concepts(frame.root, frame.user, query, domain, 25) if query else []
        return {"query": query, "domain": domain, "concepts": concepts}

    return _api_call(request, found)


@router.post("/cohorts/definitions.json", name="ui_save_cohort_definition")
def ui_save_cohort_definition(request: Request, body: Annotated[SaveRequest, Body()]) -> Response:
    """Save the builder's definition under a name (the API's save route)."""
    return _api_call(request, lambda f: save_cohort_definition(f.root, f.user, body), post=True)


@router.get("/cohorts/definitions/{definition_id:int}.json", name="ui_get_cohort_definition")
def ui_get_cohort_definition(request: Request, definition_id: int) -> Response:
    """A saved definition with its JSON, for the builder to load."""
    return _api_call(request, lambda f: get_cohort_definition(f.root, f.user, definition_id))


# ---------------------------------------------------------------------- patient 360


@page("/persons", "persons.html", Permission.READ_IDENTIFIED)
def persons(frame: Frame) -> dict[str, Any]:
    """Find a person by person id or by a source system's patient id."""
    query = frame.request.query_params.get("q", "").strip()
    return {"query": query, "matches": webui.find_persons(frame.root, query) if query else []}


@page("/persons/{person_id:int}", "person.html", Permission.READ_IDENTIFIED)
def person(frame: Frame) -> dict[str, Any]:
    """Patient 360 through the API's own route (same check, same audited read)."""
    assert frame.user is not None
    person_id = int(frame.request.path_params["person_id"])
    notes = frame.request.query_params.get("notes") == "1"  # each note's full text
    timeline = get_person_timeline(frame.root, frame.user, person_id, notes=notes)
    kinds: dict[str, int] = {}
    for item in timeline["items"]:
        kinds[item["kind"]] = kinds.get(item["kind"], 0) + 1
    return timeline | {"domains": [{"kind": k, "items": n} for k, n in kinds.items()],
                       "notes": notes}  # fmt: skip


# ---------------------------------------------------------------------- EMPI review


@page("/empi", "empi.html", Permission.REVIEW_LINKS)
def empi(frame: Frame) -> dict[str, Any]:
    """The most uncertain queued pair, its records side by side with the field evidence."""
    total, items = review_queue(frame.root, limit=1)
    last = frame.request.query_params.get("decided")
    pair = None
    if items:
        item = items[0]
        rows = []
        for name, evidence_key in EMPI_FIELDS:
            left, right = item.left.get(name), item.right.get(name)
            if left is None and right is None:
                continue
            evidence = item.evidence.get(evidence_key) if evidence_key else None
            rows.append({"field": name, "left": left, "right": right,
                         "evidence": evidence.get("label") if evidence else None,
                         "level": evidence.get("level") if evidence else None})  # fmt: skip
        pair = {"pair_id": item.pair_id, "match_probability": item.match_probability,
                "fields": rows}  # fmt: skip
    return {"total": total, "pair": pair, "last_decided": last,
            "last_decision": frame.request.query_params.get("decision")}  # fmt: skip


@router.post("/empi/decide", name="ui_decide_pair")
def ui_decide_pair(
    request: Request,
    pair_id: Annotated[str, Form()],
    decision: Annotated[str, Form()],
) -> Response:
    """Record the steward's decision on a pair and show the next one."""
    frame = frame_for(request)
    if frame.user is None or not _same_origin(request):
        return to_login(request)
    try:
        if decision not in ("match", "no_match"):
            raise UsageError(f"decision must be 'match' or 'no_match', not {decision!r}")
        access.require(frame.root, Permission.REVIEW_LINKS, user=frame.user.user_name)
        with running_as(frame.user):
            decide_pair(frame.root, pair_id, decision, steward=frame.user.user_name)
    except MedlakeError as error:
        return error_page(frame, error)
    return RedirectResponse(f"/ui/empi?decided={pair_id}&decision={decision}", status_code=303)


# ---------------------------------------------------------------------- QC and audit


@page("/qc", "qc.html", Permission.RUN_QC)
def qc(frame: Frame) -> dict[str, Any]:
    """The latest data-quality run: counts by category, and its checks (failed ones by
    default; ``?status=all`` for every check)."""
    params = frame.request.query_params
    status = params.get("status", "fail")
    table = params.get("table") or None
    summary = quality_service.qc_summary(frame.root)
    results = quality_service.check_results(frame.root)
    tables = sorted({r["cdm_table"] for r in results if r.get("cdm_table")})
    shown = [
        {k: r.get(k) for k in ("check_id", "category", "cdm_table", "cdm_field", "status",
                               "rows_violating", "rows_total", "pct_violating", "threshold_pct")}
        for r in results
        if (status == "all" or r["status"] == status) and (table is None or r["cdm_table"] == table)
    ]  # fmt: skip
    shown.sort(key=lambda r: (r["status"] == "pass", -(r["pct_violating"] or 0), r["check_id"]))
    return {"run": summary["run"], "counts": summary["counts"], "status": status,
            "table": table, "tables": tables, "checks": shown}  # fmt: skip


def _when(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    try:
        return dt.datetime.fromisoformat(text)
    except ValueError:
        raise UsageError(f"not a date or time: {text!r} (use YYYY-MM-DD)") from None


@page("/audit", "audit.html", Permission.READ_AUDIT)
def audit(frame: Frame) -> dict[str, Any]:
    """Audit events matching the form's filters, newest first, and the chain's state."""
    params = frame.request.query_params
    person = params.get("person_id") or None
    if person is not None and not person.isdigit():
        raise UsageError(f"person id must be a number, not {person!r}")
    filters = {
        "actor": params.get("actor") or None,
        "action": params.get("action") or None,
        "outcome": params.get("outcome") or None,
        "person_id": int(person) if person else None,
        "since": params.get("since") or None,
        "until": params.get("until") or None,
    }
    where = EventFilter(actor=filters["actor"], action=filters["action"],
                        outcome=filters["outcome"], person_id=filters["person_id"],
                        since=_when(filters["since"]), until=_when(filters["until"]),
                        limit=200)  # fmt: skip
    events = audit_service.show_events(frame.root, where)
    verified = audit_service.verify_trail(frame.root, anchor=False)
    return {"filters": filters, "events": events, "chain_ok": verified.ok,
            "chain_events": verified.events}  # fmt: skip

"""What the web UI needs that no other use case asks for: the dashboard's aggregates and
the check that a browser session still stands for an enabled user with a live token.

The pages themselves live in :mod:`medlake.server.ui`; every page checks the signed-in
user's permission with :func:`medlake.service.access.require`, and each function here
passes the policy again itself (``@authorized``, as every service entry point does).
They only read; all but :func:`find_persons` return aggregates or concepts, no patient.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import ibis

from medlake.access import Permission, Principal, store
from medlake.config import Workspace, as_workspace
from medlake.errors import AuthenticationError
from medlake.service.policy import authorized, may
from medlake.service.workspace import open_lake

#: How many recent batches the dashboard lists.
RECENT_BATCHES = 12


# policy: none: this *is* the authentication of a browser session (as access.authenticate).
def session_principal(
    workspace_dir: Path | Workspace | None, user_name: str, token_id: str
) -> Principal:
    """The user a signed session cookie names, read afresh (role and projects as they are
    now), provided the token the session was opened with is neither revoked nor expired.

    Raises:
        AuthenticationError: the token was revoked or expired, or the user was disabled.
    """
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        tokens = engine.table(store.TOKENS)
        rows = engine.execute(
            tokens.filter((tokens.token_id == token_id) & (tokens.user_name == user_name))
        ).to_pylist()
        now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
        if (
            not rows
            or rows[0]["revoked_at"] is not None
            or (rows[0]["expires_at"] is not None and rows[0]["expires_at"] <= now)
        ):
            raise AuthenticationError("the session's token was revoked or expired: sign in again")
        return store.principal(engine, user_name)


#: The clinical tables the dashboard charts, with each row's id and date columns.
DATED_TABLES: tuple[tuple[str, str, str], ...] = (
    ("visit_occurrence", "visit_occurrence_id", "visit_start_date"),
    ("condition_occurrence", "condition_occurrence_id", "condition_start_date"),
    ("drug_exposure", "drug_exposure_id", "drug_exposure_start_date"),
    ("procedure_occurrence", "procedure_occurrence_id", "procedure_date"),
    ("measurement", "measurement_id", "measurement_date"),
    ("observation", "observation_id", "observation_date"),
)


@authorized(Permission.COUNT)
def records_by_source(workspace_dir: Path | Workspace | None) -> list[dict[str, Any]]:
    """Current clinical records per source system and calendar month of the event
    (visits, diagnoses, drugs, procedures, measurements, observations), oldest first:
    a source that stopped sending shows as a gap."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        records = engine.table("source_record")
        current = records.filter(records.is_current)
        parts = []
        for table, row_id, date in DATED_TABLES:
            rows = engine.table(table)
            mine = current.filter(current.cdm_table == table)
            joined = rows.join(mine, rows[row_id] == mine.cdm_row_id)
            parts.append(
                joined.select(source_system=joined.source_system, month=joined[date].truncate("M"))
            )
        union = ibis.union(*parts, distinct=False)
        dated = union.filter(union.month.notnull())
        query = (
            dated.group_by(["source_system", "month"])
            .aggregate(records=dated.count())
            .order_by(["month", "source_system"])
        )
        return engine.execute(query).to_pylist()


@authorized(Permission.INGEST)
def recent_batches(
    workspace_dir: Path | Workspace | None, limit: int = RECENT_BATCHES
) -> list[dict[str, Any]]:
    """The latest ingest batches (newest first) with what each loaded or quarantined."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        batches = engine.table("ingest_batch")
        query = batches.select(
            "batch_id", "source_system", "format", "original_name", "received_at", "status",
            "rows_loaded", "rows_quarantined",
        ).order_by([batches.received_at.desc(), batches.batch_id]).limit(limit)  # fmt: skip
        return engine.execute(query).to_pylist()


@authorized(Permission.INGEST)
def quarantine_by_source(workspace_dir: Path | Workspace | None) -> list[dict[str, Any]]:
    """Open quarantine entries per source system and reason (counts, no payloads)."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        entries = engine.table("quarantine")
        open_ = entries.filter(entries.resolved_at.isnull())
        query = (
            open_.group_by(["source_system", "reason"])
            .aggregate(entries=open_.count())
            .order_by([lambda t: t.entries.desc(), "source_system", "reason"])
        )
        return engine.execute(query).to_pylist()


@authorized(Permission.READ_IDENTIFIED)
def find_persons(workspace_dir: Path | Workspace | None, text: str) -> list[dict[str, Any]]:
    """Persons whose id is ``text``, or linked to a source patient whose id is ``text``
    (identified data: the caller checks ``read_identified``)."""
    text = text.strip()
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        patients = engine.table("source_patient")
        match = patients.source_patient_id == text
        if text.isdigit():
            match |= patients.person_id == int(text)
        query = (
            patients.filter(match & patients.person_id.notnull())
            .select("person_id", "source_system", "source_patient_id")
            .order_by(["person_id", "source_system", "source_patient_id"])
            .limit(50)
        )
        return engine.execute(query).to_pylist()


def analysis_jobs(workspace_dir: Path | Workspace | None) -> list[dict[str, Any]]:
    """Succeeded GWAS and DE background jobs with their parsed result, those the acting
    user may analyse in (their project's; none where the lake has no ``job`` table yet)."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        if not engine.has_table("job"):
            return []
        jobs = engine.table("job")
        query = jobs.filter(jobs.kind.isin(["gwas", "de"]) & (jobs.status == "succeeded"))
        rows = engine.execute(
            query.select("job_id", "kind", "project_id", "result_json", "finished_at")
        ).to_pylist()
    out = []
    for row in rows:
        try:
            result = json.loads(row.pop("result_json") or "{}")
        except ValueError:
            continue
        if may(Permission.ANALYZE, row["project_id"]):  # only analyses the caller may see
            out.append(row | {"result": result if isinstance(result, dict) else {}})
    return out

"""Release approval: a data steward approves an extract before it leaves the hospital.

An extract (``medlake extract``) is written inside the workspace's exports and recorded
by an ``export`` audit event with the SHA-256 of every file it wrote. Approving it checks
that the files are still exactly those (nothing added to or edited in the dataset since),
that the approver is not the person who made it (four eyes), and appends a
``release.approve`` event naming the export, its project and persons count; the folder
gets an ``approval.json`` saying who approved what, when, and the event that records it.
Approval is a record, not a copy: handing the folder over stays an act outside medlake.
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.audit import EventFilter, append_event, events_query
from medlake.config import Workspace, as_workspace
from medlake.errors import AccessDeniedError, InputError, UsageError
from medlake.service.extract import sha256_of
from medlake.service.mirror import refuse_if_frozen
from medlake.service.policy import acting_user_name, authorized
from medlake.service.workspace import open_lake

APPROVAL = "approval.json"




@authorized(Permission.APPROVE_RELEASE)
def approve_release(
    workspace_dir: Path | Workspace | None, out_dir: Path, *, note: str
) -> dict[str, Any]:
    """Approve the extract in ``out_dir`` for release; the approval record.

    Raises:
        UsageError: ``out_dir`` is not an extract of this workspace, or already approved.
        InputError: a file differs from what the export wrote (named), or was added.
        AccessDeniedError: the approver made the extract.
    """
    workspace = as_workspace(workspace_dir)
    out_dir = Path(out_dir).expanduser().resolve()
    refuse_if_frozen(workspace)  # the approval record is a write
    if (out_dir / APPROVAL).exists():
        raise UsageError(f"{out_dir} is already approved (see {APPROVAL})")
    approver = acting_user_name()
    with open_lake(workspace) as engine:
        rows = engine.execute(events_query(engine, EventFilter(action="export"))).to_pylist()
        exports = [
            (row, json.loads(row["detail"] or "{}"))
            for row in rows
            if json.loads(row["detail"] or "{}").get("out_dir") == str(out_dir)
        ]
        if not exports:
            raise UsageError(f"{out_dir}: no extract of this workspace was written there")
        export, detail = exports[0]
        expected: dict[str, str] = detail["files"]
        for name, sha in sorted(expected.items()):
            path = out_dir / name
            if not path.is_file() or sha256_of(path) != sha:
                raise InputError(f"{path}: changed since the export wrote it; extract again")
        extra = sorted(p.name for p in out_dir.iterdir() if p.name not in expected)
        if extra:
            raise InputError(f"{out_dir}: files the export did not write: {', '.join(extra)}")
        if export["actor"] == approver:
            raise AccessDeniedError(
                f"{approver} made this extract and may not approve it: ask another steward"
            )
        event_id = append_event(
            engine,
            actor=approver,
            role="steward",
            action="release.approve",
            object_type="export",
            object_id=str(export["event_id"]),
            project_id=export.get("project_id"),
            detail={"out_dir": str(out_dir), "note": note, "files": expected,
                    "persons": len(detail.get("person_ids", [])),
                    "exported_by": export["actor"]},
        )  # fmt: skip
    approval = {
        "approved_by": approver,
        "approved_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "note": note,
        "export_event_id": export["event_id"],
        "exported_by": export["actor"],
        "project_id": export.get("project_id"),
        "approval_event_id": event_id,
        "files": expected,
    }
    (out_dir / APPROVAL).write_text(json.dumps(approval, indent=2) + "\n", encoding="utf-8")
    return approval

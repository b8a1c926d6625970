"""A FHIR transaction (or batch) Bundle posted to the API, ingested at once, answered
with a ``transaction-response`` Bundle: one entry per request entry, in order.

The Bundle is written to a scratch file and ingested like any FHIR file (landed
unchanged, its own batch, quarantine on bad entries), so the API path and the file path
cannot disagree. Each entry's response comes from the lake afterwards: ``201 Created``
(``200 OK`` when the same content was already loaded) with the resource's location,
or ``422`` with an OperationOutcome carrying the quarantine reason. Medlake stores what
it can of a Bundle (as for files); it does not make the Bundle all-or-nothing.
"""

from __future__ import annotations

import json
import re
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.errors import InputError, WriteConflictError
from medlake.service.ingest import ingest_paths, quarantine_entries
from medlake.service.policy import authorized

BUNDLE_TYPES = ("transaction", "batch")
_ENTRY = re.compile(r"entry (\d+)")


@authorized(Permission.INGEST)
def post_bundle(
    workspace_dir: Path | Workspace | None,
    bundle: Any,
    *,
    source_system: str = "fhir",
    link_later: Callable[[], object] | None = None,
) -> dict[str, Any]:
    """Ingest ``bundle`` (parsed JSON) and return its transaction-response Bundle.

    ``link_later``: called instead of linking inline when the EMPI link after ingest is
    due (the server queues one background link job for many Bundles:
    :mod:`medlake.service.live_link`).
    """
    workspace = as_workspace(workspace_dir)
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise InputError("request body: not a FHIR Bundle (resourceType must be 'Bundle')")
    kind = bundle.get("type")
    if kind not in BUNDLE_TYPES:
        raise InputError(f"Bundle.type: must be transaction or batch, not {kind!r}")
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InputError("Bundle.entry: must be a list")
    scratch = workspace.root / "tmp"
    scratch.mkdir(exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch) as folder:
        path = Path(folder) / "bundle.json"
        path.write_text(json.dumps(bundle, ensure_ascii=False), encoding="utf-8")
        # The client waits on this request: a table's person-order rewrite (minutes on a
        # large lake) is left to the server's maintenance thread.
        report = ingest_paths(workspace, [path], format="fhir", source_system=source_system,
                              person_order=False, link_later=link_later)  # fmt: skip
    result = report.files[0] if report.files else None
    if result is not None and isinstance(result.error, WriteConflictError):
        raise result.error  # nothing was written: 409, send it again (not a bad Bundle)
    if result is None or result.status == "failed":
        why = result.message if result is not None else "nothing was read"
        raise InputError(f"Bundle: could not be ingested: {why}")
    problems: dict[int, str] = {}
    if result.batch_id is not None:
        for entry in quarantine_entries(workspace, batch_id=result.batch_id):
            found = _ENTRY.search(str(entry.get("location") or ""))
            if found:
                problems.setdefault(int(found.group(1)), str(entry.get("reason")))
    unchanged = result.status == "unchanged"
    return {
        "resourceType": "Bundle",
        "type": f"{kind}-response",
        "entry": [_response(n, entry, problems, unchanged) for n, entry in enumerate(entries, 1)],
    }


def _response(n: int, entry: Any, problems: dict[int, str], unchanged: bool) -> dict[str, Any]:
    if n in problems:
        outcome = {"resourceType": "OperationOutcome", "issue": [
            {"severity": "error", "code": "processing", "diagnostics": problems[n]}]}  # fmt: skip
        return {"response": {"status": "422 Unprocessable Entity", "outcome": outcome}}
    resource = entry.get("resource") if isinstance(entry, dict) else None
    response: dict[str, Any] = {"status": "200 OK" if unchanged else "201 Created"}
    if isinstance(resource, dict) and resource.get("id") and resource.get("resourceType"):
        response["location"] = f"{resource['resourceType']}/{resource['id']}"
    return {"response": response}

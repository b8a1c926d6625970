"""The audit trail as use cases: record, anchor, verify and show events.

Services of other domains record events with :func:`medlake.audit.append_event` on the
engine they already hold (inside their transaction, so the event commits with the
work), then call :func:`anchor_if_due` once at the end of the use case so the chain head
reaches ``audit/anchors.jsonl`` every ``[audit] anchor_every`` events. Nothing here
changes or removes an event: the trail only grows.

A mirror (data protection) receives each new anchor by registering a sink with
:func:`add_anchor_sink`, or by listing its anchor file in ``[audit] anchor_copies``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.audit import (
    ANCHORS_FILE,
    Anchor,
    AnchorLog,
    AnchorSink,
    EventFilter,
    VerifyResult,
    append_event,
    chain_head,
    events_query,
    new_anchor,
    read_events,
    read_head,
    verify_events,
)
from medlake.audit.journal import drain, journal_dir, live_journal
from medlake.audit.verify import DELETED, ChainFinding
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.service.mirror import anchor_copies, anchor_sinks
from medlake.service.policy import authorized
from medlake.service.workspace import open_lake

_SINKS: list[AnchorSink] = []


def add_anchor_sink(sink: AnchorSink) -> None:
    """Have ``sink`` called with every anchor written from now on (in this process)."""
    if sink not in _SINKS:
        _SINKS.append(sink)


def remove_anchor_sink(sink: AnchorSink) -> None:
    if sink in _SINKS:
        _SINKS.remove(sink)


def anchor_log(workspace: Workspace) -> AnchorLog:
    """The workspace's anchor file, its configured copies (and the landing mirror's, so
    losing the primary disk does not lose the proof) and the registered sinks."""
    copies = [_resolve(workspace, path) for path in workspace.settings.audit.anchor_copies]
    copies += anchor_copies(workspace)
    sinks = [*_SINKS, *anchor_sinks(workspace)]  # a URL mirror's copy
    return AnchorLog(workspace.root / ANCHORS_FILE, copies=copies, sinks=sinks)


def anchor_head(workspace: Workspace, engine: Engine) -> Anchor | None:
    """Anchor the current head unless it is already the last anchor; return the new one."""
    event_id, event_hash = chain_head(engine)
    if event_id == 0:
        return None
    log = anchor_log(workspace)
    last = log.last()
    if last is not None and (last.event_id, last.event_hash) == (event_id, event_hash):
        return None
    anchor = new_anchor(event_id, event_hash)
    log.append(anchor)
    return anchor


def anchor_if_due(workspace: Workspace, engine: Engine) -> Anchor | None:
    """Anchor the head if ``[audit] anchor_every`` events came since the last anchor."""
    event_id, _ = chain_head(engine)
    last = anchor_log(workspace).last()
    since = event_id - (last.event_id if last else 0)
    if since < workspace.settings.audit.anchor_every:
        return None  # (negative when the trail lost events: verify reports that)
    return anchor_head(workspace, engine)


def record_event(workspace: Workspace, engine: Engine, **event: Any) -> int:
    """Append one event (arguments as :func:`medlake.audit.append_event`), anchor if due."""
    event_id = append_event(engine, **event)
    anchor_if_due(workspace, engine)
    return event_id


@authorized(Permission.READ_AUDIT)
def verify_trail(workspace_dir: Path | Workspace | None, *, anchor: bool = True) -> VerifyResult:
    """Verify the workspace's trail against itself, its head row and its anchors.

    When the trail is whole and ``anchor`` is set, its head is anchored afterwards, so
    the next verification covers everything verified now. This is what the demo calls.
    """
    workspace = as_workspace(workspace_dir)
    log = anchor_log(workspace)
    with open_lake(workspace) as engine:
        drain(engine)  # the journal's events are checked in the table
        result = verify_events(read_events(engine), log.read(), read_head(engine))
        result.findings += _damaged_journal(engine)
        if result.ok and anchor:
            anchor_head(workspace, engine)
    return result


@authorized(Permission.READ_AUDIT)
def anchor_now(workspace_dir: Path | Workspace | None) -> Anchor | None:
    """Anchor the head of the workspace's trail now (None if already anchored or empty)."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        drain(engine)
        return anchor_head(workspace, engine)


@authorized(Permission.READ_AUDIT)
def show_events(workspace_dir: Path | Workspace | None, where: EventFilter) -> list[dict[str, Any]]:
    """Events ``where`` selects, newest first, as dictionaries (``detail`` parsed)."""
    workspace = as_workspace(workspace_dir)
    with open_lake(workspace) as engine:
        drain(engine)  # a just-journaled event is found too
        rows = engine.execute(events_query(engine, where)).to_pylist()
    return [_readable(row) for row in rows]


@contextmanager
def audit_journal(workspace: Workspace) -> Iterator[None]:
    """While serving: the lake's audit appends go to its fsync'd journal and a background
    mover copies them into the trail (:mod:`medlake.audit.journal`); at the end of the
    block everything is moved. Hold it inside ``lake_pool.serving`` (the lake held)."""
    with open_lake(workspace) as engine, live_journal(engine):
        yield


def _damaged_journal(engine: Engine) -> list[ChainFinding]:
    """A journal file recovery could not read whole was kept as ``*.damaged``: name it."""
    directory = journal_dir(engine)
    if directory is None or not directory.is_dir():
        return []
    return [
        ChainFinding(DELETED, None, f"{path}: unreadable audit journal lines (events lost)")
        for path in sorted(directory.glob("*.damaged"))
    ]


def verify_summary(result: VerifyResult) -> dict[str, Any]:
    """A verification result as plain data (for JSON and the demo)."""
    return {
        "ok": result.ok,
        "events": result.events,
        "head_id": result.head_id,
        "head_hash": result.head_hash,
        "anchors_checked": result.anchors_checked,
        "findings": [asdict(finding) for finding in result.findings],
    }


def _readable(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    if out.get("detail") is not None:
        out["detail"] = json.loads(out["detail"])
    return out


def _resolve(workspace: Workspace, path: str) -> Path:
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else workspace.root / candidate



__all__ = [
    "add_anchor_sink",
    "anchor_head",
    "anchor_if_due",
    "anchor_log",
    "anchor_now",
    "audit_journal",
    "record_event",
    "remove_anchor_sink",
    "show_events",
    "verify_summary",
    "verify_trail",
]

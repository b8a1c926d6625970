"""Mirrored landing for a workspace: its landing store, status, resync, audit of changes.

:func:`landing_store` is what every lander of a workspace uses (``medlake ingest``, the
MLLP listener): the primary landing root, the mirror root from ``paths.landing_mirror``,
the mirror's state file and the freeze file, in ``protect/``. Landing itself lives in
:mod:`medlake.ingest.landing`; this module adds what needs the workspace: the audit
events (a side degraded, a resync) once a lake connection is at hand, and a copy of the
audit trail's anchor on the mirror root.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine
from medlake.errors import WorkspaceFrozenError
from medlake.ingest.landing_mirror import (
    FaultHook,
    LandingStore,
    ResyncReport,
    SideStatus,
    mirror_status,
    resync,
)
from medlake.ingest.landing_remote import RemoteRoot
from medlake.log import get_logger
from medlake.service.policy import authorized

logger = get_logger(__name__)

MIRROR_STATE = "mirror-state.json"
ANCHOR_DIR = "_anchors"


def landing_store(workspace: Workspace, *, fault: FaultHook | None = None) -> LandingStore:
    """The workspace's landing: primary root, mirror root (if set), state and freeze files."""
    return LandingStore(
        primary=workspace.landing_dir,
        mirror=workspace.landing_mirror_url,
        state_file=workspace.protect_dir / MIRROR_STATE,
        freeze_file=workspace.freeze_file,
        on_failure=workspace.settings.mirror.on_failure,
        fault=fault,
        storage_options=workspace.settings.mirror.storage_options,
        cache_dir=workspace.protect_dir / "landing-cache",
    )


def refuse_if_frozen(workspace_dir: Path | Workspace | None) -> None:
    """Raise :class:`WorkspaceFrozenError` while the ransomware watch has the workspace frozen.

    Every write of the lake is refused by the engine itself (``Engine.guard_writes``);
    this is for writes of files: landing, extracts, analysis outputs, resync, rebuild.
    """
    message = as_workspace(workspace_dir).frozen_message()
    if message is not None:
        raise WorkspaceFrozenError(message)


def audit_mirror_events(engine: Engine, workspace: Workspace) -> int:
    """Write the mirror's pending events (degraded, resynced) to the audit trail."""
    store = landing_store(workspace)
    if store.mirror is None or not store.state_file.exists():  # type: ignore[union-attr]
        return 0
    events = store.take_events()
    for event in events:
        logger.warning("landing %s: %s (%s)", event["side"], event["action"], event["reason"])
        protection_event(
            engine,
            workspace=workspace,
            action=str(event["action"]),
            object_type="landing_root",
            object_id=str(event["side"]),
            detail={"at": event["at"], "reason": event["reason"]},
        )
    return len(events)


def protection_event(
    engine: Engine,
    *,
    action: str,
    object_type: str,
    object_id: str,
    detail: dict[str, object],
    outcome: str = "ok",
    workspace: Workspace | None = None,
) -> None:
    """One audit event of data protection (``mirror.degraded``, ``backup.run``, ``watch.alert``);
    with ``workspace``, the chain head is anchored when an anchor is due."""
    from medlake.audit import append_event
    from medlake.service.policy import acting_user_name

    append_event(
        engine,
        actor=acting_user_name(),
        action=action,
        object_type=object_type,
        object_id=object_id,
        detail=detail,
        outcome=outcome,
    )
    if workspace is not None:
        from medlake.service.audit import anchor_if_due

        anchor_if_due(workspace, engine)


@authorized(Permission.PROTECT)
def status(workspace_dir: Path | Workspace | None) -> list[SideStatus]:
    """``medlake mirror status``: each landing root's health and what it lacks."""
    workspace = as_workspace(workspace_dir)
    return mirror_status(landing_store(workspace))


@authorized(Permission.PROTECT)
def resync_mirror(
    workspace_dir: Path | Workspace | None,
    *,
    progress: Callable[[int, int], None] | None = None,
) -> ResyncReport:
    """``medlake mirror resync``: verify both roots, copy and repair, mark both healthy."""
    from medlake.service.workspace import open_lake

    workspace = as_workspace(workspace_dir)
    refuse_if_frozen(workspace)  # landing is what an attacker encrypts: review first
    report = resync(landing_store(workspace), progress)
    with open_lake(workspace) as engine:
        audit_mirror_events(engine, workspace)
    return report


def anchor_sinks(workspace: Workspace) -> list[Callable[[Any], None]]:
    """For a URL mirror: each anchor as its own object, ``<url>/_anchors/<event id>.jsonl``.

    An object store cannot append, and one object per anchor is never rewritten. A store
    that is down loses the copy of that anchor, not the anchor: the local file and
    ``audit.anchor_copies`` hold it (a warning is logged; the next resync does not copy
    anchors).
    """
    url = workspace.landing_mirror_url
    if url is None or workspace.landing_mirror_dir is not None:
        return []
    root = RemoteRoot(url, dict(workspace.settings.mirror.storage_options))

    def to_store(anchor: Any) -> None:
        try:
            fs, base = root._open_fs()
            with fs.open(f"{base}/{ANCHOR_DIR}/{anchor.event_id:012d}.jsonl", "wb") as out:
                out.write(anchor.line().encode())
        except Exception as error:  # never fails the anchoring itself
            logger.warning("audit anchor not copied to %s: %s", url, error)

    return [to_store]


def anchor_copies(workspace: Workspace) -> list[Path]:
    """Where copies of the audit trail's anchors go: ``<mirror root>/_anchors/anchors.jsonl``.

    For :class:`medlake.audit.AnchorLog`'s extra paths: losing the primary disk then does
    not lose the proof that the trail is whole. Empty without a mirror.
    """
    mirror = workspace.landing_mirror_dir
    return [] if mirror is None else [mirror / ANCHOR_DIR / "anchors.jsonl"]


"""``medlake watch``: watch a workspace for ransomware and freeze it read-only on alert.

The watcher (:mod:`medlake.protect.watch`) scans the workspace, the landing mirror and
the backup repository. On an alert the workspace is frozen: ``protect/frozen.json``
records since when, why and which files, every lander and ``medlake ingest`` refuse to
write with a message saying so, an audit event ``watch.alert`` is written, and the
operator is told. After review, ``medlake watch clear`` lifts the freeze (audited).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from medlake.access import Permission
from medlake.config import SERVING_CACHE, Workspace, as_workspace
from medlake.errors import UsageError
from medlake.ingest.landing import TEMPORARY_PREFIX
from medlake.ingest.landing_mirror import write_json_atomically
from medlake.log import get_logger
from medlake.protect.watch import Alert, Watcher, WatchRules
from medlake.service.mirror import protection_event
from medlake.service.policy import authorized
from medlake.service.serving_threads import ServingThread, around_lifespan
from medlake.service.workspace import open_lake

logger = get_logger(__name__)

_FILES_LISTED = 200  # in the freeze file and the audit event; the count says how many


def watcher_for(workspace: Workspace, *, clock: Callable[[], float] | None = None) -> Watcher:
    """A watcher over the workspace, its landing mirror and its backup repository."""
    settings = workspace.settings.watch
    rules = WatchRules(
        extensions=tuple(e.lower() for e in settings.extensions),
        rename_burst=settings.rename_burst,
        rewrite_limit=settings.rewrite_limit,
        entropy_burst=settings.entropy_burst,
        entropy_bits=settings.entropy_bits,
        window_seconds=settings.window_seconds,
    )
    roots = [workspace.root]
    immutable = [workspace.landing_dir, workspace.exports_dir]
    mirror = workspace.landing_mirror_dir
    if mirror is not None:
        roots.append(mirror)
        immutable.append(mirror)
    repository = Path(workspace.settings.backup.repository)
    if "://" not in str(repository):
        repository = repository if repository.is_absolute() else workspace.root / repository
        roots.append(repository)
    extra = {"clock": clock} if clock is not None else {}
    append_only = [repository / "data"] if "://" not in str(repository) else []
    return Watcher(
        roots=_outermost(roots),
        rules=rules,
        immutable=[p.resolve() for p in immutable],
        append_only=[p.resolve() for p in append_only],
        # its own state, Borg's cache; the serving copy, a DuckDB file this process
        # holds (rebuilt from the lake, never trusted unchecked)
        ignore=[workspace.protect_dir.resolve(), (workspace.root / SERVING_CACHE).resolve()],
        transient_prefixes=(TEMPORARY_PREFIX,),  # landing's own temporaries
        held=[workspace.lake_path.resolve()],  # DuckDB's locked file: read by a child
        **extra,  # type: ignore[arg-type]
    )


def _outermost(paths: list[Path]) -> list[Path]:
    resolved = sorted({p.resolve() for p in paths}, key=lambda p: len(p.parts))
    kept: list[Path] = []
    for path in resolved:
        if not any(path.is_relative_to(k) for k in kept):
            kept.append(path)
    return kept


def freeze(workspace: Workspace, alert: Alert) -> dict[str, object]:
    """Freeze the workspace read-only, audit it, and return what the freeze file says."""
    files = alert.files
    record: dict[str, object] = {
        "since": _iso(alert.since),
        "frozen_at": _iso(max(f.at for f in alert.findings)),
        "reason": "; ".join(alert.reasons),
        "file_count": len(files),
        "files": [
            {"path": f.path, "what": f.kind, "seen_at": _iso(f.at)}
            for f in alert.findings[:_FILES_LISTED]
        ],
    }
    write_json_atomically(workspace.freeze_file, record)
    logger.error("ransomware watch: %s; workspace frozen read-only", record["reason"])
    try:
        with open_lake(workspace) as engine:
            protection_event(
                engine, workspace=workspace, action="watch.alert", object_type="workspace",
                object_id=str(workspace.root),
                detail={"reason": record["reason"], "since": record["since"],
                        "file_count": len(files), "files": files[:_FILES_LISTED]},
                outcome="denied",
            )  # fmt: skip
    except Exception as error:  # the lake itself may be what is being encrypted
        logger.error("could not write the watch.alert audit event: %s", error)
    return record


@authorized(Permission.PROTECT)
def freeze_status(workspace_dir: Path | Workspace | None) -> dict[str, object] | None:
    """What the freeze file says, or None when the workspace is not frozen."""
    import json

    workspace = as_workspace(workspace_dir)
    path = workspace.freeze_file
    if not path.exists():
        return None
    return json.loads(path.read_text("utf-8"))


@authorized(Permission.PROTECT)
def clear(workspace_dir: Path | Workspace | None, *, note: str) -> dict[str, object]:
    """Lift the freeze after review; ``note`` (what was reviewed) goes to the audit trail."""
    workspace = as_workspace(workspace_dir)
    record = freeze_status(workspace)
    if record is None:
        raise UsageError(f"{workspace.root} is not frozen")
    # The review is recorded first (the trail is written even while frozen): a review
    # that cannot be recorded (the lake held elsewhere, a full disk) lifts nothing.
    with open_lake(workspace) as engine:
        protection_event(
            engine, workspace=workspace,
            action="watch.clear", object_type="workspace", object_id=str(workspace.root),
            detail={"note": note, "frozen_since": record.get("since"),
                    "reason": record.get("reason")},
        )  # fmt: skip
    workspace.freeze_file.unlink()
    return record


@authorized(Permission.PROTECT)
def watch(
    workspace_dir: Path | Workspace | None,
    *,
    stop: threading.Event | None = None,
    on_scan: Callable[[int], None] | None = None,
    interval: float | None = None,
) -> dict[str, object] | None:
    """Scan every ``watch.interval_seconds`` until ``stop`` is set or an alert freezes
    the workspace; return the freeze record (None when stopped without an alert).

    Meant to run as its own process (``medlake watch``) or in a thread of ``serve``.
    """
    workspace = as_workspace(workspace_dir)
    stop = stop or threading.Event()
    watcher = watcher_for(workspace)
    watcher.scan()  # the baseline
    scans = 0
    while not stop.wait(interval or workspace.settings.watch.interval_seconds):
        watcher.scan()
        scans += 1
        if on_scan is not None:
            on_scan(scans)
        alert = watcher.alert()
        if alert is not None:
            return freeze(workspace, alert)
    return None


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


class BackgroundWatch(ServingThread):
    """The watch as a daemon thread of a long-running process (``medlake serve``).

    It scans as ``medlake watch`` does; after an alert has frozen the workspace it waits
    until an operator has run ``medlake watch clear``, then starts again from a new
    baseline (the reviewed state). :meth:`stop` ends it within one scan interval.
    """

    def __init__(self, workspace: Workspace, *, interval: float | None = None) -> None:
        self.interval = interval or workspace.settings.watch.interval_seconds
        super().__init__("medlake-watch", join_timeout_s=max(10.0, 3 * self.interval))
        self.workspace = workspace
        self.alerts: list[dict[str, object]] = []

    def start(self) -> BackgroundWatch:
        logger.info("ransomware watch starting (every %g s)", self.interval)
        return super().start()

    def _run(self) -> None:
        while not self.stopping.is_set():
            if self.workspace.freeze_file.exists():  # wait for the review
                self.stopping.wait(self.interval)
                continue
            try:
                record = watch(self.workspace, stop=self.stopping, interval=self.interval)
            except Exception:  # the watch must outlive a scan error (a file vanishing)
                logger.exception("ransomware watch: scan failed; retrying")
                self.stopping.wait(self.interval)
                continue
            if record is not None:
                self.alerts.append(record)


def with_background_watch(lifespan: Callable[[Any], Any], workspace: Workspace) -> Any:
    """Wrap an ASGI lifespan so the watch runs while the server does (``[watch] in_serve``).

    For ``medlake serve``: the application's own lifespan runs inside; the watch starts
    after it has started and stops after it has stopped.
    """
    if not workspace.settings.watch.in_serve:
        return lifespan
    return around_lifespan(lifespan, lambda: BackgroundWatch(workspace).start())

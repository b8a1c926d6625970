"""Retention of background jobs' working files (``<workspace>/jobs/<job_id>/``).

Jobs write their uploads and outputs under their own folder. Once a job has been
finished for longer than ``[jobs] keep_days``:

* its ``upload/`` folder (and the mapping file beside it) is deleted: every uploaded file
  that was ingested has its immutable copy in the landing store (and its mirror), which
  is what provenance, the audit trail and a rebuild refer to;
* a **failed or cancelled** job's folder is deleted whole: what it left are partial
  outputs no manifest, result or audit event points to as a result;
* a **succeeded** job keeps its results (GWAS/DE Parquet the analyses page shows,
  extraction datasets and their manifests, which audit events and releases name): they
  are results, not working files, and are never deleted here;
* a folder with no job row (an upload whose job was never stored: refused or a crash
  between the two) is deleted once its newest file is that old.

Queued and running jobs are never touched, and the job rows stay in the ``job`` table
(the history). Each cleanup that deletes something writes one ``jobs.cleanup`` audit
event. :func:`with_job_retention` runs a cleanup when ``medlake serve`` starts and then
every ``[jobs] cleanup_interval_minutes``. "Now" is :func:`medlake.clock.utc_now`
(``$MEDLAKE_CLOCK`` fixes it for tests), so retention follows the same clock as the lake.
"""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medlake.audit import append_event
from medlake.clock import utc_now
from medlake.config import Workspace
from medlake.log import get_logger
from medlake.service import jobs as job_service
from medlake.service.policy import login_name
from medlake.service.serving_threads import ServingThread, around_lifespan
from medlake.service.workspace import open_lake

log = get_logger(__name__)

UPLOAD_DIR = "upload"
#: Files of an upload stored beside its folder (the mapping file of CSV/Excel uploads).
UPLOAD_SIDE_PREFIX = "mapping-"


@dataclass
class Cleanup:
    """What one cleanup deleted (job ids) and how many bytes it freed."""

    uploads: list[str] = field(default_factory=list)  # upload folders of finished jobs
    jobs: list[str] = field(default_factory=list)  # whole folders of failed/cancelled jobs
    orphans: list[str] = field(default_factory=list)  # folders without a job row
    bytes_freed: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"uploads": self.uploads, "jobs": self.jobs, "orphans": self.orphans,
                "bytes_freed": self.bytes_freed}  # fmt: skip

    @property
    def deleted(self) -> bool:
        return bool(self.uploads or self.jobs or self.orphans)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _newest_change(path: Path) -> dt.datetime:
    times = [path.stat().st_mtime] + [p.stat().st_mtime for p in path.rglob("*")]
    return dt.datetime.fromtimestamp(max(times), dt.UTC).replace(tzinfo=None)


def _remove(path: Path) -> int:
    size = _size(path)
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink()
    return size


def clean_job_files(workspace: Workspace, *, now: dt.datetime | None = None) -> Cleanup:
    """Delete the working files of jobs finished more than ``[jobs] keep_days`` ago (see
    the module's docstring for what is kept); nothing when ``keep_days`` is 0.

    The server runs this for itself (no user asks for it), so it passes no policy check;
    it is audited as ``jobs.cleanup`` by the server's login name.
    """
    keep_days = workspace.settings.jobs.keep_days
    done = Cleanup()
    folder = workspace.root / job_service.JOBS_DIR
    if keep_days <= 0 or not folder.is_dir() or workspace.freeze_file.exists():
        return done  # a frozen workspace is kept as it is for the review
    cutoff = (now or utc_now()) - dt.timedelta(days=keep_days)
    with open_lake(workspace) as engine:
        if not engine.has_table(job_service.TABLE):
            return done
        rows = {r["job_id"]: r for r in engine.execute(engine.table(job_service.TABLE)).to_pylist()}
        for job_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
            row = rows.get(job_folder.name)
            if row is None:
                if _newest_change(job_folder) < cutoff:
                    done.bytes_freed += _remove(job_folder)
                    done.orphans.append(job_folder.name)
                continue
            finished = row.get("finished_at")
            if row["status"] not in job_service.FINISHED or finished is None or finished >= cutoff:
                continue
            if row["status"] != job_service.SUCCEEDED:
                done.bytes_freed += _remove(job_folder)
                done.jobs.append(job_folder.name)
                continue
            uploads = [job_folder / UPLOAD_DIR,
                       *job_folder.glob(f"{UPLOAD_SIDE_PREFIX}*")]  # fmt: skip
            uploads = [p for p in uploads if p.exists()]
            if uploads:
                done.bytes_freed += sum(_remove(p) for p in uploads)
                done.uploads.append(job_folder.name)
        if done.deleted:
            append_event(engine, actor=login_name(), action="jobs.cleanup",
                         object_type="workspace", object_id=str(workspace.root)[:255],
                         detail=done.as_dict() | {"keep_days": keep_days,
                                                  "cutoff": cutoff.isoformat()})  # fmt: skip
    if done.deleted:
        log.info("job retention: %d upload folders, %d failed/cancelled jobs, %d orphans "
                 "deleted (%d bytes)", len(done.uploads), len(done.jobs), len(done.orphans),
                 done.bytes_freed)  # fmt: skip
    return done


class RetentionThread(ServingThread):
    """The cleanup as a daemon thread of ``medlake serve``: once at start, then every
    ``[jobs] cleanup_interval_minutes`` until stopped."""

    def __init__(self, workspace: Workspace, *, interval_s: float | None = None) -> None:
        super().__init__("medlake-job-retention", join_timeout_s=30)
        self.workspace = workspace
        self.interval_s = interval_s or workspace.settings.jobs.cleanup_interval_minutes * 60
        self.runs: list[Cleanup] = []

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.runs.append(clean_job_files(self.workspace))
            except Exception:  # retention must never take the server down
                log.exception("job retention: cleanup failed; trying again later")
            self.stopping.wait(self.interval_s)


def with_job_retention(lifespan: Callable[[Any], Any], workspace: Workspace) -> Any:
    """Wrap an ASGI lifespan so job retention runs while the server does (the cleanup at
    start runs after the application's own start-up, i.e. after job recovery)."""
    if workspace.settings.jobs.keep_days <= 0:
        return lifespan
    return around_lifespan(
        lifespan, lambda: RetentionThread(workspace).start(), state_name="job_retention"
    )

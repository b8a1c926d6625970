"""Background jobs: long work (ingest of uploads, GWAS, DE, extraction, QC) run by worker
threads, with progress, cancellation and a record in the lake's ``job`` table.

A job is submitted (authorized for its kind's permission, stored ``queued``), picked up
by a :class:`JobRunner` worker (``running``), and ends ``succeeded`` (with a JSON
summary and files under ``<workspace>/jobs/<job_id>/``), ``failed`` (with the error) or
``cancelled``. Progress goes through the ``progress(done, total)`` callback every long
service takes; a cancelled job's callback raises :class:`~medlake.errors.JobCancelledError`,
so the work stops at its next progress report. Because the table is in the lake, a
restarted server loses nothing silently (:meth:`JobRunner.recover`): jobs still queued
run, jobs that were running are marked failed with the reason.

Threads, not processes: the work is in DuckDB, NumPy and PyArrow, which release the
GIL, and the lake's DuckDB file may be opened by one process only. Rows are never
updated in place (delete and insert in one transaction), as in the access store, so the
same code runs on every engine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import queue
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from medlake.access import Permission, Principal, Role, is_allowed
from medlake.access.context import acting_as
from medlake.audit import append_event
from medlake.config import Workspace, as_workspace
from medlake.engine import Engine, SupportsTransactions
from medlake.errors import (
    AccessDeniedError,
    JobCancelledError,
    MedlakeError,
    NotFoundError,
    UsageError,
)
from medlake.log import get_logger
from medlake.schema.job_tables import JOB
from medlake.service.access import require_on
from medlake.service.workspace import open_lake

log = get_logger(__name__)

TABLE = JOB.name
QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED = (
    "queued", "running", "succeeded", "failed", "cancelled")  # fmt: skip
FINISHED = frozenset({SUCCEEDED, FAILED, CANCELLED})
STATUSES = (QUEUED, RUNNING, SUCCEEDED, FAILED, CANCELLED)
JOBS_DIR = "jobs"
INTERRUPTED = "interrupted: the server stopped while the job ran; submit it again"
_PROGRESS_EVERY_S = 0.5  # write progress to the lake at most this often per job
# Read-modify-write of a job row (progress, cancel, status) is serialized in the process:
# DuckDB would refuse one of two concurrent writes of the same row.
_ROW_LOCK = threading.RLock()

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class JobContext:
    """What a job's function gets: where to write, its parameters, and how to report."""

    workspace: Workspace
    job_id: str
    params: dict[str, Any]
    user: str
    project_id: str | None
    out_dir: Path
    progress: Progress


@dataclass(frozen=True)
class JobKind:
    """A kind of job: the permission a submitter needs and the function doing the work."""

    name: str
    permission: Permission
    run: Callable[[JobContext], dict[str, Any]]
    validate: Callable[[dict[str, Any]], None] | None = None


_KINDS: dict[str, JobKind] = {}


def register_kind(kind: JobKind) -> None:
    _KINDS[kind.name] = kind


def kinds() -> dict[str, JobKind]:
    return dict(_KINDS)


def job_kind(name: str) -> JobKind:
    try:
        return _KINDS[name]
    except KeyError:
        known = ", ".join(sorted(_KINDS)) or "none"
        raise UsageError(f"unknown job kind {name!r}; kinds are {known}") from None


# ---------------------------------------------------------------------- the table


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def _rows(engine: Engine, job_id: str | None = None) -> list[dict[str, Any]]:
    table = engine.table(TABLE)
    if job_id is not None:
        table = table.filter(table.job_id == job_id)
    return engine.execute(table.order_by([table.created_at, table.job_id])).to_pylist()


def job_rows(engine: Engine, job_id: str | None = None) -> list[dict[str, Any]]:
    """The job table's rows (one job's when ``job_id`` is given), oldest first; unchecked:
    for services that keep their own jobs (the live EMPI link)."""
    return _rows(engine, job_id)


def _one(engine: Engine, job_id: str) -> dict[str, Any]:
    rows = _rows(engine, job_id)
    if not rows:
        raise NotFoundError(f"job {job_id!r}: no such job")
    return rows[0]


def _write(engine: Engine, row: dict[str, Any]) -> None:
    columns = [c.name for c in JOB.columns]
    schema = engine.table(TABLE).schema().to_pyarrow()
    target = pa.schema([schema.field(c) for c in columns])
    data = pa.table({c: [row.get(c)] for c in columns}).cast(target)
    with _transaction(engine):
        table = engine.table(TABLE)
        engine.delete_where(TABLE, table.job_id == row["job_id"])
        engine.load_arrow(TABLE, data)


@contextlib.contextmanager
def _transaction(engine: Engine) -> Iterator[None]:
    if isinstance(engine, SupportsTransactions):
        # Only the job table: progress never waits for a CDM table's rewrite.
        with engine.transaction(tables=(TABLE,)):
            yield
    else:
        yield


def _update(workspace: Workspace, job_id: str, **changes: Any) -> dict[str, Any]:
    with _ROW_LOCK, open_lake(workspace) as engine:
        row = _one(engine, job_id) | changes
        _write(engine, row)
        return row


def as_public(row: dict[str, Any]) -> dict[str, Any]:
    """A job row as the API and CLI show it (parameters and result parsed)."""
    done, total = row.get("progress_done"), row.get("progress_total")
    return {
        "job_id": row["job_id"],
        "kind": row["kind"],
        "status": row["status"],
        "submitted_by": row["submitted_by"],
        "project_id": row.get("project_id"),
        "params": json.loads(row["params_json"]),
        "created_at": _iso(row["created_at"]),
        "started_at": _iso(row.get("started_at")),
        "finished_at": _iso(row.get("finished_at")),
        "progress": {
            "done": done,
            "total": total,
            "fraction": (done / total) if done is not None and total else None,
        },
        "cancel_requested": bool(row.get("cancel_requested")),
        "result": json.loads(row.get("result_json")) if row.get("result_json") else None,
        "error": row.get("error"),
    }


def _plain(value: Any) -> Any:
    """JSON for what services return besides plain data: dates as ISO 8601, numbers of
    NumPy as numbers, paths and the rest as text."""
    if isinstance(value, dt.date | dt.datetime):
        return value.isoformat()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def _iso(value: dt.datetime | None) -> str | None:
    return None if value is None else value.isoformat() + "Z"


def job_dir(workspace: Workspace, job_id: str) -> Path:
    return workspace.root / JOBS_DIR / job_id


# ---------------------------------------------------------------------- use cases


def submit_job(
    workspace_dir: Path | Workspace | None,
    kind: str,
    params: dict[str, Any],
    *,
    principal: Principal,
    project_id: str | None = None,
    job_id: str | None = None,
) -> dict[str, Any]:
    """Authorize and store a ``queued`` job (a :class:`JobRunner` runs it)."""
    workspace = as_workspace(workspace_dir)
    spec = job_kind(kind)
    if spec.validate is not None:
        spec.validate(params)
    row = {
        "job_id": job_id or new_job_id(),
        "kind": kind,
        "status": QUEUED,
        "submitted_by": principal.user_name,
        "project_id": project_id,
        "params_json": json.dumps(params, sort_keys=True, default=_plain),
        "created_at": _now(),
        "cancel_requested": False,
    }
    with open_lake(workspace) as engine:
        require_on(engine, spec.permission, user=principal.user_name, project_id=project_id)
        _write(engine, row)
    return as_public(row)


def new_job_id() -> str:
    return uuid.uuid4().hex


def _may_see(principal: Principal, row: dict[str, Any]) -> bool:
    """Admins and stewards see every job; others their own, and the jobs of the projects
    they are a member of whose kind they may run there (a researcher's colleagues' analyses
    and extractions)."""
    every = principal.role in (Role.ADMIN, Role.STEWARD)
    if every or row["submitted_by"] == principal.user_name:
        return True
    project, kind = row.get("project_id"), _KINDS.get(row["kind"])
    return (project is not None and project in principal.projects and kind is not None
            and is_allowed(principal, kind.permission, project))  # fmt: skip


def may_cancel(principal: Principal, job: dict[str, Any]) -> bool:
    """Whether ``principal`` may cancel ``job`` (a row or :func:`as_public`'s dict): its
    submitter, an admin (the operator stops any work), or a steward who may run its kind.
    A researcher never stops a colleague's job."""
    if job["submitted_by"] == principal.user_name or principal.role == Role.ADMIN:
        return True
    kind = _KINDS.get(job["kind"])
    return (principal.role == Role.STEWARD and kind is not None
            and is_allowed(principal, kind.permission, job.get("project_id")))  # fmt: skip


def list_jobs(
    workspace_dir: Path | Workspace | None,
    *,
    principal: Principal,
    status: str | None = None,
    kind: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """Jobs newest first: a user's own, or everyone's for admins and stewards."""
    if status is not None and status not in STATUSES:
        raise UsageError(f"unknown job status {status!r}; statuses are {', '.join(STATUSES)}")
    with open_lake(as_workspace(workspace_dir)) as engine:
        rows = _rows(engine)
    rows = [r for r in reversed(rows) if _may_see(principal, r)
            and (status is None or r["status"] == status)
            and (kind is None or r["kind"] == kind)]  # fmt: skip
    return [as_public(r) for r in rows[:limit]]


def get_job(
    workspace_dir: Path | Workspace | None, job_id: str, *, principal: Principal
) -> dict[str, Any]:
    """One job; another user's job is "not found" unless the caller may see every job."""
    with open_lake(as_workspace(workspace_dir)) as engine:
        row = _one(engine, job_id)
    if not _may_see(principal, row):
        raise NotFoundError(f"job {job_id!r}: no such job")
    return as_public(row)


def request_cancel(
    workspace_dir: Path | Workspace | None, job_id: str, *, principal: Principal
) -> dict[str, Any]:
    """Ask a job to stop: a queued job is cancelled now, a running one at its next
    progress report. Finished jobs are left as they are."""
    workspace = as_workspace(workspace_dir)
    with _ROW_LOCK, open_lake(workspace) as engine:
        row = _one(engine, job_id)
        if not _may_see(principal, row):
            raise NotFoundError(f"job {job_id!r}: no such job")
        if not may_cancel(principal, row):
            # audited as every refusal is
            error = AccessDeniedError(f"{principal.user_name} may not cancel job {job_id}: "
                                      "only its submitter, an admin or a steward may")
            append_event(engine, actor=principal.user_name, role=principal.role.value,
                         action="job.cancel", object_type="job", object_id=job_id,
                         project_id=row["project_id"], outcome="denied",
                         detail={"reason": error.message})  # fmt: skip
            raise error
        if row["status"] in FINISHED:
            return as_public(row)
        row = row | {"cancel_requested": True}
        if row["status"] == QUEUED:
            row |= {"status": CANCELLED, "finished_at": _now(), "error": "cancelled before it ran"}
        _write(engine, row)
    return as_public(row)


def job_file(
    workspace_dir: Path | Workspace | None, job_id: str, name: str, *, principal: Principal
) -> Path:
    """A file a finished job wrote (a name from its result's ``files``)."""
    workspace = as_workspace(workspace_dir)
    job = get_job(workspace, job_id, principal=principal)
    with open_lake(workspace) as engine:  # still allowed now (e.g. still in the project)
        require_on(engine, job_kind(job["kind"]).permission, user=principal.user_name,
                   project_id=job["project_id"])  # fmt: skip
    files = (job["result"] or {}).get("files") or {}
    if name not in files:
        raise NotFoundError(f"job {job_id!r} has no file {name!r}")
    path = Path(files[name])
    if not path.is_absolute():
        path = job_dir(workspace, job_id) / path
    if not path.is_file():
        raise NotFoundError(f"job {job_id!r}: {path.name} is gone")
    return path


# ---------------------------------------------------------------------- the runner


class JobRunner:
    """Worker threads running a workspace's queued jobs, one job per worker at a time."""

    def __init__(self, workspace_dir: Path | Workspace | None, workers: int = 2) -> None:
        self.workspace = as_workspace(workspace_dir)
        self.workers = max(1, workers)
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._cancel: dict[str, threading.Event] = {}
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._busy = 0

    # lifecycle -----------------------------------------------------------------

    def start(self) -> dict[str, int]:
        """Recover the jobs a previous server left, then start the workers."""
        recovered = self.recover()
        for n in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"medlake-job-{n}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return recovered

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers; running jobs are asked to cancel (the next start marks any
        that did not finish in time as failed)."""
        for event in list(self._cancel.values()):
            event.set()
        for _ in self._threads:
            self._queue.put(None)
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()

    def recover(self) -> dict[str, int]:
        """Jobs ``running`` (their server stopped) become ``failed``; ``queued`` ones are
        queued again, oldest first."""
        with _ROW_LOCK, open_lake(self.workspace) as engine:
            rows = _rows(engine)
            failed = 0
            for row in rows:
                if row["status"] == RUNNING:
                    _write(engine, row | {"status": FAILED, "finished_at": _now(),
                                          "error": INTERRUPTED})  # fmt: skip
                    failed += 1
        queued = [r["job_id"] for r in rows if r["status"] == QUEUED]
        for job_id in queued:
            self.enqueue(job_id)
        if failed or queued:
            log.info("jobs recovered: %d queued again, %d marked failed", len(queued), failed)
        return {"requeued": len(queued), "failed": failed}

    # submitting and cancelling -------------------------------------------------

    def submit(
        self,
        kind: str,
        params: dict[str, Any],
        *,
        principal: Principal,
        project_id: str | None = None,
        job_id: str | None = None,
    ) -> dict[str, Any]:
        job = submit_job(self.workspace, kind, params, principal=principal,
                         project_id=project_id, job_id=job_id)  # fmt: skip
        self.enqueue(job["job_id"])
        return job

    def enqueue(self, job_id: str) -> None:
        with self._lock:
            self._cancel.setdefault(job_id, threading.Event())
        self._queue.put(job_id)

    def cancel(self, job_id: str, *, principal: Principal) -> dict[str, Any]:
        job = request_cancel(self.workspace, job_id, principal=principal)
        if job["cancel_requested"]:
            with self._lock:
                self._cancel.setdefault(job_id, threading.Event()).set()
        return job

    def wait_idle(self, timeout: float = 60.0) -> bool:
        """Wait until no job is queued or running in this runner (for tests and demo)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy or not self._queue.empty():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    # the work ------------------------------------------------------------------

    def _work(self) -> None:
        while True:
            job_id = self._queue.get()
            if job_id is None:
                return
            self.run_here(job_id)

    def run_here(self, job_id: str) -> None:
        """Run the queued job ``job_id`` in the calling thread (a worker's loop; a process
        without workers, as ``medlake listen`` running its link job between flushes)."""
        with self._lock:
            self._busy += 1
        try:
            self._run(job_id)
        except Exception as error:  # a worker must outlive any one job's failure
            log.exception("job %s: the runner failed", job_id)
            with contextlib.suppress(Exception):  # never leave it "running"
                why = f"internal error: {type(error).__name__}: {error}"[:2000]
                _update(self.workspace, job_id, status=FAILED, finished_at=_now(), error=why)
        finally:
            with self._idle:
                self._busy -= 1
                self._cancel.pop(job_id, None)
                self._idle.notify_all()

    def _run(self, job_id: str) -> None:
        with self._lock:
            cancelled = self._cancel.setdefault(job_id, threading.Event())
        with _ROW_LOCK, open_lake(self.workspace) as engine:
            row = _one(engine, job_id)
            if row["status"] != QUEUED:
                return  # cancelled while queued
            if row["cancel_requested"]:
                cancelled.set()
            row |= {"status": RUNNING, "started_at": _now()}
            _write(engine, row)
        out_dir = job_dir(self.workspace, job_id)
        out_dir.mkdir(parents=True, exist_ok=True)
        reporter = _Reporter(self.workspace, job_id, cancelled)
        context = JobContext(self.workspace, job_id, json.loads(row["params_json"]),
                             row["submitted_by"], row["project_id"], out_dir,
                             reporter)  # fmt: skip
        try:
            spec = job_kind(row["kind"])
            if cancelled.is_set():
                raise JobCancelledError("cancelled")
            # The services check the policy as the submitter (role and projects as they
            # are now, not at submission) in the job's project.
            with acting_as(row["submitted_by"], project=row["project_id"]):
                result = spec.run(context)
            if cancelled.is_set():  # the work ended before it saw the request
                raise JobCancelledError("cancelled")
        except JobCancelledError:
            _update(self.workspace, job_id, status=CANCELLED, finished_at=_now(),
                    error="cancelled while running")  # fmt: skip
            return
        except MedlakeError as error:
            _update(self.workspace, job_id, status=FAILED, finished_at=_now(),
                    error=error.message[:2000])  # fmt: skip
            return
        except Exception as error:  # a fault: keep the job's record, log the trace
            log.error("job %s failed:\n%s", job_id, traceback.format_exc())
            _update(self.workspace, job_id, status=FAILED, finished_at=_now(),
                    error=f"internal error: {type(error).__name__}: {error}"[:2000])  # fmt: skip
            return
        done, total = reporter.last
        _update(self.workspace, job_id, status=SUCCEEDED, finished_at=_now(),
                result_json=json.dumps(result, default=_plain),
                progress_done=total if total else done, progress_total=total)  # fmt: skip


class _Reporter:
    """The job's ``progress(done, total)``: raises when cancelled, writes the numbers to
    the lake at most every half second (the last ones are written when the job ends)."""

    def __init__(self, workspace: Workspace, job_id: str, cancelled: threading.Event) -> None:
        self.workspace = workspace
        self.job_id = job_id
        self.cancelled = cancelled
        self.last: tuple[int, int] = (0, 0)
        self._written = 0.0

    def __call__(self, done: int, total: int) -> None:
        if self.cancelled.is_set():
            raise JobCancelledError(f"job {self.job_id} was cancelled")
        self.last = (int(done), int(total))
        now = time.monotonic()
        if now - self._written >= _PROGRESS_EVERY_S:
            self._written = now
            _update(self.workspace, self.job_id, progress_done=int(done),
                    progress_total=int(total))  # fmt: skip

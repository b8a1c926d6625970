"""The EMPI link after live ingests, as one background job after a quiet period.

``[empi] link_after_ingest`` links the new source patients once per ingest run. An
incremental link reads every record (about 27 s at a million), so for a live feed —
a FHIR Bundle POSTed to the API, a ``medlake listen`` flush every few seconds — linking
inline would cost that on every request. Those paths call :meth:`LiveLinks.request`
instead (``ingest_paths(link_later=...)``): it stores one ``empi_link`` job
(:mod:`medlake.service.job_kinds`), queued, and hands it to the server's job runner once
no request has come for ``[empi] live_link_delay_seconds`` (at the latest
``live_link_max_delay_seconds`` after the first); the listener runs it itself between
flushes once it is due, and before it stops. Requests meanwhile, and requests while
the job waits in the runner's queue without having started, join it: the link reads the
lake when it starts, so it links everything loaded before. A request after the job has
started stores the next one. Batch ingests (``medlake ingest``, upload jobs) still link
inline.

The job is in the lake's job table like any other: a server stopped before it ran runs it
at its next start (:meth:`~medlake.service.jobs.JobRunner.recover`), and it can be seen
and cancelled through the jobs API. Its link runs as the user whose ingest asked for it.
Link jobs of one process run one at a time (two links at once would move the same
persons).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from medlake.access import Principal
from medlake.config import Workspace
from medlake.log import get_logger
from medlake.service import jobs as job_service
from medlake.service.jobs import JobContext
from medlake.service.lake_pool import pooled_lake
from medlake.service.workspace import open_lake

log = get_logger(__name__)

KIND = "empi_link"
# One link at a time in a process: two would read the same records and move the same
# persons (and conflict on the EMPI's tables).
_LINKING = threading.Lock()


def run_link_job(job: JobContext) -> dict[str, Any]:
    """The ``empi_link`` job: an incremental link of the lake (``link_engine``, as after
    an ingest), as the submitter."""
    from medlake.service.empi import link_engine

    job.progress(0, 1)
    with _LINKING, open_lake(job.workspace) as engine:
        outcome = link_engine(engine, job.workspace)
    job.progress(1, 1)
    if outcome is None:
        return {"mode": "nothing", "reason": "nothing to link yet"}
    return {
        "mode": outcome.mode,
        "operation_id": outcome.operation_id,
        "records": outcome.records,
        "new_records": outcome.new_records,
        "links": outcome.links,
        "persons_before": outcome.persons_before,
        "persons_after": outcome.persons_after,
        "review_queue": outcome.review_queue,
    }


class LiveLinks:
    """Coalesces the link requests of a process's live ingests into one queued job.

    ``release`` hands a job to whoever runs it once it is due: the server's job runner
    (``runner.enqueue``), called from a timer thread. Without it (``medlake listen``,
    which runs the job itself between flushes, so that only one thread at a time opens
    the lake) nothing runs on a timer: :meth:`due` says when the job is to be run.
    ``delay_s``/``max_delay_s`` default to ``[empi] live_link_delay_seconds`` and
    ``live_link_max_delay_seconds``.
    """

    def __init__(
        self,
        workspace: Workspace,
        release: Callable[[str], None] | None = None,
        *,
        delay_s: float | None = None,
        max_delay_s: float | None = None,
    ) -> None:
        import medlake.service.job_kinds  # noqa: F401  (registers the link job's kind)

        settings = workspace.settings.empi
        self.workspace = workspace
        self.release = release
        self.delay_s = settings.live_link_delay_seconds if delay_s is None else delay_s
        self.max_delay_s = (settings.live_link_max_delay_seconds
                            if max_delay_s is None else max_delay_s)  # fmt: skip
        self._cond = threading.Condition()
        self._job: str | None = None  # the job requests join (queued, not started)
        self._held = False  # not yet handed over
        self._first = self._last = 0.0
        self._closed = False
        self._thread: threading.Thread | None = None
        self.requested = 0  # requests seen, for status and tests

    def request(self, principal: Principal, project_id: str | None = None) -> str:
        """Ask for a link of what is loaded now; the id of the job that will do it."""
        with self._cond:
            self.requested += 1
            now = time.monotonic()
            if self._job is not None and self._still_queued(self._job):
                if self._held:
                    self._last = now  # the quiet period starts again
                    self._cond.notify_all()
                return self._job
            job = job_service.submit_job(self.workspace, KIND, {"live": True},
                                         principal=principal, project_id=project_id)  # fmt: skip
            self._job, self._held = job["job_id"], True
            self._first = self._last = now
            # Once closed, it stays queued in the job table for the next server.
            if not self._closed and self.release is not None:
                self._start_timer()
                self._cond.notify_all()
            return self._job

    def _still_queued(self, job_id: str) -> bool:
        # Not started (its link would not see what was loaded since) nor cancelled.
        with pooled_lake(self.workspace) as engine:  # a request of a busy server: lent
            rows = job_service.job_rows(engine, job_id)
        return bool(rows) and rows[0]["status"] == job_service.QUEUED

    def _due_at(self) -> float:
        return min(self._last + self.delay_s, self._first + self.max_delay_s)

    def _take(self) -> str | None:
        """The waiting job, now handed over (called holding the condition)."""
        if self._job is None or not self._held:
            return None
        self._held = False
        if self.release is not None:
            self.release(self._job)
        return self._job

    def due(self) -> str | None:
        """The waiting job once its quiet period has passed (handed over: run it), else
        None; for a caller that runs the job itself."""
        with self._cond:
            if self._held and time.monotonic() >= self._due_at():
                return self._take()
            return None

    def _start_timer(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._wait, name="medlake-live-link",
                                            daemon=True)  # fmt: skip
            self._thread.start()

    def _wait(self) -> None:
        with self._cond:
            while not self._closed:
                if not self._held:
                    self._cond.wait()
                    continue
                left = self._due_at() - time.monotonic()
                if left > 0:
                    self._cond.wait(left)
                    continue
                self._take()

    def release_now(self) -> str | None:
        """Hand the waiting job over now, as if the quiet period had passed; its id."""
        with self._cond:
            return self._take()

    def close(self, *, run_now: bool = True) -> str | None:
        """Stop the timer. A waiting job is handed over now (``run_now``: a listener
        stopping runs it; its id is returned) or stays queued in the job table (a server
        stopping: its next start runs it)."""
        with self._cond:
            self._closed = True
            job = self._take() if run_now else None
            if not run_now:
                self._job = None  # later requests store their own jobs
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(5)
        return job


__all__ = ["KIND", "LiveLinks", "run_link_job"]

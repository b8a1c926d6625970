"""``medlake listen``: receive HL7 v2 over MLLP, land each message, acknowledge, ingest.

Each message is landed unchanged with :func:`medlake.ingest.landing.land_bytes` (which
returns only once the file is fsync'd) before the listener answers ``AA``; a landing
failure answers ``AR`` so the sender keeps the message and retries. Landed messages are
listed in a per-source journal (``spool/listen-<source>.pending``, one landed path a
line) and every ``ingest_every`` seconds the listener bundles the pending messages into
one landed batch file (messages joined as an HL7 file) and hands it to the ingest
service, so the lake gets batch-sized ingests instead of one per message. A flush leaves
the person-order rewrite to maintenance (``medlake serve``'s, ``medlake schema reorder``)
and queues the EMPI link after ingest as one ``empi_link`` job, which the listener's
loop runs once flushes have loaded nothing new for ``[empi] live_link_delay_seconds``
(:mod:`medlake.service.live_link`; checked after each flush), and before it stops.

The ingest hook: ``ingest`` (a callable taking the bundle's path), else
``medlake.service.ingest.ingest_paths`` when that service exists (called as
``ingest_paths(workspace, [bundle], source_system=..., format="hl7v2")``). Without
either, pending messages stay in the journal for ``medlake ingest`` to pick up, and the
listener says so in its log.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

from medlake.access import Permission
from medlake.config import Workspace, open_workspace
from medlake.errors import MedlakeError
from medlake.ingest.landing import land_bytes
from medlake.ingest.mllp import AckResult, MllpServer
from medlake.log import get_logger
from medlake.service.jobs import JobRunner
from medlake.service.live_link import LiveLinks
from medlake.service.mirror import landing_store
from medlake.service.policy import authorized, require

log = get_logger(__name__)

IngestHook = Callable[[Path], object]


class ListenerService:
    """Lands messages for one source system and ingests them in periodic bundles."""

    def __init__(
        self,
        workspace: Workspace,
        source_system: str,
        ingest: IngestHook | None = None,
        *,
        links: LiveLinks | None = None,
    ) -> None:
        self.workspace = workspace
        self.source_system = source_system
        self.landing_dir = workspace.landing_dir
        # mirrored when a mirror root is set; refuses while the workspace is frozen
        self.store = landing_store(workspace)
        # The journal is the listener's own state, not landed data: landing/ is written
        # only by the landing function, so the journal lives in the workspace's spool/.
        spool = workspace.root / "spool"
        spool.mkdir(exist_ok=True)
        self.journal = spool / f"listen-{source_system}.pending"
        self._lock = threading.Lock()
        self.links = links  # the EMPI link after a flush, as one background job
        self._ingest = ingest if ingest is not None else self._default_ingest()
        self.landed = 0

    def _default_ingest(self) -> IngestHook | None:
        try:
            module = importlib.import_module("medlake.service.ingest")
        except ImportError:
            return None
        ingest_paths = getattr(module, "ingest_paths", None)
        if ingest_paths is None:
            return None

        def hook(bundle: Path) -> object:
            # A flush runs every few seconds: a table's person-order rewrite (minutes on
            # a large lake) is left to maintenance (serve's, or 'medlake schema reorder').
            # Without LiveLinks the EMPI link after ingest runs inline, as for every run.
            later = self._link_later if self.links is not None else None
            return ingest_paths(self.workspace, [bundle], source_system=self.source_system,
                                format="hl7v2", person_order=False,
                                link_later=later)  # fmt: skip

        return hook

    def _link_later(self) -> str:
        """Queue the EMPI link after a flush (or join the job still waiting); its job id."""
        assert self.links is not None
        principal = require(self.workspace, Permission.INGEST)  # the acting user, resolved
        return self.links.request(principal)

    def run_link(self, *, stopping: bool = False) -> str | None:
        """Run the EMPI link job the flushes queued once it is due (``stopping``: now,
        whatever the quiet period), in this thread; its id, or None."""
        if self.links is None:
            return None
        job = self.links.close(run_now=True) if stopping else self.links.due()
        if job is not None:
            # Here, not in a worker thread: the listener's lake opens stay one at a time
            # (DuckDB refuses to attach a file again while another thread lets it go).
            JobRunner(self.workspace).run_here(job)
        return job

    def on_message(self, data: bytes) -> AckResult:
        """Land ``data`` durably and journal it durably; ``AR`` when either failed.

        The journal line is fsync'd before the ``AA`` too: a crash after the answer must
        not leave a landed message that no journal lists (it would never be ingested).
        """
        try:
            landed = land_bytes(data, self.store)
            with self._lock, self.journal.open("a", encoding="utf-8") as journal:
                journal.write(f"{landed.path}\n")
                journal.flush()
                os.fsync(journal.fileno())
        except OSError as error:
            return AckResult.reject(f"landing failed: {error}")
        except MedlakeError as error:  # e.g. the ransomware watch froze the workspace
            return AckResult.reject(error.message)
        self.landed += 1
        return AckResult.accept()

    def flush(self) -> Path | None:
        """Bundle the journal's messages into one landed file and ingest it; its path."""
        with self._lock:
            if not self.journal.exists():
                return None
            paths = [Path(p) for p in self.journal.read_text("utf-8").split("\n") if p]
            if not paths:
                return None
            if self._ingest is None:
                log.info("%d messages landed, waiting for 'medlake ingest'", len(paths))
                return None
            bundle = b"".join(_as_file_message(p.read_bytes()) for p in dict.fromkeys(paths))
            landed = land_bytes(bundle, self.store)
            self._ingest(landed.path)
            self.journal.unlink()
            return landed.path


def _as_file_message(data: bytes) -> bytes:
    """A message as it goes into a plain HL7 file: segments ending with ``\\r``, then ``\\n``."""
    data = data.strip(b"\r\n\t ")
    return data + b"\r\n"


async def serve(
    service: ListenerService,
    host: str,
    port: int,
    *,
    ingest_every: float = 30.0,
    ready: Callable[[int], None] | None = None,
    stop: asyncio.Event | None = None,
) -> None:
    """Run the MLLP server until ``stop`` is set (or SIGINT/SIGTERM), ingesting on a timer."""
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signum, stop.set)
    server = MllpServer(host, port, service.on_message)
    await server.start()
    if ready is not None:
        ready(server.bound_port)
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ingest_every)
            try:
                await asyncio.to_thread(service.flush)
            except Exception:
                log.exception("periodic ingest failed; messages stay pending")
            try:
                await asyncio.to_thread(service.run_link)
            except Exception:
                log.exception("EMPI link after the flushes failed; the next one links them")
    finally:
        await server.close()
        with contextlib.suppress(Exception):
            await asyncio.to_thread(service.flush)
        with contextlib.suppress(Exception):  # what the last flushes loaded is linked
            await asyncio.to_thread(service.run_link, stopping=True)


@authorized(Permission.INGEST)  # the periodic ingests run as the same user
def listen(
    workspace_dir: str | Path | None,
    host: str,
    port: int,
    source_system: str,
    *,
    ingest_every: float = 30.0,
    ready: Callable[[int], None] | None = None,
) -> ListenerService:
    """Listen on ``host:port`` until interrupted; return the service (for its counts)."""
    workspace = open_workspace(workspace_dir)
    # The EMPI link after the flushes: one job, run by the loop once flushes pause.
    links = LiveLinks(workspace) if workspace.settings.empi.link_after_ingest else None
    service = ListenerService(workspace, source_system, links=links)
    asyncio.run(serve(service, host, port, ingest_every=ingest_every, ready=ready))
    return service

"""``medlake listen``: receive HL7 v2 over MLLP, land each message, acknowledge, ingest.

Each message is landed unchanged with :func:`medlake.ingest.landing.land_bytes` (which
returns only once the file is fsync'd) before the listener answers ``AA``; a landing
failure answers ``AR`` so the sender keeps the message and retries. Landed messages are
listed in a per-source journal (``spool/listen-<source>.pending``, one landed path a
line) and every ``ingest_every`` seconds the listener bundles the pending messages into
one landed batch file (messages joined as an HL7 file) and hands it to the ingest
service, so the lake gets batch-sized ingests instead of one per message. A flush first
renames the journal to ``listen-<source>.flushing`` (messages arriving meanwhile start a
new journal, so their ``AA`` never waits for an ingest) and deletes it once the ingest
returned; a ``.flushing`` file left by a crash is ingested first, at the next start
(the listener's loop flushes once as it starts). A flush leaves the person-order rewrite
to maintenance (``medlake serve``'s, ``medlake schema reorder``) and queues the EMPI link
after ingest as one ``empi_link`` job, which the listener's loop runs once flushes have
loaded nothing new for ``[empi] live_link_delay_seconds``
(:mod:`medlake.service.live_link`; checked after each flush), and before it stops.

``medlake serve`` runs the same listener on its own event loop (:class:`ServedListener`,
``[listen] port`` or ``--mllp-port``): its flushes go through the same ingest service as
a FHIR Bundle POSTed to the server, on the lake the server holds, and its link job is
handed to the server's job runner.

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
import socket
import threading
from collections.abc import Callable
from pathlib import Path

from medlake.access import Permission
from medlake.access.context import acting_as
from medlake.config import Workspace, open_workspace
from medlake.durable import fsync_dir
from medlake.errors import EngineError, MedlakeError, UsageError
from medlake.ingest.hl7v2 import message_problems
from medlake.ingest.landing import land_bytes
from medlake.ingest.mllp import AckResult, MllpServer
from medlake.log import get_logger
from medlake.service.jobs import JobRunner
from medlake.service.live_link import LiveLinks
from medlake.service.mirror import landing_store
from medlake.service.policy import authorized, require
from medlake.service.workspace import open_lake

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
        self.spool = workspace.root / "spool"
        self.spool.mkdir(exist_ok=True)
        self.journal = self.spool / f"listen-{source_system}.pending"
        # The journal being ingested: renamed away so that new messages need not wait.
        self.in_flush = self.spool / f"listen-{source_system}.flushing"
        self._lock = threading.Lock()  # the journal's appends and its rename
        self._journal_fd: int | None = None  # held open between messages (an open costs)
        self._journal_size = 0  # its bytes in whole lines
        self._flushing = threading.Lock()  # one flush at a time
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
        whatever the quiet period), in this thread; its id, or None. Links that hand
        their job to a runner (a server's) run it there, not here."""
        if self.links is None or self.links.release is not None:
            return None
        job = self.links.close(run_now=True) if stopping else self.links.due()
        if job is not None:
            # Here, not in a worker thread: the listener's lake opens stay one at a time
            # (DuckDB refuses to attach a file again while another thread lets it go).
            JobRunner(self.workspace).run_here(job)
        return job

    def on_message(self, data: bytes) -> AckResult:
        """Land ``data`` durably and journal it durably; ``AR`` when either failed, ``AE``
        with the reason when the ingest will quarantine it (whole or some results).

        The journal line is fsync'd before the ``AA`` too: a crash after the answer must
        not leave a landed message that no journal lists (it would never be ingested).
        """
        try:
            landed = land_bytes(data, self.store)
            with self._lock:
                self._append(f"{landed.path}\n".encode())
        except OSError as error:
            return AckResult.reject(f"landing failed: {error}")
        except MedlakeError as error:  # e.g. the ransomware watch froze the workspace
            return AckResult.reject(error.message)
        self.landed += 1
        # Landed and journaled, so it reaches quarantine with the same reasons at ingest;
        # the sender learns now (AE: do not send it again as it is).
        problems = message_problems(data, self.source_system)
        if problems:
            return AckResult.error("; ".join(problems))
        return AckResult.accept()

    def flush(self) -> Path | None:
        """Bundle the journal's messages into one landed file and ingest it; its path.

        A journal a crash left mid-flush is ingested first (its bundle lands with the
        same content, so the ingest finds it loaded or loads what it had not)."""
        if self._ingest is None:
            if self.journal.exists() or self.in_flush.exists():
                log.info("messages landed, waiting for 'medlake ingest'")
            return None
        with self._flushing:
            bundle = self._ingest_listed() if self.in_flush.exists() else None
            with self._lock:
                self._close_journal()  # the next message opens a new one
                if not self.journal.exists():
                    return bundle
                os.replace(self.journal, self.in_flush)
            return self._ingest_listed() or bundle

    def _append(self, line: bytes) -> None:
        """Append ``line`` to the journal and fsync it (called holding the lock). On a
        failure the journal is cut back to its last whole line, so a half-written line
        can never run into the next message's."""
        if self._journal_fd is None:
            new = not self.journal.exists()
            flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC
            self._journal_fd = os.open(self.journal, flags, 0o644)
            self._journal_size = os.fstat(self._journal_fd).st_size
            if new:  # a new journal's name must survive a power cut too
                fsync_dir(self.spool)
        fd = self._journal_fd
        try:
            if os.write(fd, line) != len(line):
                raise OSError(f"short write to {self.journal}")
            os.fsync(fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, self._journal_size)
            self._close_journal()
            raise
        self._journal_size += len(line)

    def _close_journal(self) -> None:
        """Let the journal file go (called holding the lock); its lines are fsync'd."""
        if self._journal_fd is not None:
            os.close(self._journal_fd)
            self._journal_fd = None

    def close(self) -> None:
        """Let the journal file go (what it lists stays pending for the next start)."""
        with self._lock:
            self._close_journal()

    def _ingest_listed(self) -> Path | None:
        """Ingest the messages :attr:`in_flush` lists as one bundle, then delete it."""
        assert self._ingest is not None
        listed = self.in_flush.read_text("utf-8").split("\n")
        paths = [Path(p) for p in dict.fromkeys(listed) if p]
        if not paths:
            self.in_flush.unlink()
            return None
        bundle = b"".join(_as_file_message(p.read_bytes()) for p in paths)
        landed = land_bytes(bundle, self.store)
        self._ingest(landed.path)
        self.in_flush.unlink()
        return landed.path

    def pending(self) -> int:
        """Messages landed and not yet ingested (lines of the journals)."""
        with self._lock:
            files = [f for f in (self.in_flush, self.journal) if f.is_file()]
            return sum(1 for f in files for line in f.read_text("utf-8").split("\n") if line)


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
    sock: socket.socket | None = None,
    handle_signals: bool = True,
) -> None:
    """Run the MLLP server until ``stop`` is set (or SIGINT/SIGTERM with
    ``handle_signals``), ingesting what a previous run left at once, then on a timer.

    ``sock``: a socket already bound (``host``/``port`` are then only for the log).
    """
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    if handle_signals:
        for signum in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signum, stop.set)
    server = MllpServer(host, port, service.on_message, sock=sock)
    await server.start()
    if ready is not None:
        ready(server.bound_port)
    try:
        while not stop.is_set():
            try:  # the first time round: what a stopped or killed run left pending
                await asyncio.to_thread(service.flush)
            except Exception:
                log.exception("periodic ingest failed; messages stay pending")
            try:
                await asyncio.to_thread(service.run_link)
            except Exception:
                log.exception("EMPI link after the flushes failed; the next one links them")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=ingest_every)
    finally:
        await server.close()
        try:  # a message acknowledged is ingested now, or by the next start
            await asyncio.to_thread(service.flush)
        except Exception:
            log.exception("ingest at stop failed; the messages stay pending for the next start")
        with contextlib.suppress(Exception):  # what the last flushes loaded is linked
            await asyncio.to_thread(service.run_link, stopping=True)
        service.close()


def bind_listener(host: str, port: int) -> socket.socket:
    """A TCP socket bound to ``host:port`` for the listener; a one-line error if taken."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as asyncio's servers do
    try:
        sock.bind((host, port))
    except OSError as error:
        sock.close()
        raise UsageError(f"MLLP port {port} on {host} cannot be used ({error.strerror}): is "
                         "another listener running? choose another port") from error  # fmt: skip
    return sock


class ServedListener:
    """The listener ``medlake serve`` runs beside the API, on the server's event loop.

    It acts as the user who started the server (checked for ``ingest`` at start). Its
    flushes call the same ingest service as a FHIR Bundle POSTed to the server, on the
    lake the server holds (no second process opens it); ``links`` is the server's
    :class:`LiveLinks`, so the EMPI link after the flushes runs as one job of the
    server's runner. Stopping answers the messages in flight and ingests what is
    pending; what a failed or killed stop leaves stays in the spool for the next start.
    """

    def __init__(
        self,
        workspace: Workspace,
        links: LiveLinks | None,
        *,
        host: str,
        port: int,
        source_system: str,
        ingest_every: float,
        sock: socket.socket | None = None,
    ) -> None:
        self.workspace = workspace
        self.links = links
        self.host, self.port, self.sock = host, port, sock
        self.source_system = source_system
        self.ingest_every = ingest_every
        self.service: ListenerService | None = None
        self.bound_port: int | None = None
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Check the user, bind (``UsageError`` if the port is taken) and start."""
        principal = await asyncio.to_thread(require, self.workspace, Permission.INGEST)
        sock = self.sock or bind_listener(self.host, self.port)
        with acting_as(principal):  # the task's context: its flushes act as this user
            links = self.links if self.workspace.settings.empi.link_after_ingest else None
            self.service = ListenerService(self.workspace, self.source_system, links=links)
            bound: asyncio.Future[int] = asyncio.get_running_loop().create_future()
            running = serve(self.service, self.host, self.port, ingest_every=self.ingest_every,
                            ready=bound.set_result, stop=self._stop, sock=sock,
                            handle_signals=False)  # fmt: skip
            self._task = asyncio.create_task(running, name="medlake-mllp-listener")
        await asyncio.wait([bound, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not bound.done():  # it failed before listening
            await self._task
        self.bound_port = bound.result()
        log.info("MLLP listener for %s on %s:%d, ingesting every %g s", self.source_system,
                 self.host, self.bound_port, self.ingest_every)  # fmt: skip

    async def stop(self) -> None:
        """Stop accepting, answer the messages in flight, ingest what is pending."""
        if self._task is None:
            return
        self._stop.set()
        await self._task
        self._task = None


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


def refuse_if_lake_held(workspace: Workspace) -> None:
    """``UsageError`` pointing to the server's listener when another process (a running
    ``medlake serve``) holds the lake: a standalone listener would answer ``AA`` while
    none of its flushes could ever ingest."""
    try:
        with open_lake(workspace):
            pass
    except EngineError as error:
        if "lock" not in error.message.lower():
            raise
        raise UsageError(LAKE_HELD) from error


#: What ``medlake listen`` says when a server holds the lake.
LAKE_HELD = ("another process holds the lake (a running 'medlake serve'): run the listener "
             "in the server instead: 'medlake serve --mllp-port P', or the setting "
             "listen.port in medlake.toml")  # fmt: skip

"""Open engines lent to a server's many short reads, instead of opening the lake per call.

Opening the lake costs tens of milliseconds (a DuckDB connection, Ibis's set-up
statements, the schema-version check): more than the whole of a patient 360 read. While
a server runs (:func:`serving`, held by ``medlake serve``'s lifespan), :func:`pooled_lake`
lends an engine from a small pool: each concurrent request gets an engine (a DuckDB
connection) of its own, so requests never share a connection nor queue on a lock, and an
engine goes back to the pool when the request ends. Outside :func:`serving` it simply
opens and closes the lake, so a command-line call keeps the file free for other processes.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from medlake.config import Workspace
from medlake.engine import Engine
from medlake.service.workspace import open_lake

#: Idle engines kept per workspace; more concurrent requests than this still get their
#: own engine, closed when they end. A patient 360 call holds two while serving (its
#: reads, and its audited read's commit beside them), and the server runs up to 40
#: requests at once (AnyIO's worker threads): at 48, engines past the 48th were closed
#: and opened again on every call under load (5 % of the server's CPU, measured).
MAX_IDLE = 128

#: Engines opened ahead in the background when a server starts: opening one costs 8–12 ms
#: of CPU, so a burst of requests on a fresh server (32 cohort counts at once) would
#: otherwise pay for its engines while the requests wait. A server's worker threads run
#: up to 40 requests at once; most bursts fit in 32.
WARM_ENGINES = 32


class _Pool:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
        self._idle: list[Engine] = []
        self._lock = threading.Lock()
        self.closed = False

    def take(self) -> Engine:
        with self._lock:
            if self._idle:
                return self._idle.pop()
        return open_lake(self.workspace)

    def give_back(self, engine: Engine) -> None:
        with self._lock:
            if not self.closed and len(self._idle) < MAX_IDLE:
                self._idle.append(engine)
                return
        engine.close()

    def warm(self, engines: int) -> None:
        """Open engines until ``engines`` are idle (or the pool closes)."""
        while True:
            with self._lock:
                if self.closed or len(self._idle) >= engines:
                    return
            self.give_back(open_lake(self.workspace))

    def close(self) -> None:
        with self._lock:
            self.closed = True
            idle, self._idle = self._idle, []
        for engine in idle:
            engine.close()


_pools: dict[Path, _Pool] = {}
_pools_lock = threading.Lock()


@contextmanager
def serving(workspace: Workspace) -> Iterator[Engine]:
    """Hold the lake open and lend pooled engines for it until the block ends.

    Yields the held engine (one connection kept open keeps DuckDB's database instance
    open, so each further connection is a cheap cursor on it). A background thread opens
    :data:`WARM_ENGINES` engines ahead, so the first burst of requests does not pay for
    them.
    """
    with open_lake(workspace) as held:
        pool = _Pool(workspace)
        with _pools_lock:
            previous = _pools.get(workspace.root)
            _pools[workspace.root] = pool
        warming = threading.Thread(
            target=pool.warm, args=(WARM_ENGINES,), name="medlake-lake-pool-warm", daemon=True
        )
        warming.start()
        try:
            yield held
        finally:
            with _pools_lock:
                if previous is None:
                    _pools.pop(workspace.root, None)
                else:
                    _pools[workspace.root] = previous
            pool.close()
            # An engine the warming thread opened after close() is closed by give_back.
            warming.join()


def is_serving(workspace: Workspace) -> bool:
    """Whether :func:`serving` holds this workspace's lake (engines are lent, not opened)."""
    with _pools_lock:
        return workspace.root in _pools


@contextmanager
def pooled_lake(workspace: Workspace) -> Iterator[Engine]:
    """An open engine on the workspace's lake for the block: lent from the pool while
    :func:`serving`, else opened and closed."""
    with _pools_lock:
        pool = _pools.get(workspace.root)
    if pool is None:
        with open_lake(workspace) as engine:
            yield engine
        return
    engine = pool.take()
    try:
        yield engine
    finally:
        # Transactions end with their blocks, so the engine is clean even after an error.
        pool.give_back(engine)

"""Background threads that live as long as ``medlake serve``: one lifespan wrapper.

The ransomware watch, job retention and the person-order maintenance each run as a
daemon thread while the server does. :func:`around_lifespan` starts one after the
application's own start-up (job recovery first) and stops it after its shutdown.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Protocol, Self


class Stoppable(Protocol):
    def stop(self) -> None: ...


class ServingThread:
    """A daemon thread that runs :meth:`_run` until :meth:`stop` sets ``stopping``;
    ``_run`` waits on ``stopping`` between rounds so that stop ends it within one."""

    def __init__(self, name: str, *, join_timeout_s: float) -> None:
        self.stopping = threading.Event()
        self.join_timeout_s = join_timeout_s
        self.thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Self:
        self.thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(timeout=self.join_timeout_s)

    def _run(self) -> None:
        raise NotImplementedError


def around_lifespan(
    lifespan: Callable[[Any], Any],
    start: Callable[[], Stoppable],
    *,
    state_name: str | None = None,
) -> Any:
    """Wrap an ASGI lifespan: ``start()`` once the application has started, ``stop()``
    on what it returned once the application has stopped; kept as ``app.state.<state_name>``
    when named (for tests and status pages)."""

    @contextlib.asynccontextmanager
    async def wrapped(app: Any) -> AsyncIterator[Any]:
        async with lifespan(app) as state:
            running = start()
            if state_name is not None:
                setattr(app.state, state_name, running)
            try:
                yield state
            finally:
                running.stop()

    return wrapped

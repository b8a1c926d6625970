"""Read ahead: a reader parses the next chunks in a thread while the writer loads this one.

Parsing is mostly Python (it holds the GIL); loading is mostly DuckDB and Arrow (they
release it), so on two cores the two overlap. The queue holds at most ``depth`` chunks,
which bounds memory. A reader error is raised in the consumer, in order, after the
chunks read before it; when the consumer stops early (the writer failed), the thread is
told to stop and the reader's generator is closed in its own thread.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")

_DONE = object()
_POLL_SECONDS = 0.1


def prefetch(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """Yield ``items`` as produced by a background thread, ``depth`` at most in flight."""
    buffer: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        iterator = iter(items)
        try:
            for item in iterator:
                if not put(item):
                    break
            else:
                put(_DONE)
        except BaseException as error:  # handed to the consumer, raised there
            put(error)
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name="medlake-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            item = buffer.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item  # type: ignore[misc]
    finally:
        stop.set()
        thread.join()

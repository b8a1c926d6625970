"""Read ahead: a reader parses the next chunks in a thread while the writer loads this one.

Parsing is mostly Python (it holds the GIL); loading is mostly DuckDB and Arrow (they
release it), so on two cores the two overlap. The queue holds at most ``depth`` chunks,
which bounds memory. A reader error is raised in the consumer, in order, after the
chunks read before it; when the consumer stops early (the writer failed), the thread is
told to stop and the reader's generator is closed in its own thread.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import os
import pickle
import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

from medlake.errors import MedlakeError
from medlake.ingest.staging import SourceContext

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


# ---------------------------------------------------------------------- in a process
#
# A thread only overlaps a reader with the writer where the writer releases the GIL
# (DuckDB, Arrow); FHIR, HL7 and CSV readers are Python and so are parts of the writer,
# so on two cores the thread pipeline is mostly serial. For large files the reader runs
# in its own process instead: the same reader code, its chunks pickled back (Arrow tables
# pickle as buffers) through a queue of ``depth`` chunks, so the lake gets exactly the
# chunks, in the order, that reading in-process gives. The child is forked (Linux): it
# starts at once with the readers already imported, and does not run the caller's main
# module again as spawn and forkserver children do. It only parses (Python, orjson,
# Arrow) and never touches the caller's DuckDB connection or its threads.


def _process_context() -> multiprocessing.context.BaseContext:
    methods = multiprocessing.get_all_start_methods()
    return multiprocessing.get_context("fork" if "fork" in methods else "spawn")


def _read_in_child(format: str, context: SourceContext, out: multiprocessing.Queue) -> None:
    from medlake.ingest.formats import reader_for

    try:
        for chunk in reader_for(format).read(context):
            out.put(chunk)
        out.put(_END)
    except BaseException as error:  # raised in the parent, after the chunks before it
        try:
            pickle.dumps(error)
        except Exception:
            error = MedlakeError(f"{type(error).__name__}: {error}")
        out.put(error)


_END = "__medlake_read_ahead_end__"


def prefetch_in_process(format: str, context: SourceContext, depth: int = 2) -> Iterator[object]:
    """The chunks of ``reader_for(format).read(context)``, read in a child process."""
    mp = _process_context()
    out: multiprocessing.Queue = mp.Queue(maxsize=depth)
    child = mp.Process(target=_read_in_child, args=(format, context, out),
                       name="medlake-read-ahead", daemon=True)  # fmt: skip
    child.start()
    finished = False
    try:
        while True:
            item = _next_from(out, child, context)
            if isinstance(item, str) and item == _END:
                finished = True
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        if finished:
            child.join(timeout=10)
        if child.is_alive():  # the consumer stopped early (the writer failed)
            child.terminate()
        child.join()
        out.close()


# ---------------------------------------------------------------------- in processes
#
# On two cores the FHIR reader (Python) is the longer side of a large file's pipeline.
# A reader that can say where its chunks lie (FhirReader.chunk_plan: byte ranges found by
# counting lines, no parsing) has them parsed by several children at once, each taking
# every n-th chunk; the chunks come back in file order, so the writer sees exactly what
# one reader would give.


def _read_ranges_in_child(format: str, context: SourceContext,
                          ranges: list[tuple[int, int, int]], out: multiprocessing.Queue,
                          parent: int) -> None:  # fmt: skip
    from medlake.ingest.formats import reader_for

    try:
        reader = reader_for(format)
        for start, end, first_line in ranges:
            chunk = reader.read_range(context, start, end, first_line)  # type: ignore[attr-defined]
            _put(out, chunk, parent)
        _put(out, _END, parent)
    except BaseException as error:  # raised in the parent, after the chunks before it
        try:
            pickle.dumps(error)
        except Exception:
            error = MedlakeError(f"{type(error).__name__}: {error}")
        _put(out, error, parent)


def _put(out: multiprocessing.Queue, item: object, parent: int) -> None:
    """``out.put(item)``, but give up once the parent is gone (killed: nobody reads)."""
    while True:
        try:
            out.put(item, timeout=_POLL_SECONDS * 10)
            return
        except queue.Full:
            if os.getppid() != parent:
                os._exit(1)


def prefetch_ranges_in_processes(format: str, context: SourceContext,
                                 plan: list[tuple[int, int, int]], workers: int = 2,
                                 depth: int = 2) -> Iterator[object]:  # fmt: skip
    """The chunks of ``plan`` (see above), parsed by ``workers`` children, in order."""
    mp = _process_context()
    workers = max(1, min(workers, len(plan)))
    queues: list[multiprocessing.Queue] = [mp.Queue(maxsize=depth) for _ in range(workers)]
    children = [
        mp.Process(target=_read_ranges_in_child,
                   args=(format, context, plan[k::workers], q, os.getpid()),
                   name=f"medlake-read-ahead-{k}", daemon=True)
        for k, q in enumerate(queues)
    ]
    for child in children:
        child.start()
    finished = False
    try:
        for index in range(len(plan) + workers):
            k = index % workers
            item = _next_from(queues[k], children[k], context)
            if isinstance(item, str) and item == _END:
                if index < len(plan):
                    raise MedlakeError(f"{context.original_name}: a reading process ended early")
                continue
            if isinstance(item, BaseException):
                raise item
            yield item
        finished = True
    finally:
        for child in children:
            if finished:
                child.join(timeout=10)
            if child.is_alive():  # the consumer stopped early (the writer failed)
                child.terminate()
            child.join()
        for q in queues:
            q.close()


def _next_from(out: multiprocessing.Queue, child: multiprocessing.process.BaseProcess,
               context: SourceContext) -> object:  # fmt: skip
    while True:
        try:
            return out.get(timeout=_POLL_SECONDS * 10)
        except queue.Empty:
            if not child.is_alive() and out.empty():
                raise MedlakeError(
                    f"{context.original_name}: the reading process ended unexpectedly "
                    f"(exit code {child.exitcode})"
                ) from None
